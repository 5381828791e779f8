"""Sweeps: a grid of hyperparameters x seeds as one compiled, vmapped program.

    from divjax.sweep import sweep
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

Outputs (`out=`, written by `divjax.sweep_outputs`; the `divjax sweep` command is
`divjax.sweep_cli`): config.json, metrics.csv and metrics.jsonl (tidy: one row per config, seed and
evaluation time), summary.json and summary.md (mean and 95% confidence interval across seeds per
config, the best config), plot.png (curves with confidence bands; final metric against the swept
value(s): a line plot for one field, a heat-map for two). Seeds are
`jax.random.split(jax.random.key(base_seed), S)`; seed s is the same key in every config.
Every chunk of points is stored in out/points/ as it finishes (`divjax.sweep_store`): a stopped
sweep's tables hold every finished point, and `resume=True` (`divjax sweep --resume DIR`) runs
only the chunks that are missing, giving the rows of an uninterrupted sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax import outdir, sweep_store
from divjax.config import ConfigError, HParams, SimConfig, default_hparams
from divjax.sizing import compile_checked
from divjax.state import ERR_NONFINITE
from divjax.sweep_outputs import ci95, jsonable, label, summarize, write_sweep_dir  # noqa: F401
from divjax.xla_options import jit

# SimConfig fields that only build HParams values (no shape, no code path): vmapped.
HP_FIELDS = ("lr", "momentum", "weight_decay", "fast_mbps", "straggler_mbps", "n_stragglers",
             "latency_ms", "compute_s", "straggler_compute_factor", "compute_spread",
             "compute_seed")
ALIASES = ("straggler_share",)  # fraction of the nodes that are stragglers -> n_stragglers


# A sweep's size check (`sweep_plan`): each group of shape-changing values compiles once; a
# rough compile time per group from issue 30 (392 groups took 85 minutes to compile on a CPU).
COMPILE_S_PER_GROUP = 13.0
LARGE_GROUPS = 16           # more groups than this, or
LARGE_COMPILE_S = 30 * 60   # a compile estimate over this, needs --yes


class SweepResult(NamedTuple):
    rows: list          # tidy rows: dict per (config, seed, eval time)
    summary: dict       # per-config mean / CI95 of the final metrics, best config, timings
    configs: list       # per config: {"config": id, "group": g, <grid values>}
    metrics: list       # per group: metrics dict, leaves (H_g, S, C) (node-level leaves dropped)
    out: Path | None


# ----------------------------------------------------------------------------- grid handling


def split_grid(grid: dict) -> tuple[dict, dict]:
    """(static fields -> values, vmappable fields -> values); raises on unknown names."""
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    static, dynamic = {}, {}
    for name, values in grid.items():
        values = list(values)
        if not values:
            raise ConfigError(f"grid field {name!r} has no values")
        if name in HP_FIELDS or name in ALIASES:
            dynamic[name] = values
        elif name in fields:
            static[name] = values
        else:
            raise ConfigError(f"grid field {name!r} is neither a SimConfig field nor one of "
                              f"{ALIASES}: choose from {sorted(fields | set(ALIASES))}")
    if "straggler_share" in dynamic and "n_stragglers" in dynamic:
        raise ConfigError("sweep either straggler_share or n_stragglers, not both")
    return static, dynamic


def sweep_plan(grid: dict, seeds: int) -> dict:
    """The size of a sweep before anything runs: groups (one compilation each), configs per
    group, points, a rough compile time, and `large` (over LARGE_GROUPS groups or
    LARGE_COMPILE_S of compiling: `divjax sweep` then asks for --yes)."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} is invalid: use at least one seed")
    static, dynamic = split_grid(grid)
    groups = math.prod(len(v) for v in static.values())
    configs = math.prod(len(v) for v in dynamic.values())
    compile_s = groups * COMPILE_S_PER_GROUP
    text = (f"{groups} group(s) x {configs} config(s) x {seeds} seed(s) = "
            f"{groups * configs * seeds} points, {groups} compilation(s): roughly "
            f"{_duration(compile_s)} of compiling ({COMPILE_S_PER_GROUP:g} s per group, a CPU "
            f"figure) plus the run time")
    return {"groups": groups, "configs_per_group": configs, "points": groups * configs * seeds,
            "compilations": groups, "compile_s": compile_s, "text": text,
            "large": groups > LARGE_GROUPS or compile_s > LARGE_COMPILE_S}


def _duration(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def _combos(values: dict) -> list[dict]:
    return [dict(zip(values, c, strict=True)) for c in itertools.product(*values.values())]


def config_values(cfg: SimConfig, point: dict) -> dict:
    """SimConfig replacements for one grid point's vmappable values."""
    out = {}
    for name, v in point.items():
        if name == "straggler_share":
            if not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"straggler_share={v!r} is invalid: use a fraction in [0, 1]")
            out["n_stragglers"] = int(round(float(v) * cfg.n_nodes))
        elif name == "straggler_mbps":
            out[name] = tuple(float(x) for x in np.atleast_1d(v))
        elif name == "n_stragglers":
            out[name] = int(v)
        else:
            out[name] = float(v)
    return out


def hparams_for(cfg: SimConfig, point: dict) -> HParams:
    """The HParams of one grid point: `default_hparams` of the config with its values."""
    return default_hparams(cfg.replace(**config_values(cfg, point)))


def stack_hparams(hps: list[HParams]) -> tuple[HParams, HParams]:
    """(stacked HParams, in_axes): leaves that differ get a leading axis, equal leaves do not."""
    leaves, axes = {}, {}
    for f in dataclasses.fields(HParams):
        vals = [np.asarray(getattr(h, f.name)) for h in hps]
        if all(np.array_equal(vals[0], v) for v in vals[1:]):
            leaves[f.name], axes[f.name] = jnp.asarray(vals[0]), None
        else:
            leaves[f.name], axes[f.name] = jnp.asarray(np.stack(vals)), 0
    return HParams(**leaves), HParams(**axes)


def resolve_grid(cfg: SimConfig, hps: list[HParams], task, algo):
    """One config (ring, delay, train capacity) that fits every grid point's network."""
    from divjax.sizing import model_layout, resolve

    layout = model_layout(cfg, task)
    got = [resolve(cfg, h, layout, check_memory=False, algo=algo) for h in hps]
    chunks = [c.iteration_chunk for c in got]      # any chunk gives the same results
    return cfg.replace(ring_ticks=max(c.ring_ticks for c in got),
                       delay_ticks=max(c.delay_ticks for c in got),
                       train_capacity=max(c.train_capacity for c in got),
                       iteration_chunk=0 if 0 in chunks else max(chunks))


# ----------------------------------------------------------------------------- running


def auto_chunk(engine, points: int, configs: int | None = None, fraction: float = 0.4,
               platform: str | None = None, cpu_budget_bytes: int = 256 << 20) -> int:
    """Points per chunk: the most whose states fit in `fraction` of the device memory (x3 for
    buffers); on a CPU, no more than `cpu_budget_bytes` of state unless one seed's `configs`
    need more.

    On a CPU the exchange is bound by memory bandwidth once the working set leaves the caches:
    benchmarks/sweep_vs_loop.py measured a 4 x 4 MovieLens grid (about 110 MiB of state per
    point) faster in chunks of one seed's 4 configs (which still share the seed's batches and
    schedule) than all 16 points at once (16.6 s against 18.1 s, best of 3). Small models (a seed
    sweep of the synthetic task) keep whole chunks.
    """
    from divjax.memory import available_memory_bytes
    from divjax.sizing import memory_estimate

    per = max(1, memory_estimate(engine.cfg, engine.layout, engine.cfg.ring_ticks)["total"])
    fit = int(max(1, min(points, fraction * available_memory_bytes() // (3 * per))))
    platform = platform or jax.devices()[0].platform
    if platform == "cpu":
        return min(fit, max(configs or 1, cpu_budget_bytes // per))
    return fit


def make_batched(run: Callable, hp_axes: HParams, configs: int,
                 seeds: int | None = None) -> Callable:
    """grid(keys (S,), hp with a config axis where hp_axes is 0) -> (errors, first_error,
    metrics), leaves (S, H, ...): a vmap over seeds of a vmap over configs.

    One point per call (configs == seeds == 1) is run without vmap: under vmap every
    `lax.cond` of the engine (training only the nodes that finish, AD-PSGD's pong passes, the
    evaluation) becomes a select that computes both branches at every tick.

    The configs of one seed share its key, so everything random (mini-batches, routes,
    fragment masks) and, for optimizer-only grids, the whole schedule is unbatched inside the
    inner vmap: scatters and gathers keep unbatched indices, and the sparse matrix-factorisation
    steps serve all of a seed's learning rates with one row access (`models.mf_sgd_steps`).
    """

    def point(key, hp):
        state, metrics = run(key, hp)
        metrics = {k: v for k, v in metrics.items() if k != "node"}
        return state.errors, state.first_error_tick, state.first_error_node, metrics

    if configs == 1 and seeds == 1:
        def single(keys, hp):
            hp = jax.tree.map(lambda x, a: x if a is None else x[0], hp, hp_axes,
                              is_leaf=lambda x: x is None)
            return jax.tree.map(lambda x: x[None, None], point(keys[0], hp))

        return single
    over_configs = jax.vmap(point, in_axes=(None, hp_axes), axis_size=configs)
    return jax.vmap(over_configs, in_axes=(0, None))


def grid_blocks(H: int, S: int, chunk_size: int, multiple: int = 1) -> tuple[int, int]:
    """(configs, seeds) per chunk for at most `chunk_size` points: all configs of as many seeds
    as fit (a multiple of `multiple` when possible, for sharding seeds), else fewer configs."""
    B = max(1, chunk_size)
    if B < H:
        return B, 1
    Sb = max(1, min(S, B // H))
    if multiple > 1 and Sb >= multiple:
        Sb -= Sb % multiple
    return H, Sb


def run_points(run: Callable, cfg: SimConfig, keys: jax.Array, hp: HParams, hp_axes: HParams,
               chunk_size: int, progress: Callable | None = None,
               shard: bool = True, status: dict | None = None,
               blocks: tuple[int, int] | None = None, have: dict | None = None,
               on_block: Callable | None = None) -> tuple[dict, dict]:
    """Run H configs (hp leaves (H, ...) where batched) x S seeds (keys (S,)) in chunks.

    A chunk is a block of configs x seeds of one compiled shape (`grid_blocks`, or `blocks` =
    (configs, seeds) per chunk), at most `chunk_size` points; the last block along each axis is
    padded by repeating its last entry, so the program compiles once. With several devices
    (and `shard`), each chunk's seeds are split over all of them when their count allows it.
    `have`: {(i, j): (metrics, errs)} chunks finished before (a resumed sweep): not run again,
    and nothing is compiled if none is left. `on_block(i, j, metrics, errs)` is called as each
    chunk finishes (metrics leaves (Hb, Sb, C); errs: errors, first_error_tick,
    first_error_node, each (Hb, Sb)), before `progress(done, total)`.
    Returns (metrics leaves (H, S, C), timings). A point whose training diverged (NaN/inf) raises
    SimulationError, unless `status` (a dict) is given: then the run goes on and `status` gets
    "errors" (H, S) int32 (state.ERR_* flags), "first_error_tick" and "first_error_node"
    (H, S) int32 (-1 if none); the diverged points' metrics are NaN from that time. Other
    error flags always raise.
    """
    from divjax.sim import check_state

    S = keys.shape[0]
    H = max(jax.tree.leaves(jax.tree.map(lambda x, a: 1 if a is None else x.shape[0], hp,
                                         hp_axes, is_leaf=lambda x: x is None)))
    devices = jax.devices()
    Hb, Sb = blocks or grid_blocks(H, S, chunk_size, len(devices) if shard else 1)
    sharded = shard and len(devices) > 1 and Sb % len(devices) == 0
    h_blocks, s_blocks = math.ceil(H / Hb), math.ceil(S / Sb)
    h_idx = np.minimum(np.arange(h_blocks * Hb), H - 1).reshape(h_blocks, Hb)
    s_idx = np.minimum(np.arange(s_blocks * Sb), S - 1).reshape(s_blocks, Sb)
    if sharded:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("points",))
        split, whole = NamedSharding(mesh, PartitionSpec("points")), NamedSharding(mesh,
                                                                                   PartitionSpec())

    def take(hi, si):
        k = keys[si]
        h = jax.tree.map(lambda x, a: x if a is None else x[hi], hp, hp_axes,
                         is_leaf=lambda x: x is None)
        if sharded:
            k = jax.device_put(k, split)
            h = jax.tree.map(lambda x: jax.device_put(x, whole), h)
        return k, h

    fn = jit(make_batched(run, hp_axes, Hb, Sb), convolutions=getattr(run, "convolutions", False))
    got = dict(have or {})
    compiled, compile_s, run_s = None, 0.0, 0.0
    done = min(len(got) * Hb * Sb, H * S)
    for i, hi in enumerate(h_idx):
        for j, si in enumerate(s_idx):
            if (i, j) in got:
                continue
            if compiled is None:
                t0 = time.perf_counter()
                compiled = compile_checked(fn, *take(h_idx[0], s_idx[0]), cfg=cfg,
                                           what=f"a sweep chunk of {Hb * Sb} point(s)",
                                           fix="a smaller --chunk-size (points per compiled "
                                               "call)")
                compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            k, h = take(hi, si)
            errors, first, node, metrics = jax.block_until_ready(compiled(k, h))
            errors, first, node = np.asarray(errors), np.asarray(first), np.asarray(node)
            if status is None:   # (Sb, Hb) flags; h.lr (Hb,) names the diverged point's lr
                check_state(_Errs(errors, first, node), cfg, h)
            else:   # divergence is marked per point; ring or capacity overflows still raise
                check_state(_Errs(errors & ~ERR_NONFINITE, first, node), cfg)
            # (Sb, Hb, ...) -> (Hb, Sb, ...)
            got[(i, j)] = (jax.tree.map(lambda x: np.swapaxes(x, 0, 1), jax.device_get(metrics)),
                           (errors.T, first.T, node.T))
            run_s += time.perf_counter() - t0
            if on_block is not None:
                on_block(i, j, *got[(i, j)])
            done += Hb * Sb
            if progress is not None:
                progress(min(done, H * S), H * S)
    metrics, errs, _ = assemble(got, (h_blocks, s_blocks), H, S)
    if status is not None:
        status.update(zip(("errors", "first_error_tick", "first_error_node"), errs, strict=True))
    return metrics, {"compile_s": compile_s, "run_s": run_s, "chunk_size": Hb * Sb,
                     "chunk_configs": Hb, "chunk_seeds": Sb, "chunks": h_blocks * s_blocks,
                     "devices": len(devices) if sharded else 1,
                     "xla_compiler_options": fn.compiler_options}   # per group: the rounding


def assemble(got: dict, blocks: tuple[int, int], H: int, S: int) -> tuple[dict, tuple, np.ndarray]:
    """Chunks {(i, j): (metrics leaves (Hb, Sb, C), errs 3 x (Hb, Sb))} -> (metrics (H, S, C),
    errs 3 x (H, S), have (H, S) bool). Missing chunks give NaN metrics, errors 0, first error
    -1 and have False (a stopped sweep's unfinished points)."""
    metrics0, errs0 = next(iter(got.values()))
    Hb, Sb = errs0[0].shape
    nan = {k: np.full(v.shape, np.nan, np.result_type(v.dtype, np.float32))
           for k, v in metrics0.items()}
    none = (np.zeros((Hb, Sb), np.int32), np.full((Hb, Sb), -1, np.int32),
            np.full((Hb, Sb), -1, np.int32))
    h_blocks, s_blocks = blocks
    grid = [[got.get((i, j), (nan, none)) for j in range(s_blocks)] for i in range(h_blocks)]
    have = np.concatenate([np.concatenate([np.full((Hb, Sb), (i, j) in got)
                                           for j in range(s_blocks)], axis=1)
                           for i in range(h_blocks)])[:H, :S]
    rows = [jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *[b[0] for b in r])
            for r in grid]
    metrics = jax.tree.map(lambda *xs: np.concatenate(xs)[:H, :S], *rows)
    errs = tuple(np.concatenate([np.concatenate([b[1][n] for b in r], axis=1) for r in grid])
                 [:H, :S] for n in range(3))
    return metrics, errs, have


class _Errs(NamedTuple):
    errors: jax.Array
    first_error_tick: jax.Array
    first_error_node: jax.Array


def sweep(cfg: SimConfig, grid: dict, seeds: int = 4, base_seed: int = 0,
          chunk_size: int | None = None, out: str | Path | None = None,
          progress: Callable | None = None, verbose: bool = False, resume: bool = False,
          overwrite: bool = False) -> SweepResult:
    """Run every grid point x `seeds` seeds; vmapped per group of shape-preserving points.

    grid: SimConfig field (or "straggler_share") -> list of values. Returns a SweepResult and, if
    `out` is given, writes the sweep directory described in the module docstring, and every
    chunk of points as it finishes (`divjax.sweep_store`). `resume`: continue the sweep stopped
    in `out` (same arguments, else a ConfigError naming the difference): finished chunks are
    read back, the others run, and the outputs equal an uninterrupted sweep's. `out` is claimed
    (`divjax.outdir.claim`) unless this process holds it already (the `divjax sweep` command).
    """
    if seeds < 1:
        raise ConfigError(f"seeds={seeds} is invalid: use at least one seed")
    static, dynamic = split_grid(grid)
    statics = _combos(static) if static else [{}]
    points = _combos(dynamic) if dynamic else [{}]
    from divjax import traces

    for st in statics:   # every grid point's config is valid before anything runs
        traces.refuse_overridden(cfg.replace(**st), grid)   # fields a trace overrides
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
    from divjax.registry import make_task
    from divjax.sim import make_run

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
    run = make_run(cfg_r, task, algo)
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
