"""Running a group of sweep points: chunks of configs x seeds, one compiled program.

`run_points` runs H configs x S seeds of one group in blocks of one compiled shape
(`grid_blocks`, sized by `auto_chunk` to fit the device), a vmap over seeds of a vmap over
configs (`make_batched`), handing each finished block to a callback (the sweep writes it at
once, so a stopped sweep keeps it), and `assemble` puts the blocks back in (H, S, ...) order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from divjax.config import HParams, SimConfig
from divjax.engine.sizing import compile_checked
from divjax.engine.state import ERR_NONFINITE
from divjax.engine.xla_options import jit


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
    from divjax.engine.memory import available_memory_bytes
    from divjax.engine.sizing import memory_estimate

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
    from divjax.engine.sim import check_state

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

    fn = jit(make_batched(run, hp_axes, Hb, Sb), convolutions=getattr(run, "convolutions", False),
             xla_defaults=getattr(run, "xla_defaults", False))
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
