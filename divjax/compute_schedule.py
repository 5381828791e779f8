"""When every node ends its iterations: fixed compute times, or per-iteration jitter (issue 18).

Without jitter (`SimConfig.compute_jitter` 0) node i ends iterations at c_i, 2 c_i, 3 c_i, ...
(`network.LinkTable.compute_ticks`), and the engine uses that arithmetic directly. With jitter
sigma, iteration k of node i (0-based) lasts

    d_ik = max(1, round(c_i f_ik)) ticks,  f_ik = exp(sigma z_ik - sigma^2 / 2),
    z_ik ~ N(0, 1) clipped to [-Z_CLIP, Z_CLIP],

drawn from fold_in(fold_in(fold_in(k_sim, JITTER_STREAM), i), k): a key no tick ever uses (tick
keys are fold_in(k_sim, t) with t < 2^30), so the other random streams do not move, and every
entry depends only on (key, node, iteration), never on the table's length. The table
`LinkTable.ends[i, k]` = d_i0 + ... + d_ik (the tick at which iteration k ends; (n, S) int32,
S = `SimConfig.iteration_slots`) is built from the run's key whenever the engine builds its
context, and the reference simulators build the same one. Everything that used c_i reads it:
the next iteration end, the link budget of a replaced queue, the inbox window an arrival lands
in (`window_index`: the receiver's iteration ends before it), and the look-ahead of the
"latest" rule. Because the whole table is known from the key, delivery "receiver_iteration"
(which needs the receiver's future iteration ends at send time) stays exact.

The clip bounds every iteration's length (`shortest_ticks`, `longest_ticks`), so the rings,
histories and the table itself are sized without the key; a table too short for the run
(HParams given to a run sized for others) raises ERR_SCHEDULE, never a wrong result.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

JITTER_STREAM = 2**31 - 1   # fold_in constant of the jitter stream (never a tick)
Z_CLIP = 3.0                # z is clipped to [-3, 3]: iteration lengths are bounded
_MARGIN = 1e-5              # float32 rounding slack of the bounds


def factor_bounds(sigma: float) -> tuple[float, float]:
    """The smallest and largest factor f = exp(sigma z - sigma^2 / 2), |z| <= Z_CLIP."""
    return (math.exp(-Z_CLIP * sigma - sigma * sigma / 2),
            math.exp(Z_CLIP * sigma - sigma * sigma / 2))


def _xp(c):
    return np if isinstance(c, np.ndarray | np.integer | int) else jnp


def shortest_ticks(cfg, compute_ticks):
    """(..., n) a lower bound of every node's iteration length in ticks (numpy or traced):
    compute_ticks itself without jitter."""
    if cfg.compute_jitter == 0:
        return compute_ticks
    xp = _xp(compute_ticks)
    lo = factor_bounds(cfg.compute_jitter)[0] * (1 - _MARGIN)
    return xp.maximum(1, xp.floor(xp.asarray(compute_ticks) * lo)).astype(np.int32)


def longest_ticks(cfg, compute_ticks):
    """(..., n) an upper bound of every node's iteration length in ticks (compute_ticks
    without jitter)."""
    if cfg.compute_jitter == 0:
        return compute_ticks
    xp = _xp(compute_ticks)
    hi = factor_bounds(cfg.compute_jitter)[1] * (1 + _MARGIN)
    return xp.maximum(1, xp.ceil(xp.asarray(compute_ticks) * hi)).astype(np.int32)


def slots_needed(cfg, compute_ticks) -> int:
    """Iteration ends to table per node so that the last one is at or after the run's end
    (host side; compute_ticks may carry sweep axes)."""
    d = int(np.min(shortest_ticks(cfg, np.asarray(compute_ticks))))
    return -(-cfg.num_ticks // d) + 1


def iteration_ends(cfg, compute_ticks: jax.Array, k_sim: jax.Array) -> jax.Array:
    """(n, S) int32: the tick at which iteration k of node i ends (see the module docstring).
    Pure and jittable; cfg.iteration_slots must be resolved (> 0)."""
    S = cfg.iteration_slots
    if S < 1:
        raise ValueError("iteration_slots must be resolved before the run: build the engine "
                         "with make_engine / make_run")
    sigma = jnp.float32(cfg.compute_jitter)
    key = jax.random.fold_in(k_sim, JITTER_STREAM)
    n = compute_ticks.shape[-1]

    def row(i):
        k_i = jax.random.fold_in(key, i)
        return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k_i, k), ()))(
            jnp.arange(S, dtype=jnp.int32))

    z = jnp.clip(jax.vmap(row)(jnp.arange(n, dtype=jnp.int32)), -Z_CLIP, Z_CLIP)   # (n, S)
    f = jnp.exp(sigma * z - sigma * sigma / 2)
    d = jnp.maximum(1, jnp.round(compute_ticks.astype(jnp.float32)[:, None] * f))
    return jnp.cumsum(d.astype(jnp.int32), axis=1)


def end_tick(table, node: jax.Array, k: jax.Array) -> jax.Array:
    """The tick at which iteration k (0-based) of `node` ends (any broadcastable shapes):
    (k + 1) c without jitter, the table's entry with it (the last entry, at or after the
    run's end, past the table)."""
    if table.ends is None:
        return (k + 1) * table.compute_ticks[node]
    return table.ends[node, jnp.minimum(k, table.ends.shape[-1] - 1)]


def window_index(table, receiver: jax.Array, arrival: jax.Array) -> jax.Array:
    """Index g of the receiver's first aggregation at or after `arrival` (arrivals come before
    iteration ends at one tick): the inbox window a message lands in. Aggregation g >= 1 is the
    end of iteration g - 1; g = 0 is tick 0. ceil(a / c) without jitter; with it, 1 + the
    number of the receiver's iteration ends before a (a binary search of its row)."""
    if table.ends is None:
        c = table.compute_ticks[receiver]
        return (arrival + c - 1) // c
    ends = table.ends
    S = ends.shape[-1]
    receiver, arrival = jnp.broadcast_arrays(receiver, arrival)
    lo = jnp.zeros(arrival.shape, jnp.int32)
    hi = jnp.full(arrival.shape, S, jnp.int32)
    for _ in range(max(1, S.bit_length())):    # static: ceil(log2(S + 1)) steps suffice
        mid = (lo + hi) // 2
        below = ends[receiver, jnp.minimum(mid, S - 1)] < arrival
        active = lo < hi
        lo = jnp.where(active & below, mid + 1, lo)
        hi = jnp.where(active & ~below, mid, hi)
    return lo + (arrival > 0)


def window_tick(table, receiver: jax.Array, g: jax.Array) -> jax.Array:
    """The tick of aggregation g of `receiver` (g c without jitter)."""
    if table.ends is None:
        return g * table.compute_ticks[receiver]
    return jnp.where(g > 0, end_tick(table, receiver, g - 1), 0)


def host_end_ticks(cfg, compute_ticks: np.ndarray, k_sim: jax.Array) -> np.ndarray | None:
    """The (n, S) table as numpy for the reference simulators; None without jitter."""
    if cfg.compute_jitter == 0:
        return None
    return np.asarray(jax.jit(lambda c, k: iteration_ends(cfg, c, k))(
        jnp.asarray(compute_ticks), k_sim))
