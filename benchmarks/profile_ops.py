"""Where a steady-state simulated second of a preset goes, op by op (XLA's own per-op times).

Runs the preset's eval intervals under `jax.profiler` (after two warm-up intervals), reads the
Perfetto trace and sums, per XLA op, its time per simulated second and its calls per simulated
second: the calls tell the per-step ops (the local steps of every finishing node), the
per-busy-tick ops (gathers, averaging, finiteness checks, message scatters) and the per-tick
ones apart. Op times nest (a while loop's time includes its body's), so they do not add up to
the wall time; the wall time per simulated second is printed beside them.

    python benchmarks/profile_ops.py [--preset movielens-paper] [--algorithm divshare]
        [--intervals 2] [--interval-s 1] [--data-dir DIR] [--top 30] [--out benchmarks/results]
    DIVJAX_XLA_DEFAULTS=1 python benchmarks/profile_ops.py     # with XLA's default options
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import jax
from bench_common import git_commit

from divjax.frontends import presets
from divjax.config import default_hparams
from divjax.engine.sim import make_engine
from divjax.engine.xla_options import compiler_options
from divjax.engine.xla_options import jit as divjax_jit

RUNTIME_EVENTS = ("ThunkExecutor", "$")   # the executor's and Python's own spans, not ops


def op_times(trace_dir: Path) -> tuple[collections.Counter, collections.Counter]:
    """(microseconds, calls) per op name in the newest Perfetto trace under `trace_dir`."""
    path = sorted(trace_dir.glob("**/*.trace.json.gz"))[-1]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(RUNTIME_EVENTS):
            total[e["name"]] += e.get("dur", 0)
            calls[e["name"]] += 1
    return total, calls


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="movielens-paper")
    ap.add_argument("--algorithm", default="divshare")
    ap.add_argument("--intervals", type=int, default=2, help="eval intervals profiled")
    ap.add_argument("--interval-s", type=float, default=1.0, help="simulated s per interval")
    ap.add_argument("--data-dir", default="", help="folder with the data (CIFAR-10: needed)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)

    cfg = presets.get_preset(args.preset).replace(
        data_dir=args.data_dir, algorithm=args.algorithm, eval_every_s=args.interval_s,
        duration_s=args.interval_s * (args.intervals + 2))
    engine = make_engine(cfg)
    hp = default_hparams(engine.cfg)
    advance = divjax_jit(engine.advance, donate_argnums=0)
    state = divjax_jit(engine.init)(jax.random.key(0), hp)
    for _ in range(2):                                  # compile, then one warm interval
        state, m = advance(state, hp)
    jax.block_until_ready(m)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        t0 = time.perf_counter()
        for _ in range(args.intervals):
            state, m = advance(state, hp)
        jax.block_until_ready(m)
        wall = (time.perf_counter() - t0) / (args.intervals * args.interval_s)
        jax.profiler.stop_trace()
        total, calls = op_times(Path(tmp))
    sim_s = args.intervals * args.interval_s
    ops = [{"op": name, "ms_per_sim_s": us / 1e3 / sim_s, "calls_per_sim_s": calls[name] / sim_s}
           for name, us in total.most_common(args.top)]
    out = {"date": str(date.today()), "device": jax.devices()[0].device_kind,
           "platform": platform.platform(), "jax": jax.__version__, "commit": git_commit(),
           "preset": args.preset, "algorithm": args.algorithm,
           "compiler_options": compiler_options(), "wall_s_per_sim_s": wall, "ops": ops}
    print(f"{args.preset} {args.algorithm}: {wall:.3f} wall s per simulated s (profiled)")
    print("| op | ms per sim s | calls per sim s |\n|---|---:|---:|")
    for r in ops:
        print(f"| {r['op']} | {r['ms_per_sim_s']:.1f} | {r['calls_per_sim_s']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    defaults = "" if compiler_options() else "-xla-defaults"   # DIVJAX_XLA_DEFAULTS=1
    path = args.out / (f"profile_ops-{args.preset}-{args.algorithm}-{jax.default_backend()}"
                       f"{defaults}-{date.today()}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
