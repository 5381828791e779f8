"""What each network feature costs: the same run with and without it, in one process.

For every algorithm listed, the embedded MovieLens default (60 nodes, 7 stragglers) runs
(a) as it is and (b) with each feature turned on; the table gives the wall time of the jitted
run after compilation (best of `--repeats`) and the ratio to (a). Features:
- regions: 3 latency regions, 40 ms between them (`--latency-regions 3 --inter-region-ms 40`);
- latency file: the same matrix read from an n x n CSV (every node its own region);
- loss 10%: `--loss-rate 0.1` (DivShare and Swift);
- compute spread 0.5: log-normal compute times (`--compute-spread 0.5`);
- compute jitter 0.3: every iteration's time drawn log-normal from the key (`--compute-jitter
  0.3`; DivShare, Swift, AD-PSGD);
- churn 10%: nodes offline 10% of the time, 1 s on average (`--churn-rate 0.1`; DivShare);
- download limits (testbed): the testbed's download bandwidths, 60 Mbit/s and the stragglers'
  10-13 (`--download-mbps 60 --straggler-download-mbps ...`; all but Epidemic): the FIFO table at init
  and fewer, later deliveries;
- download 1e9 Mbit/s: the download code path with links so fast that nothing queues (the
  run's bits are those of "none"): the cost of the machinery alone.
- trace: `--trace FILE`, a 60-node trace from `scripts/make_trace.py` (compute times 0.1-0.3
  s changing every simulated second with probability 0.3, 10% of changes offline; the links'
  bandwidths constant, 60 and 12 Mbit/s): the tables built from the file.
A feature an algorithm refuses (ConfigError) is skipped for it.
Loss, compute spread and jitter change what the nodes do (fewer arrivals, other iteration ends),
so their ratio is the cost of the feature together with the different run it describes.
Ratios are measured in one process, on one machine, one after another (these machines are
shared: compare ratios, not absolute times). For scale, the table also gives the machine's
float32 matmul rate measured in the same process.

    python benchmarks/network_features.py [--duration-s 10] [--algorithms divshare,adpsgd,swift]
        [--features "none,compute jitter 0.3"]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_common import git_commit

from divjax.config import PAPER_STRAGGLER_MBPS, ConfigError, default_hparams
from divjax.frontends.presets import get_preset
from divjax.engine.sim import make_run
from divjax.engine.xla_options import jit as divjax_jit


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_seconds(cfg, repeats: int) -> tuple[float, float]:
    """(compile + first run, best run) wall seconds of the jitted run."""
    run = make_run(cfg)
    hp = default_hparams(run.engine.cfg)
    fn = divjax_jit(run)
    first = _timed(lambda: jax.block_until_ready(fn(jax.random.key(0), hp)))
    best = min(_timed(lambda: jax.block_until_ready(fn(jax.random.key(0), hp)))
               for _ in range(repeats))
    return first, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--algorithms", default="divshare,adpsgd,swift")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--features", default="", help="comma-separated names (default: all)")
    ap.add_argument("--out", default=f"benchmarks/results/network_features-"
                                     f"{jax.default_backend()}-{time.strftime('%Y-%m-%d')}.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*download_mbps column is not used")
    base = get_preset("movielens-default").replace(duration_s=args.duration_s,
                                                   eval_every_s=args.duration_s)
    n = base.n_nodes
    region = np.arange(n) % 3
    matrix = np.where(region[:, None] == region[None, :], 0.0, 40.0)
    tmp = Path(tempfile.mkdtemp()) / "latency.csv"
    tmp.write_text("\n".join(",".join(f"{v:g}" for v in row) for row in matrix) + "\n")
    spec = importlib.util.spec_from_file_location(
        "make_trace", Path(__file__).resolve().parents[1] / "scripts" / "make_trace.py")
    make_trace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_trace)
    trace = Path(tmp.parent) / "trace.csv"
    trace.write_text(make_trace.make_trace(
        n=n, duration=args.duration_s, step=1.0, change=0.3, offline=0.1,
        compute=(0.1, 0.15, 0.2, 0.3), fast_mbps=base.fast_mbps,
        slow_mbps=base.straggler_mbps[0], stragglers=base.n_stragglers))
    features = {"none": {}, "regions": {"latency_regions": 3, "inter_region_ms": 40.0},
                "latency file": {"latency_file": str(tmp)}, "loss 10%": {"loss_rate": 0.1},
                "compute spread 0.5": {"compute_spread": 0.5},
                # the same, every finishing node in one gather padded to train_capacity (the
                # engine before the automatic iteration_chunk): what the default saves
                "compute spread 0.5, iteration chunk 0": {"compute_spread": 0.5,
                                                          "iteration_chunk": 0},
                "compute jitter 0.3": {"compute_jitter": 0.3},
                "churn 10%": {"churn_rate": 0.1, "churn_mean_s": 1.0},
                "download limits (testbed)": {"download_mbps": 60.0,
                                              "straggler_download_mbps": PAPER_STRAGGLER_MBPS},
                "download 1e9 Mbit/s": {"download_mbps": 1e9,
                                        "straggler_download_mbps": (1e9,)},
                "trace": {"trace_file": str(trace)}}
    if args.features:
        keep = ["none"] + [f.strip() for f in args.features.split(",")]
        features = {k: v for k, v in features.items() if k in keep}
    gflops = matmul_gflops()
    rows = []
    print(f"| algorithm | feature | compile+run s | run s | ratio to none |  (matmul "
          f"{gflops:.0f} GFLOP/s)")
    print("|---|---|---|---|---|")
    for algo in args.algorithms.split(","):
        ref = None
        for name, change in features.items():
            try:
                cfg = base.replace(algorithm=algo, **change)
            except ConfigError:
                continue   # a feature this algorithm does not model (yet)
            first, best = run_seconds(cfg, args.repeats)
            ref = best if name == "none" else ref
            rows.append({"algorithm": algo, "feature": name, "first_s": first, "run_s": best,
                         "ratio": best / ref})
            print(f"| {algo} | {name} | {first:.2f} | {best:.2f} | {best / ref:.2f}× |",
                  flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commit": git_commit(), "backend": jax.default_backend(),
                               "matmul_gflops": gflops, "duration_s": args.duration_s,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
