"""Sweep vs loop: 4 learning rates x 4 seeds as one vmapped program against 16 runs in a row.

    python benchmarks/sweep_vs_loop.py                       # movielens-small (synthetic fallback)
    python benchmarks/sweep_vs_loop.py --preset synthetic-small --lrs 0.01,0.03,0.1,0.3

Every side runs exactly the same 16 simulations (same resolved config, keys
`jax.random.split(jax.random.key(0), S)`, same HParams):
- runs: the 16 runs one after another as a user starts them (`divjax run` without the process
  start): per run `make_engine` + `simulate` (the chunked driver), so each run compiles;
- loop: a hand-written loop that compiles `jax.jit(make_run(cfg))` once (HParams are
  arguments) and calls it 16 times, each call synchronised with `block_until_ready`;
- sweep: `divjax.frontends.sweep.run_points`, one compiled program: a vmap over seeds of a vmap over the
  learning rates (a seed's learning rates share its mini-batches, routes and schedule), in the
  chunks `divjax sweep` picks by default (`auto_chunk`; on a CPU, one seed's 4 learning rates
  per call for MovieLens); and "sweep_all_at_once", all 16 points in one call.
Compile time is measured separately from run time (lower().compile()) except for "runs", where it
is part of each run, as for a user. Loop and sweeps are alternated `--repeats` times (default
3) and the best of each is compared (shared machines are noisy); every repeat is recorded. Final metrics are compared (they agree to float32 rounding;
vmapped code may batch arithmetic differently). Writes
benchmarks/results/sweep_vs_loop-<device>-<date>.json.
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

from divjax.frontends import presets
from divjax.algorithms import ALGORITHMS
from divjax.tasks.registry import make_task
from divjax.engine.sim import make_engine, make_run, simulate
from divjax.frontends.sweep import auto_chunk, hparams_for, resolve_grid, run_points, stack_hparams
from divjax.engine.xla_options import jit as divjax_jit


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
    ap.add_argument("--chunk-size", type=int, default=0,
                    help="points per chunk of the 'sweep' side; 0 = divjax.frontends.sweep's default "
                         "(auto_chunk: on a CPU one seed's learning rates for MovieLens)")
    ap.add_argument("--host-devices", type=int, default=0,
                    help="split the CPU into this many XLA devices; the sweep shards its points "
                         "over them (the loop stays on one)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternate loop and sweep this many times; best of each (shared machines "
                         "are noisy)")
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

    def final(m):
        return float(np.asarray(m[f"{task.primary}_mean"])[-1])

    # --- runs: one after another, each built and compiled as `divjax run` does
    runs_final, t0 = [], time.perf_counter()
    for lr, h in zip(lrs, hps):
        for s in range(S):
            engine = make_engine(cfg.replace(lr=lr), task, algo, hp=h)
            _, m = simulate(engine, keys[s], h)
            runs_final.append(final(m))
    runs_s = time.perf_counter() - t0
    print(f"  runs : {P} runs, each compiled, {runs_s:.2f} s", flush=True)

    # --- loop (one compiled program, 16 calls) and sweeps (one compiled program over the
    # 4 x 4 grid: all at once, then one seed per chunk), alternated `repeats` times; best of
    single = divjax_jit(run)
    t0 = time.perf_counter()
    compiled = single.lower(keys[0], hps[0]).compile()
    loop_compile = time.perf_counter() - t0
    hp, axes = stack_hparams(hps)
    default_chunk = args.chunk_size or auto_chunk(run.engine, P, configs=len(lrs))
    loop_runs, sweeps = [], {}
    for r in range(args.repeats):
        loop_final, t0 = [], time.perf_counter()
        for h in hps:
            for s in range(S):
                _, m = jax.block_until_ready(compiled(keys[s], h))
                loop_final.append(final(m))
        loop_runs.append(time.perf_counter() - t0)
        print(f"  loop : compile {loop_compile:.2f} s, {P} runs {loop_runs[-1]:.2f} s", flush=True)
        for name, chunk in (("sweep", default_chunk), ("sweep_all_at_once", P)):
            metrics, timing = run_points(run, cfg, keys, hp, axes, chunk)
            finals = [float(x) for x in metrics[f"{task.primary}_mean"][:, :, -1].reshape(-1)]
            sweeps.setdefault(name, []).append((timing, finals))
            print(f"  {name}: compile {timing['compile_s']:.2f} s, {P} runs {timing['run_s']:.2f} s"
                  f" ({timing['chunks']} chunk(s) of {timing['chunk_configs']} lr x "
                  f"{timing['chunk_seeds']} seed(s), {timing['devices']} device(s))", flush=True)
    loop_run = min(loop_runs)
    best = {name: min(reps, key=lambda r: r[0]["run_s"])[0] for name, reps in sweeps.items()}
    timing = best["sweep"]
    diff = float(max(np.max(np.abs(np.array(other) - np.array(loop_final)))
                     for other in [runs_final] + [f for reps in sweeps.values() for _, f in reps]))

    def side(name):
        t = best[name]
        return {"compile_s": round(t["compile_s"], 3), "run_s": round(t["run_s"], 3),
                "run_s_each": [round(r[0]["run_s"], 3) for r in sweeps[name]],
                "total_s": round(t["compile_s"] + t["run_s"], 3), "compiles": 1,
                "chunks": t["chunks"], "chunk_configs": t["chunk_configs"],
                "chunk_seeds": t["chunk_seeds"], "devices": t["devices"]}

    result = {
        "benchmark": "sweep_vs_loop", "date": datetime.date.today().isoformat(),
        "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
        "jax": jax.__version__, "commit": git_commit(),
        "preset": preset, "requested_preset": args.preset, "fallback_reason": fallback_reason,
        "task": task.name, "algorithm": cfg.algorithm, "n_nodes": cfg.n_nodes,
        "ticks": cfg.num_ticks, "simulated_s": cfg.duration_s, "lrs": lrs, "seeds": S,
        "base_seed": 0, "runs": P,
        "separate_runs": {"total_s": round(runs_s, 3), "compiles": P},
        "loop": {"compile_s": round(loop_compile, 3), "run_s": round(loop_run, 3),
                 "run_s_each": [round(x, 3) for x in loop_runs],
                 "total_s": round(loop_compile + loop_run, 3), "compiles": 1},
        "sweep": side("sweep"),
        "sweep_all_at_once": side("sweep_all_at_once"),
        "speedup_vs_runs": round(runs_s / (timing["compile_s"] + timing["run_s"]), 2),
        "speedup_vs_loop_run": round(loop_run / timing["run_s"], 2),
        "speedup_vs_loop_total": round((loop_compile + loop_run) / (timing["compile_s"]
                                                                    + timing["run_s"]), 2),
        f"final_{task.primary}_mean_max_abs_diff": diff,
        "note": "all in one process; loop and sweeps alternated `repeats` times, best of each "
                "(run_s_each: every repeat); the separate runs once, including their "
                "compilation (as for a user); loop and sweep compilations measured alone",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    dev = jax.devices()[0].device_kind.replace(" ", "_").lower()
    tag = f"-{timing['devices']}dev" if timing["devices"] > 1 else ""
    path = args.out / f"sweep_vs_loop-{dev}{tag}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"  sweep vs the {P} runs: {result['speedup_vs_runs']}x faster; vs the hand-written "
          f"loop: {result['speedup_vs_loop_run']}x (run only), {result['speedup_vs_loop_total']}x "
          f"(with compile); max |diff| of final metric {diff:.2e}; wrote {path}")
    return result


if __name__ == "__main__":
    main()
