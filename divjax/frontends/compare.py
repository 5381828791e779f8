"""`divjax compare`: several algorithms on the same network, data and seed; one table, one plot.

    divjax compare --algorithms divshare,adpsgd,swift --preset synthetic-small --out runs/cmp
    divjax compare --algorithms divshare,swift,dpsgd,epidemic,local --duration-s 5

Every algorithm runs the preset's configuration (any config flag overrides it) with only
`algorithm` changed, the same HParams (per-node compute, bandwidth, latency) and the same key.
Writes `compare.md` (the table), `compare.json` (the table, the config and every run's metrics)
and `compare.png` (overlay of the primary metric and the consensus distance) into --out.

Columns: final and best primary metric (mean over nodes) and the average model's final value;
the simulated time at which the node mean first reaches the target (default: 90% of the way
from the worst first sample to the best value any algorithm reached); bytes sent;
full-model-equivalent messages sent (fragments sent / K: DivShare sends fragments, the baselines
full models counted once per fragment); messages dropped; final consensus distance; iterations
per node; the longest outgoing queue at the end (models queued but not sent, appended-queue
algorithms); wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from divjax.frontends import presets


def add_parser(subparsers) -> None:
    """Register `divjax compare` (called by divjax.frontends.cli, and by `python -m divjax.frontends.compare`)."""
    from divjax.frontends.flags import add_config_flags

    p = subparsers.add_parser(
        "compare", help="run several algorithms on the same network and seed; one table and "
                        "one overlay plot")
    p.add_argument("--algorithms", default="divshare,adpsgd,swift",
                   help="comma-separated names from divjax.algorithms.ALGORITHMS, or your "
                        "own algorithms as MODULE:ATTR / PATH.py:ATTR (divjax.plugins)")
    p.add_argument("--preset", default=presets.DEFAULT_PRESET,
                   help="named configuration (see `divjax presets`)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed shared by every run")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: a new runs/<date>-<time>-compare-<task>"
                        "[-N]); refused if it already holds results, see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace the results already there")
    p.add_argument("--target", type=float, default=None,
                   help="primary-metric target for the time-to-target column (default: 90%% "
                        "of the way from the worst first sample to the best value reached)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_config_flags(p)
    p.set_defaults(handler=cmd_compare)


def time_to_target(time_s: np.ndarray, values: np.ndarray, target: float,
                   higher_is_better: bool) -> float | None:
    """First simulated time at which `values` reaches `target` (None if never)."""
    hit = values >= target if higher_is_better else values <= target
    return float(time_s[np.argmax(hit)]) if hit.any() else None


def summarize(runs: dict, primary: str, higher_is_better: bool,
              target: float | None) -> tuple[list[dict], float]:
    """One row per algorithm (see the module docstring for the columns)."""
    best_of = {a: (np.max if higher_is_better else np.min)(r["metrics"][f"{primary}_mean"])
               for a, r in runs.items()}
    if target is None:  # 90% of the way from the worst first sample to the best value reached
        first = [float(np.asarray(r["metrics"][f"{primary}_mean"])[0]) for r in runs.values()]
        start = min(first) if higher_is_better else max(first)
        best = max(best_of.values()) if higher_is_better else min(best_of.values())
        target = float(start + 0.9 * (best - start))
    rows = []
    for a, r in runs.items():
        m = r["metrics"]
        final = lambda k: float(np.asarray(m[k])[-1])  # noqa: E731
        rows.append({
            "algorithm": a,
            f"final {primary}": final(f"{primary}_mean"),
            f"best {primary}": float(best_of[a]),
            f"final {primary} (avg model)": final(f"{primary}_avgmodel"),
            "time to target (s)": time_to_target(np.asarray(m["time_s"]),
                                                 np.asarray(m[f"{primary}_mean"]), target,
                                                 higher_is_better),
            "MB sent": final("bytes_sent") / 1e6,
            "models sent": final("msgs_sent") / r["K"],
            "msgs dropped": final("msgs_dropped"),
            "consensus": final("consensus"),
            "iterations": final("iterations_mean"),
            "max queue (models)": r["max_queue"],
            "wall (s)": r["wall_s"],
        })
    return rows, target


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    fmt = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    """Not jittable: host driver, file output."""
    from divjax.frontends import outdir, report
    from divjax import plugins
    from divjax.algorithms import ALGORITHMS
    from divjax.config import ConfigError, default_hparams
    from divjax.frontends.flags import config_from_args, prepare_out
    from divjax.engine.sim import make_engine, simulate

    names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = [a for a in names if a not in ALGORITHMS and not plugins.is_plugin(a)]
    if unknown or not names:
        raise ConfigError(f"--algorithms {args.algorithms!r}: unknown {unknown}; choose from "
                          f"{sorted(ALGORITHMS)} or name your own as MODULE:ATTR")
    twice = sorted({a for a in names if names.count(a) > 1})
    if twice:
        raise ConfigError(f"--algorithms {args.algorithms!r} names {twice} twice: the same "
                          f"algorithm runs the same network and seed once; give each once")
    base = config_from_args(args)
    for name in names:   # every algorithm's config is valid before anything runs
        base.replace(algorithm=name)
    out = prepare_out(args.out, time.strftime("%Y%m%d-%H%M%S-compare-" + base.task),
                      args.overwrite, writes=outdir.COMPARE_OUTPUTS)
    hp = default_hparams(base)  # the same network for every algorithm
    runs, task = {}, None
    for name in names:
        t0 = time.perf_counter()
        engine = make_engine(base.replace(algorithm=name), hp=hp)
        task = engine.task
        if not args.quiet:
            print(f"divjax compare: {name} ...", flush=True)
        state, metrics = simulate(engine, jax.random.key(args.seed), hp)
        jax.block_until_ready(state.params)
        max_queue = None
        if getattr(state.algo_state, "queue", None) is not None:   # appended queues
            from divjax.algorithms.swift import queue_length

            max_queue = int(np.max(np.asarray(queue_length(state))))
        runs[name] = {"metrics": metrics, "K": engine.layout.K, "max_queue": max_queue,
                      "wall_s": time.perf_counter() - t0}
    primary = task.primary
    rows, target = summarize(runs, primary, task.higher_is_better, args.target)
    head = (f"# {', '.join(names)} on {task.name}\n\n"
            f"n={base.n_nodes}, Omega={base.n_fragments}, s={base.fanout}, "
            f"topology={base.topology}, {base.n_stragglers} stragglers, "
            f"{base.duration_s:g} simulated s, seed {args.seed}; target {primary} "
            f"{'>=' if task.higher_is_better else '<='} {target:.4g}\n\n")
    table = markdown_table(rows)
    outdir.write_output(out, "compare.md", head + table + "\n")
    outdir.write_output(out, "compare.json", json.dumps({
        "config": dataclasses.asdict(base), "seed": args.seed, "primary": primary,
        "target": target, "table": rows, "device": jax.devices()[0].device_kind,
        "metrics": {a: {k: np.asarray(v).tolist() for k, v in r["metrics"].items()
                        if k != "node"} for a, r in runs.items()}}, indent=1, default=str))
    outdir.record(out, "compare.png")
    report.plot_runs([(a, r["metrics"]) for a, r in runs.items()], primary,
                     out / "compare.png")
    print(head + table)
    print(f"divjax compare: wrote {out}/ (compare.md, compare.json, compare.png)")
    return 0


if __name__ == "__main__":   # python -m divjax.frontends.compare ...: `divjax compare ...`
    from divjax.frontends.command import subcommand_main

    sys.exit(subcommand_main(add_parser, "compare", sys.argv[1:]))
