"""Sweeps: a grid of hyperparameters x seeds as one compiled, vmapped program.

    from divjax.frontends.sweep import sweep
    res = sweep(cfg, {"lr": [0.01, 0.05, 0.1], "n_nodes": [16, 32]}, seeds=4, out="runs/lr")
    res.summary["best"]            # the config with the best final primary metric

    divjax sweep --preset synthetic-small --grid lr=0.01,0.05,0.1 --seeds 4 --out runs/lr

Grid fields are split in two (STYLE.md 3.3):
- shape-preserving fields become `HParams` leaves with a sweep axis and run under `jax.vmap`
  (a vmap over seeds of a vmap over configs, so a seed's configs share its mini-batches,
  routes and schedule), in chunks that fit in memory (one compilation per group): the
  optimizer (`lr`, `momentum`, `weight_decay`) and the network description the per-node arrays
  are built from (`fast_mbps`, `straggler_mbps`, `n_stragglers`, `straggler_share` (fraction of
  the nodes), `latency_ms`, `compute_s`, `straggler_compute_factor`, `compute_spread`,
  `compute_seed`);
- every other `SimConfig` field (n_nodes, n_fragments, fanout, task, algorithm, ...) changes
  shapes or code, so it is a Python loop over groups, each compiled once.

Only the leaves that actually vary are batched: an lr sweep keeps the per-node timing unbatched,
so the engine's "no node finishes at this tick" skip survives `vmap` (a batched predicate would
turn `lax.cond` into a select that always trains). Sweeping compute times batches the timing.

Outputs (`out=`, written by `divjax.frontends.sweep_outputs`; the `divjax sweep` command is
`divjax.frontends.sweep_cli`): config.json, metrics.csv and metrics.jsonl (tidy: one row per config, seed and
evaluation time), summary.json and summary.md (mean and 95% confidence interval across seeds per
config, the best config), plot.png (curves with confidence bands; final metric against the swept
value(s): a line plot for one field, a heat-map for two). Seeds are
`jax.random.split(jax.random.key(base_seed), S)`; seed s is the same key in every config.
Every chunk of points is stored in out/points/ as it finishes (`divjax.frontends.sweep_store`): a stopped
sweep's tables hold every finished point, and `resume=True` (`divjax sweep --resume DIR`) runs
only the chunks that are missing, giving the rows of an uninterrupted sweep.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from divjax.frontends import outdir, sweep_store
from divjax.config import ConfigError, HParams, SimConfig
from divjax.engine.state import ERR_NONFINITE
from divjax.frontends.sweep_grid import (  # noqa: F401 (the grid's API, re-exported)
    ALIASES,
    COMPILE_S_PER_GROUP,
    HP_FIELDS,
    LARGE_COMPILE_S,
    LARGE_GROUPS,
    _combos,
    config_values,
    hparams_for,
    split_grid,
    stack_hparams,
    sweep_plan,
)
from divjax.frontends.sweep_outputs import ci95, jsonable, label, summarize, write_sweep_dir  # noqa: F401
from divjax.frontends.sweep_run import (  # noqa: F401 (the runner's API, re-exported)
    _Errs,
    assemble,
    auto_chunk,
    grid_blocks,
    make_batched,
    run_points,
)


class SweepResult(NamedTuple):
    rows: list          # tidy rows: dict per (config, seed, eval time)
    summary: dict       # per-config mean / CI95 of the final metrics, best config, timings
    configs: list       # per config: {"config": id, "group": g, <grid values>}
    metrics: list       # per group: metrics dict, leaves (H_g, S, C) (node-level leaves dropped)
    out: Path | None


# ----------------------------------------------------------------------------- grid sizing


def resolve_grid(cfg: SimConfig, hps: list[HParams], task, algo):
    """One config sized for every grid point's network: every sized field
    (`sizing.SIZED_FIELDS`) the largest any point needs, by `resolve`'s own sizing
    (`sizing.resolve_points`), so a point's run equals its single run; every point then
    passes `sizing.check_sizes`. Raises ConfigError naming the field and the fix."""
    from divjax.engine.sizing import model_layout, resolve_points

    hp, _ = stack_hparams(hps)
    return resolve_points(cfg, hp, model_layout(cfg, task), algo)


def sweep(cfg: SimConfig, grid: dict, seeds: int = 4, base_seed: int = 0,
          chunk_size: int | None = None, out: str | Path | None = None,
          progress: Callable | None = None, verbose: bool = False, resume: bool = False,
          overwrite: bool = False) -> SweepResult:
    """Run every grid point x `seeds` seeds; vmapped per group of shape-preserving points.

    grid: SimConfig field (or "straggler_share") -> list of values. Returns a SweepResult and, if
    `out` is given, writes the sweep directory described in the module docstring, and every
    chunk of points as it finishes (`divjax.frontends.sweep_store`). `resume`: continue the sweep stopped
    in `out` (same arguments, else a ConfigError naming the difference): finished chunks are
    read back, the others run, and the outputs equal an uninterrupted sweep's. `out` is claimed
    (`divjax.frontends.outdir.claim`) unless this process holds it already (the `divjax sweep` command).
    """
    if seeds < 1:
        raise ConfigError(f"seeds={seeds} is invalid: use at least one seed")
    static, dynamic = split_grid(grid)
    statics = _combos(static) if static else [{}]
    points = _combos(dynamic) if dynamic else [{}]
    from divjax.network import trace_checks

    for st in statics:   # every grid point's config is valid before anything runs
        trace_checks.refuse_overridden(cfg.replace(**st), grid)   # fields a trace overrides
        for p in points:
            cfg.replace(**st).replace(**config_values(cfg.replace(**st), p))
    if resume and out is None:
        raise ConfigError("resume=True continues the sweep stored in `out`: give out=DIR")
    out = None if out is None else Path(out)
    owned = out is not None and not outdir.holds(out)
    if owned:
        outdir.claim(out, outdir.SWEEP_OUTPUTS, overwrite=overwrite, resume=resume)
    try:
        if out is not None:
            sweep_store.start(out, sweep_store.sweep_record(cfg, grid, seeds, base_seed,
                                                            chunk_size), resume)
        return _sweep(cfg, grid, statics, points, seeds, base_seed, chunk_size, out, progress,
                      verbose, resume)
    finally:
        if owned:
            outdir.release(out)


def _sweep(cfg, grid, statics, points, seeds, base_seed, chunk_size, out, progress, verbose,
           resume) -> SweepResult:
    keys = jax.random.split(jax.random.key(base_seed), seeds)                    # (S,)
    t_start = time.perf_counter()
    groups, rows, configs = [], [], []
    try:
        for g, st in enumerate(statics):
            groups.append(_run_group(cfg, g, st, points, keys, chunk_size, progress, verbose,
                                     out, resume))
            _group_rows(g, st, points, *groups[-1][2:5], groups[-1][1], configs, rows, verbose)
    except BaseException as e:   # a failure or Ctrl-C/SIGTERM: keep what is done
        if out is not None:
            _write_stopped(out, cfg, grid, statics, points, seeds, base_seed, t_start, e)
        raise
    info = groups[-1][1]
    summary = summarize(rows, configs, info["primary"], info["higher"], seeds)
    summary.update(base_seed=base_seed, seeds=seeds, groups=[x[5] for x in groups],
                   wall_s=time.perf_counter() - t_start,
                   device=jax.devices()[0].device_kind, jax=jax.__version__, complete=True)
    if out is not None:
        write_sweep_dir(out, cfg, grid, rows, configs, summary, info["primary"],
                        record=sweep_store.sweep_record(cfg, grid, seeds, base_seed, chunk_size))
    return SweepResult(rows, summary, configs, [x[2] for x in groups], out)


def _write_stopped(out, cfg, grid, statics, points, seeds, base_seed, t_start, e) -> None:
    """The outputs of a stopped sweep: every finished chunk's points, read back from the
    store (so the group that was running keeps its finished points too)."""
    rows, configs, finished, done, info = [], [], 0, 0, None
    for g, st in enumerate(statics):
        stored = _stored_group(out, g, len(points), seeds)
        if stored is None:
            continue
        info, metrics, errs, have = stored
        finished += bool(have.all())
        done += int(have.sum())
        _group_rows(g, st, points, metrics, errs, have, info, configs, rows, verbose=False)
    total = len(statics) * len(points) * seeds
    if rows:
        summary = summarize(rows, configs, info["primary"], info["higher"], seeds)
        summary.update(base_seed=base_seed, seeds=seeds, groups=[],
                       wall_s=time.perf_counter() - t_start,
                       device=jax.devices()[0].device_kind, jax=jax.__version__,
                       complete=False, stopped_by=f"{type(e).__name__}: {e}",
                       groups_done=finished, groups_total=len(statics), points_done=done,
                       points_total=total)
        write_sweep_dir(out, cfg, grid, rows, configs, summary, info["primary"],
                        record=sweep_store.read_record(out))
    if not (done or isinstance(e, KeyboardInterrupt)):
        return
    print(f"divjax sweep: stopped ({type(e).__name__}) after {done} of {total} point(s) "
          f"({finished} of {len(statics)} group(s)); wrote the finished points to {out}/; "
          f"continue with `divjax sweep --resume {out}`", file=sys.stderr, flush=True)


def _stored_group(out: Path, g: int, H: int, S: int):
    """(info, metrics (H, S, C), errs, have (H, S)) of group g's stored chunks, or None."""
    info = sweep_store.load_group(out, g)
    if info is None:
        return None
    got = sweep_store.load_blocks(out, g, tuple(info["blocks"]), tuple(info["chunk"]))
    if not got:
        return None
    return (info, *assemble(got, tuple(info["blocks"]), H, S))


def _run_group(cfg, g, st, points, keys, chunk_size, progress, verbose, out, resume):
    """Run (or, resumed, finish) group g: (st, info, metrics (H, S, C), errs, have, record)."""
    from divjax.algorithms import make_algorithm
    from divjax.tasks.registry import make_task
    from divjax.engine.sim import make_run

    H, S = len(points), keys.shape[0]
    info = sweep_store.load_group(out, g) if resume else None
    if info is not None and info.get("timing") is not None:   # finished before: just read
        stored = _stored_group(out, g, H, S)
        if stored is not None and stored[3].all():
            return (st, info, *stored[1:], _group_record(info))
    cfg_g = cfg.replace(**st)
    hps = [hparams_for(cfg_g, p) for p in points]
    task = make_task(cfg_g)
    algo = make_algorithm(cfg_g)     # a built-in name or a plug-in's MODULE:ATTR
    cfg_r = resolve_grid(cfg_g, hps, task, algo)
    run = make_run(cfg_r, task, algo, hp=hps[0])   # sized: checks, never re-sizes
    hp, hp_axes = stack_hparams(hps)
    resolved = dataclasses.asdict(run.engine.cfg)
    if info is not None and info["resolved"] != jsonable(resolved):
        raise ConfigError(f"--resume {out}: group {g} ({st or 'the only one'}) now resolves to "
                          f"another config than its stored points were run with (data or "
                          f"files changed?): start the sweep again in a new --out")
    if info is None:
        B = chunk_size or auto_chunk(run.engine, H * S, configs=H)
        Hb, Sb = grid_blocks(H, S, B, len(jax.devices()))
        info = {"static": st, "resolved": resolved, "primary": task.primary,
                "higher": task.higher_is_better, "chunk": [Hb, Sb],
                "blocks": [math.ceil(H / Hb), math.ceil(S / Sb)], "timing": None}
        if out is not None:
            sweep_store.save_group(out, g, info)
    Hb, Sb = info["chunk"]
    have = sweep_store.load_blocks(out, g, tuple(info["blocks"]), (Hb, Sb)) if resume else {}
    if verbose:
        print(f"divjax sweep: group {g + 1} {st or ''}: {H} configs x {S} seeds in "
              f"{math.prod(info['blocks'])} chunk(s) of {Hb} x {Sb}"
              f"{f' ({len(have)} done before)' if have else ''}", flush=True)
    save = None if out is None else (
        lambda i, j, m, e: sweep_store.save_block(out, g, i, j, m, e))
    status: dict = {}
    metrics, timing = run_points(run, run.engine.cfg, keys, hp, hp_axes, Hb * Sb, progress,
                                 status=status, blocks=(Hb, Sb), have=have, on_block=save)
    info["timing"] = timing
    if out is not None:
        sweep_store.save_group(out, g, info)
    errs = tuple(status[k] for k in ("errors", "first_error_tick", "first_error_node"))
    return (st, info, metrics, errs, np.ones((H, S), bool), _group_record(info))


def _group_record(info: dict) -> dict:
    """A group's entry in summary["groups"]."""
    return {"static": info["static"], "resolved": info["resolved"], **info["timing"]}


def _group_rows(g, st, points, metrics, errs, have, info, configs, rows, verbose) -> None:
    """Append group g's configs and tidy rows (finished points only) to `configs` and `rows`."""
    errors, first_tick, first_node = errs
    H, S = have.shape
    diverged = (errors & ERR_NONFINITE) != 0                       # (H, S)
    at_s = np.where(diverged, first_tick * info["resolved"]["tick_s"], np.nan)
    C = metrics["time_s"].shape[-1]
    for h, p in enumerate(points):
        if not have[h].any():
            continue
        configs.append({"config": g * H + h, "group": g, **st, **_plain(p)})
        for s in np.flatnonzero(have[h]):
            when = float(at_s[h, s]) if diverged[h, s] else None
            for c in range(C):
                rows.append({**configs[-1], "seed": int(s),
                             **{k: float(v[h, s, c]) for k, v in metrics.items()},
                             "diverged": bool(diverged[h, s]), "diverged_at_s": when,
                             "diverged_node": (int(first_node[h, s]) if diverged[h, s]
                                               else None)})
        if diverged[h].any() and verbose:
            print(f"divjax sweep: config {g * H + h} ({label(configs[-1], {**st, **p})}) "
                  f"diverged (NaN/inf in a node model) in {int(diverged[h].sum())}/{S} "
                  f"seed(s), first at simulated t={np.nanmin(at_s[h]):.3g}s (node "
                  f"{int(first_node[h][np.nanargmin(at_s[h])])}); its metrics are NaN from "
                  f"then on; continuing", file=sys.stderr, flush=True)


def _plain(point: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in point.items()}
