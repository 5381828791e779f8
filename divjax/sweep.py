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

from divjax.config import ConfigError, HParams, SimConfig, default_hparams
from divjax.sizing import compile_checked
from divjax.state import ERR_NONFINITE
from divjax.sweep_outputs import ci95, label, summarize, write_sweep_dir  # noqa: F401 (ci95: API)
from divjax.xla_options import jit

# SimConfig fields that only build HParams values (no shape, no code path): vmapped.
HP_FIELDS = ("lr", "momentum", "weight_decay", "fast_mbps", "straggler_mbps", "n_stragglers",
             "latency_ms", "compute_s", "straggler_compute_factor", "compute_spread",
             "compute_seed")
ALIASES = ("straggler_share",)  # fraction of the nodes that are stragglers -> n_stragglers


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
    """One config sized for every grid point's network: every sized field
    (`sizing.SIZED_FIELDS`) the largest any point needs, by `resolve`'s own sizing
    (`sizing.resolve_points`), so a point's run equals its single run; every point then
    passes `sizing.check_sizes`. Raises ConfigError naming the field and the fix."""
    from divjax.sizing import model_layout, resolve_points

    hp, _ = stack_hparams(hps)
    return resolve_points(cfg, hp, model_layout(cfg, task), algo)


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
               shard: bool = True, status: dict | None = None) -> tuple[dict, dict]:
    """Run H configs (hp leaves (H, ...) where batched) x S seeds (keys (S,)) in chunks.

    A chunk is a block of configs x seeds of one compiled shape (`grid_blocks`), at most
    `chunk_size` points; the last block along each axis is padded by repeating its last entry,
    so the program compiles once. With several devices (and `shard`), each chunk's seeds are
    split over all of them when their count allows it.
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
    Hb, Sb = grid_blocks(H, S, chunk_size, len(devices) if shard else 1)
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
    t0 = time.perf_counter()
    compiled = compile_checked(fn, *take(h_idx[0], s_idx[0]), cfg=cfg,
                               what=f"a sweep chunk of {Hb * Sb} point(s)",
                               fix="a smaller --chunk-size (points per compiled call)")
    compile_s = time.perf_counter() - t0
    blocks = [[None] * s_blocks for _ in range(h_blocks)]
    err_blocks = [[None] * s_blocks for _ in range(h_blocks)]
    t0, done = time.perf_counter(), 0
    for i, hi in enumerate(h_idx):
        for j, si in enumerate(s_idx):
            errors, first, node, metrics = jax.block_until_ready(compiled(*take(hi, si)))
            errors, first, node = np.asarray(errors), np.asarray(first), np.asarray(node)
            if status is None:
                check_state(_Errs(errors, first, node), cfg)
            else:   # divergence is marked per point; ring or capacity overflows still raise
                check_state(_Errs(errors & ~ERR_NONFINITE, first, node), cfg)
            err_blocks[i][j] = (errors.T, first.T, node.T)
            # (Sb, Hb, C) -> (Hb, Sb, C)
            blocks[i][j] = jax.tree.map(lambda x: np.swapaxes(x, 0, 1), jax.device_get(metrics))
            done += Hb * Sb
            if progress is not None:
                progress(min(done, H * S), H * S)
    run_s = time.perf_counter() - t0
    rows = [jax.tree.map(lambda *xs: np.concatenate(xs, axis=1)[:, :S], *b) for b in blocks]
    metrics = jax.tree.map(lambda *xs: np.concatenate(xs)[:H], *rows)
    if status is not None:
        for n, name in enumerate(("errors", "first_error_tick", "first_error_node")):
            status[name] = np.concatenate([np.concatenate([b[n] for b in row], axis=1)[:, :S]
                                           for row in err_blocks])[:H]
    return metrics, {"compile_s": compile_s, "run_s": run_s, "chunk_size": Hb * Sb,
                     "chunk_configs": Hb, "chunk_seeds": Sb, "chunks": h_blocks * s_blocks,
                     "devices": len(devices) if sharded else 1,
                     "xla_compiler_options": fn.compiler_options}   # per group: the rounding


class _Errs(NamedTuple):
    errors: jax.Array
    first_error_tick: jax.Array
    first_error_node: jax.Array


def sweep(cfg: SimConfig, grid: dict, seeds: int = 4, base_seed: int = 0,
          chunk_size: int | None = None, out: str | Path | None = None,
          progress: Callable | None = None, verbose: bool = False) -> SweepResult:
    """Run every grid point x `seeds` seeds; vmapped per group of shape-preserving points.

    grid: SimConfig field (or "straggler_share") -> list of values. Returns a SweepResult and, if
    `out` is given, writes the sweep directory described in the module docstring.
    """
    if seeds < 1:
        raise ConfigError(f"seeds={seeds} is invalid: use at least one seed")
    static, dynamic = split_grid(grid)
    keys = jax.random.split(jax.random.key(base_seed), seeds)                    # (S,)
    rows, configs, group_metrics, groups = [], [], [], []
    primary, higher = None, True
    t_start = time.perf_counter()
    state = {"primary": None, "higher": True}
    statics = _combos(static) if static else [{}]
    for st in statics:   # every grid point's config is valid before anything runs
        for p in _combos(dynamic) if dynamic else [{}]:
            cfg.replace(**st).replace(**config_values(cfg.replace(**st), p))
    try:
        _sweep_groups(cfg, statics, dynamic, keys, seeds, chunk_size, progress, verbose, rows,
                      configs, group_metrics, groups, state)
    except BaseException as e:   # a failure or Ctrl-C/SIGTERM: keep what is done
        if out is not None and rows:
            summary = summarize(rows, configs, state["primary"], state["higher"], seeds)
            summary.update(base_seed=base_seed, seeds=seeds, groups=groups,
                           wall_s=time.perf_counter() - t_start,
                           device=jax.devices()[0].device_kind, jax=jax.__version__,
                           complete=False, stopped_by=f"{type(e).__name__}: {e}",
                           groups_done=len(groups), groups_total=len(statics))
            write_sweep_dir(Path(out), cfg, grid, rows, configs, summary, state["primary"])
            print(f"divjax sweep: stopped ({type(e).__name__}) after {len(groups)} of "
                  f"{len(statics)} group(s); wrote the finished points to {out}/",
                  file=sys.stderr, flush=True)
        raise
    primary, higher = state["primary"], state["higher"]
    total_s = time.perf_counter() - t_start
    summary = summarize(rows, configs, primary, higher, seeds)
    summary.update(base_seed=base_seed, seeds=seeds, groups=groups, wall_s=total_s,
                   device=jax.devices()[0].device_kind, jax=jax.__version__, complete=True)
    out_path = None
    if out is not None:
        out_path = Path(out)
        write_sweep_dir(out_path, cfg, grid, rows, configs, summary, primary)
    return SweepResult(rows, summary, configs, group_metrics, out_path)


def _sweep_groups(cfg, statics, dynamic, keys, seeds, chunk_size, progress, verbose, rows,
                  configs, group_metrics, groups, state) -> None:
    """The loop over shape-changing groups of `sweep`; appends to rows, configs, group_metrics
    and groups as each group finishes (so a stopped sweep keeps the finished groups)."""
    from divjax.algorithms import ALGORITHMS
    from divjax.registry import make_task
    from divjax.sim import make_run

    for g, st in enumerate(statics):
        cfg_g = cfg.replace(**st)
        points = _combos(dynamic) if dynamic else [{}]
        hps = [hparams_for(cfg_g, p) for p in points]
        task = make_task(cfg_g)
        if cfg_g.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm={cfg_g.algorithm!r} is unknown: choose one of "
                              f"{sorted(ALGORITHMS)}")
        algo = ALGORITHMS[cfg_g.algorithm](cfg_g)
        cfg_r = resolve_grid(cfg_g, hps, task, algo)
        run = make_run(cfg_r, task, algo, hp=hps[0])   # sized: checks, never re-sizes
        state["primary"], state["higher"] = task.primary, task.higher_is_better
        H, S = len(points), seeds
        hp, hp_axes = stack_hparams(hps)
        B = chunk_size or auto_chunk(run.engine, H * S, configs=H)
        Hb, Sb = grid_blocks(H, S, B, len(jax.devices()))
        if verbose:
            print(f"divjax sweep: group {g + 1} {st or ''}: {H} configs x {S} seeds in "
                  f"{math.ceil(H / Hb) * math.ceil(S / Sb)} chunk(s) of {Hb} x {Sb}", flush=True)
        status: dict = {}
        metrics, timing = run_points(run, run.engine.cfg, keys, hp, hp_axes, B, progress,
                                     status=status)
        tick_s = run.engine.cfg.tick_s
        diverged = (status["errors"] & ERR_NONFINITE) != 0                       # (H, S)
        at_s = np.where(diverged, status["first_error_tick"] * tick_s, np.nan)
        group_metrics.append(metrics)
        groups.append({"static": st, "resolved": dataclasses.asdict(run.engine.cfg),
                       "configs": H, "seeds": S, **timing})
        for h, p in enumerate(points):
            cid = len(configs)
            configs.append({"config": cid, "group": g, **st, **_plain(p)})
            C = metrics["time_s"].shape[-1]
            for s in range(S):
                when = float(at_s[h, s]) if diverged[h, s] else None
                for c in range(C):
                    rows.append({**configs[-1], "seed": s,
                                 **{k: float(v[h, s, c]) for k, v in metrics.items()},
                                 "diverged": bool(diverged[h, s]), "diverged_at_s": when,
                                 "diverged_node": (int(status["first_error_node"][h, s])
                                                   if diverged[h, s] else None)})
            if diverged[h].any() and verbose:
                print(f"divjax sweep: config {cid} ({label(configs[-1], {**st, **p})}) "
                      f"diverged (NaN/inf in a node model) in {int(diverged[h].sum())}/{S} "
                      f"seed(s), first at simulated t={np.nanmin(at_s[h]):.3g}s (node "
                      f"{int(status['first_error_node'][h][np.nanargmin(at_s[h])])}); its metrics "
                      f"are NaN from then on; continuing", file=sys.stderr, flush=True)


def _plain(point: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in point.items()}
