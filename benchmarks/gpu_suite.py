"""The accelerator check (issue 20, target 5): one call, at most ~8 minutes, one JSON.

Runs, each timed apart and each skipped (with the reason) when the time budget is spent:
1. the default run (`divjax run` on its embedded preset), wall time and final RMSE;
2. `cifar10-paper` for a fixed slice (60 nodes, 128 local steps of batch 8, the paper's network)
   of `--cifar-s` simulated seconds: training samples per second inside the engine and the
   extrapolated wall time of the paper's 800 s (needs a CIFAR-10 copy: `--data-dir`, e.g. a
   git-ignored `device_data/` carried to the device);
3. 4,096 MovieLens-sized matrix-factorisation nodes (`movielens-synthetic`) for 2 simulated s;
4. a seed sweep: 8 seeds of `movielens-small` as one vmapped program, against one seed.
Writes `OUT/gpu_suite.json` with the device, JAX version and commit. Never used by the tests.

    bash benchmarks/gpu.sh                      # OUT=$OUT or benchmarks/results
    python benchmarks/gpu_suite.py --quick      # tiny sizes: checks the script on a CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import jax
import numpy as np
from bench_common import git_commit

from divjax.frontends import presets
from divjax.config import default_hparams
from divjax.engine.sim import check_state, make_engine, make_run
from divjax.engine.xla_options import jit as divjax_jit


def timed_run(cfg) -> dict:
    """Compile, run once, report wall times, counters and the final primary metric."""
    engine = make_engine(cfg)
    hp = default_hparams(engine.cfg)
    run = divjax_jit(make_run(engine.cfg, task=engine.task, hp=hp))
    t0 = time.perf_counter()
    compiled = run.lower(jax.random.key(0), hp).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, m = compiled(jax.random.key(0), hp)
    jax.block_until_ready(m)
    wall = time.perf_counter() - t0
    check_state(state, engine.cfg)
    p = engine.task.primary
    samples = float(np.sum(np.asarray(state.iterations))) * cfg.local_steps * cfg.batch_size
    return {"compile_s": compile_s, "run_s": wall, "simulated_s": cfg.duration_s,
            "sim_per_wall": cfg.duration_s / wall, "training_samples": samples,
            "samples_per_s": samples / wall, f"final_{p}_mean": float(m[f"{p}_mean"][-1]),
            "n_nodes": cfg.n_nodes, "model_params": int(engine.layout.D)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--data-dir", default="", help="CIFAR-10 copy for the cifar10-paper slice")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting new steps")
    ap.add_argument("--cifar-s", type=float, default=10.0, help="simulated s of cifar10-paper")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks the script)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out: dict = {"date": str(date.today()), "device": jax.devices()[0].device_kind,
                 "backend": jax.default_backend(), "devices": jax.device_count(),
                 "jax": jax.__version__, "platform": platform.platform(),
                 "commit": git_commit(),
                 "quick": args.quick, "steps": {}}

    default = presets.get_preset(presets.DEFAULT_PRESET)
    small = presets.get_preset("movielens-small")
    steps = {
        "default_run": lambda: timed_run(default.replace(duration_s=2.0, eval_every_s=1.0)
                                         if args.quick else default),
        "cifar10_paper_slice": lambda: cifar_slice(args),
        "mf_4096_nodes": lambda: timed_run(small.replace(
            task="movielens-synthetic", n_nodes=64 if args.quick else 4096, n_stragglers=0,
            duration_s=1.0 if args.quick else 2.0, eval_every_s=1.0, local_steps=4,
            batch_size=32, tick_s=0.1, compute_s=1.0, n_fragments=4, fanout=3,
            eval_chunk=256)),
        "seed_sweep_8": lambda: seed_sweep(small.replace(duration_s=2.0 if args.quick
                                                          else 10.0), 8),
    }
    for name, step in steps.items():
        left = args.budget_s - (time.perf_counter() - start)
        if left <= 0:
            out["steps"][name] = {"skipped": "time budget spent"}
            continue
        try:
            out["steps"][name] = step()
        except Exception as e:  # one failing step must not lose the others' figures
            out["steps"][name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {json.dumps(out['steps'][name])}", flush=True)
    out["total_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_suite.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return out


def cifar_slice(args) -> dict:
    if not args.data_dir and not args.quick:
        return {"skipped": "no CIFAR-10 copy: pass --data-dir (e.g. device_data/ carried along)"}
    cfg = presets.get_preset("cifar10-paper").replace(data_dir=args.data_dir,
                                                      duration_s=args.cifar_s,
                                                      eval_every_s=args.cifar_s)
    if args.quick:
        cfg = cfg.replace(task="cifar10-quick" if args.data_dir else "synthetic", n_nodes=8,
                          n_stragglers=1, local_steps=2, compute_s=1.0, tick_s=0.5,
                          duration_s=2.0, eval_every_s=2.0)
    r = timed_run(cfg)
    paper = presets.get_preset("cifar10-paper")
    total = paper.n_nodes * paper.duration_s / paper.compute_s * paper.local_steps \
        * paper.batch_size
    r["paper_training_samples"] = total
    r["paper_extrapolated_h"] = total / r["samples_per_s"] / 3600
    return r


def seed_sweep(cfg, seeds: int) -> dict:
    engine = make_engine(cfg)
    hp = default_hparams(engine.cfg)
    run = make_run(engine.cfg, task=engine.task, hp=hp)
    one = divjax_jit(run)
    many = divjax_jit(jax.vmap(run, (0, None)))
    keys = jax.random.split(jax.random.key(0), seeds)
    times = {}
    for name, fn, arg in (("one_seed", one, keys[0]), ("sweep", many, keys)):
        jax.block_until_ready(fn(arg, hp))   # compile + warm
        t0 = time.perf_counter()
        jax.block_until_ready(fn(arg, hp))
        times[name] = time.perf_counter() - t0
    return {"seeds": seeds, "one_seed_s": times["one_seed"], "sweep_s": times["sweep"],
            "sweep_over_seeds_x_one": times["sweep"] / (seeds * times["one_seed"])}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
