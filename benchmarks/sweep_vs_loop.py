"""Sweep vs loop: 4 learning rates x 4 seeds as one vmapped program against 16 runs in a row.

    python benchmarks/sweep_vs_loop.py                       # movielens-small (synthetic fallback)
    python benchmarks/sweep_vs_loop.py --preset synthetic-small --lrs 0.01,0.03,0.1,0.3

Both sides run exactly the same 16 simulations (same resolved config, keys
`jax.random.split(jax.random.key(0), S)`, same HParams) and both compile once:
- loop: `jax.jit(make_run(cfg))` compiled once (HParams are arguments), then called 16 times,
  each call synchronised with `block_until_ready`;
- sweep: `divjax.sweep.run_points`: `jax.jit(jax.vmap(run))` over the 16 (lr, seed) points, in
  one chunk unless memory asks for more.
Compile time is measured separately from run time (lower().compile()). Final metrics of the two
are compared (they should agree to float32 rounding; vmapped code may batch arithmetic
differently). Writes benchmarks/results/sweep_vs_loop-<device>-<date>.json.
"""

from __future__ import annotations

import os
import sys

if "--host-devices" in sys.argv:  # must be set before jax starts: CPU "devices" for sharding
    _n = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={_n}")

import argparse
import datetime
import json
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from divjax import presets
from divjax.algorithms import ALGORITHMS
from divjax.sim import make_run
from divjax.sweep import hparams_for, resolve_grid, run_points, stack_hparams
from divjax.tasks import make_task


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(preset: str, overrides: dict):
    cfg = presets.get_preset(preset).replace(**overrides)
    task = make_task(cfg)          # raises if the data is not there
    return cfg, task


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="movielens-small")
    ap.add_argument("--fallback", default="synthetic-small",
                    help="preset used when --preset cannot be built (e.g. no data)")
    ap.add_argument("--lrs", default="0.01,0.03,0.05,0.1")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--duration-s", type=float, default=None, help="override the preset")
    ap.add_argument("--chunk-size", type=int, default=0, help="0 = all points at once")
    ap.add_argument("--host-devices", type=int, default=0,
                    help="split the CPU into this many XLA devices; the sweep shards its points "
                         "over them (the loop stays on one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    overrides = {} if args.duration_s is None else {"duration_s": args.duration_s}
    preset, fallback_reason = args.preset, None
    try:
        cfg, task = build(preset, overrides)
    except Exception as e:  # noqa: BLE001  (missing data set or task: say so and fall back)
        fallback_reason = f"{type(e).__name__}: {e}"
        print(f"sweep_vs_loop: {preset} unavailable ({fallback_reason}); using {args.fallback}")
        preset = args.fallback
        cfg, task = build(preset, overrides)
    lrs = [float(x) for x in args.lrs.split(",")]
    S = args.seeds
    algo = ALGORITHMS[cfg.algorithm](cfg)
    hps = [hparams_for(cfg, {"lr": lr}) for lr in lrs]
    cfg = resolve_grid(cfg, hps, task, algo)
    run = make_run(cfg, task, algo)
    keys = jax.random.split(jax.random.key(0), S)
    P = len(lrs) * S
    print(f"sweep_vs_loop: {preset} ({cfg.algorithm} on {task.name}, n={cfg.n_nodes}, "
          f"{cfg.num_ticks} ticks): {len(lrs)} lr x {S} seeds = {P} runs on "
          f"{jax.devices()[0].device_kind}", flush=True)

    # --- loop: one compiled program, 16 calls
    single = jax.jit(run)
    t0 = time.perf_counter()
    compiled = single.lower(keys[0], hps[0]).compile()
    loop_compile = time.perf_counter() - t0
    loop_final, t0 = [], time.perf_counter()
    for h in hps:
        for s in range(S):
            _, m = jax.block_until_ready(compiled(keys[s], h))
            loop_final.append(float(m[f"{task.primary}_mean"][-1]))
    loop_run = time.perf_counter() - t0
    print(f"  loop : compile {loop_compile:.2f} s, 16 runs {loop_run:.2f} s", flush=True)

    # --- sweep: one vmapped program over the 16 points
    hp, axes = stack_hparams(hps)
    h_of = np.repeat(np.arange(len(lrs)), S)
    hp_p = jax.tree.map(lambda x, a: x if a is None else x[h_of], hp, axes,
                        is_leaf=lambda x: x is None)
    keys_p = keys[np.tile(np.arange(S), len(lrs))]
    metrics, timing = run_points(run, cfg, keys_p, hp_p, axes, args.chunk_size or P)
    sweep_final = [float(x) for x in metrics[f"{task.primary}_mean"][:, -1]]
    print(f"  sweep: compile {timing['compile_s']:.2f} s, 16 runs {timing['run_s']:.2f} s "
          f"({timing['chunks']} chunk(s) of {timing['chunk_size']}, {timing['devices']} device(s))", flush=True)
    diff = float(np.max(np.abs(np.array(loop_final) - np.array(sweep_final))))

    result = {
        "benchmark": "sweep_vs_loop", "date": datetime.date.today().isoformat(),
        "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
        "jax": jax.__version__, "commit": git_commit(),
        "preset": preset, "requested_preset": args.preset, "fallback_reason": fallback_reason,
        "task": task.name, "algorithm": cfg.algorithm, "n_nodes": cfg.n_nodes,
        "ticks": cfg.num_ticks, "simulated_s": cfg.duration_s, "lrs": lrs, "seeds": S,
        "base_seed": 0, "runs": P,
        "loop": {"compile_s": round(loop_compile, 3), "run_s": round(loop_run, 3),
                 "total_s": round(loop_compile + loop_run, 3), "compiles": 1},
        "sweep": {"compile_s": round(timing["compile_s"], 3), "run_s": round(timing["run_s"], 3),
                  "total_s": round(timing["compile_s"] + timing["run_s"], 3), "compiles": 1,
                  "chunks": timing["chunks"], "chunk_size": timing["chunk_size"],
                  "devices": timing["devices"]},
        "speedup_run": round(loop_run / timing["run_s"], 2),
        "speedup_total": round((loop_compile + loop_run) / (timing["compile_s"]
                                                            + timing["run_s"]), 2),
        f"final_{task.primary}_mean_max_abs_diff": diff,
        "note": "compile measured alone (lower().compile()); run times with block_until_ready; "
                "one measurement each",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    dev = jax.devices()[0].device_kind.replace(" ", "_").lower()
    tag = f"-{timing['devices']}dev" if timing["devices"] > 1 else ""
    path = args.out / f"sweep_vs_loop-{dev}{tag}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"  speedup (run only) {result['speedup_run']}x, (with compile) "
          f"{result['speedup_total']}x; max |diff| of final metric {diff:.2e}; wrote {path}")
    return result


if __name__ == "__main__":
    main()
