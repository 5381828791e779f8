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

Churn (`churn_rate` r, `churn_mean_s` m): every node alternates online and offline intervals,
starting online; their lengths are geometric in whole ticks (the memoryless law on 1, 2, ...
ticks: offline mean m, online mean m (1 - r) / r, so a fraction r of the time is offline, exactly
in expectation; a mean below one tick is one tick, and a warning gives the share and mean then
drawn, `effective_churn`), drawn from fold_in(fold_in(fold_in(k_sim, CHURN_STREAM), i), j) for
the j-th pair of node i (`offline_intervals`: ticks [start, end) offline). The int32 sums of
the offline table saturate past any run's end (`SATURATED`), so churn fits any run of fewer
than 2^27 ticks (`check_churn_clock`, on every build), the paper's 800 s among them. An
iteration that meets an offline interval is paused for its length (the
compute runs on online time only), so no iteration ends while its node is offline; the ends
table holds the paused ends. What the engine does with an offline node's messages (DivShare:
going offline drops its send queue; an arrival at an offline node is lost) is the algorithm's.
Synchronous rounds (D-PSGD, Epidemic Learning) are never paused: the engine builds no ends table
for them, and a node offline at a round end (`is_offline`) skips that round (`divjax.engine.sim.tick`).

A trace (`trace_file`, `divjax.network.traces`) gives the same tables from a file instead of the key:
its ends (`traces.end_table`: an iteration lasts the compute time in force at its start, paused
by the trace's offline intervals as churn pauses it) and its offline intervals; the bounds of
an iteration's length are the shortest and longest compute time of each node in the trace.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from divjax.network import traces
from divjax.config_checks import ConfigError

JITTER_STREAM = 2**31 - 1   # fold_in constant of the jitter stream (never a tick)
CHURN_STREAM = 2**31 - 2    # fold_in constant of the churn stream (never a tick)
Z_CLIP = 3.0                # z is clipped to [-3, 3]: iteration lengths are bounded
_MARGIN = 1e-5              # float32 rounding slack of the bounds
SATURATED = 2**30 - 1       # churn's offline sums stop here (past any run; two fit int32)


def compute_spread_factors(cfg) -> np.ndarray:
    """(n,) float64: the factor on every node's compute time for `compute_spread` s.

    exp(s z_i - s^2 / 2) with z ~ N(0, 1) from numpy's generator seeded with `compute_seed`
    (mean 1: the mean compute time stays `compute_s`). All ones for s = 0."""
    n = cfg.n_nodes
    if cfg.compute_spread == 0:
        return np.ones(n)
    s = float(cfg.compute_spread)
    z = np.random.default_rng(cfg.compute_seed).standard_normal(n)
    return np.exp(s * z - s * s / 2)


def has_table(cfg) -> bool:
    """Whether iteration ends come from a table (compute jitter, churn or a trace), not k c_i."""
    return bool(cfg.compute_jitter or cfg.churn_rate or cfg.trace_file)


def has_offline(cfg) -> bool:
    """Whether nodes go offline: churn, or a trace with a node offline within the run."""
    return bool(cfg.churn_rate) or bool(cfg.trace_file
                                        and traces.node_trace(cfg).off_start is not None)


def factor_bounds(sigma: float) -> tuple[float, float]:
    """The smallest and largest factor f = exp(sigma z - sigma^2 / 2), |z| <= Z_CLIP."""
    return (math.exp(-Z_CLIP * sigma - sigma * sigma / 2),
            math.exp(Z_CLIP * sigma - sigma * sigma / 2))


def _xp(c):
    return np if isinstance(c, np.ndarray | np.integer | int) else jnp


def _trace_bound(cfg, compute_ticks, which: str):
    """A trace's bound per node broadcast to compute_ticks' shape (its lengths do not follow
    compute_ticks); a scalar compute_ticks (a factor on compute times) gives 1."""
    if np.ndim(compute_ticks) == 0:
        return 1
    xp = _xp(compute_ticks)
    bound = getattr(traces.node_trace(cfg), which)
    return xp.broadcast_to(xp.asarray(bound), np.shape(compute_ticks)).astype(np.int32)


def shortest_ticks(cfg, compute_ticks):
    """(..., n) a lower bound of every node's iteration length in ticks (numpy or traced):
    compute_ticks itself without jitter; a trace's shortest compute time of each node."""
    if cfg.trace_file:
        return _trace_bound(cfg, compute_ticks, "shortest")
    if cfg.compute_jitter == 0:
        return compute_ticks
    xp = _xp(compute_ticks)
    lo = factor_bounds(cfg.compute_jitter)[0] * (1 - _MARGIN)
    return xp.maximum(1, xp.floor(xp.asarray(compute_ticks) * lo)).astype(np.int32)


def longest_ticks(cfg, compute_ticks):
    """(..., n) an upper bound of every node's iteration length in ticks (compute_ticks
    without jitter; a trace's longest compute time of each node)."""
    if cfg.trace_file:
        return _trace_bound(cfg, compute_ticks, "longest")
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


def _per_node_draws(key: jax.Array, n: int, S: int, draw) -> jax.Array:
    """(n, S, ...) draw(fold_in(fold_in(key, i), k)) for every node i and entry k."""
    def row(i):
        k_i = jax.random.fold_in(key, i)
        return jax.vmap(lambda k: draw(jax.random.fold_in(k_i, k)))(
            jnp.arange(S, dtype=jnp.int32))
    return jax.vmap(row)(jnp.arange(n, dtype=jnp.int32))


def iteration_ends(cfg, compute_ticks: jax.Array, k_sim: jax.Array,
                   offline: tuple | None = None) -> jax.Array:
    """(n, S) int32: the tick at which iteration k of node i ends (see the module docstring),
    paused by the `offline_intervals` (start, end) with churn (drawn here if not given); a
    trace's table (`traces.end_table`, a constant). Pure and jittable; cfg.iteration_slots must
    be resolved (> 0)."""
    S = cfg.iteration_slots
    if S < 1:
        raise ValueError("iteration_slots must be resolved before the run: build the engine "
                         "with make_engine / make_run")
    if cfg.trace_file:
        return jnp.asarray(traces.end_table(cfg, S))
    n = compute_ticks.shape[-1]
    c = jnp.broadcast_to(compute_ticks.astype(jnp.int32)[:, None], (n, S))
    if cfg.compute_jitter:
        sigma = jnp.float32(cfg.compute_jitter)
        z = jnp.clip(_per_node_draws(jax.random.fold_in(k_sim, JITTER_STREAM), n, S,
                                     lambda k: jax.random.normal(k, ())), -Z_CLIP, Z_CLIP)
        f = jnp.exp(sigma * z - sigma * sigma / 2)
        c = jnp.maximum(1, jnp.round(c.astype(jnp.float32) * f)).astype(jnp.int32)
    ends = jnp.cumsum(c, axis=1)                    # on the node's online time
    if not cfg.churn_rate:
        return ends
    start, end = offline_intervals(cfg, k_sim) if offline is None else offline
    length = end - start
    paused_by = _saturating_cumsum(length)          # offline time up to interval j's end
    # online time at which offline interval j begins; an end at or after it waits its length
    # (intervals past the saturation are past any run: they stay at SATURATED, sorted)
    online_at = jnp.where(start >= SATURATED, SATURATED, start - (paused_by - length))
    m = _count(online_at, jnp.arange(n, dtype=jnp.int32)[:, None], ends, side_right=True)
    paused = jnp.take_along_axis(paused_by, jnp.maximum(m - 1, 0), axis=1)
    return ends + jnp.where(m > 0, paused, 0)


def _saturating_cumsum(x: jax.Array) -> jax.Array:
    """(n, J) the cumulative sum along axis 1 of non-negative int32 entries of at most
    SATURATED each, held at SATURATED once it gets there (exact below it; never overflows)."""
    return jax.lax.associative_scan(lambda a, b: jnp.minimum(a + b, SATURATED), x, axis=1)


def check_churn_clock(cfg) -> None:
    """Refuse a churn run too long for the int32 offline table (every build passes here, from
    `offline_intervals`): an interval lasts at most T + 1 ticks and the sums saturate at
    SATURATED, so T up to 2^27 ticks fits (372 hours at 10 ms ticks)."""
    if cfg.churn_rate and cfg.num_ticks >= 2**27:
        raise ConfigError(f"churn over num_ticks={cfg.num_ticks} ticks is too long for the "
                          f"int32 offline table (at most {2**27 - 1}): raise --tick-s or "
                          f"shorten --duration-s")


def churn_means_ticks(cfg) -> tuple[float, float]:
    """(offline, online) mean interval lengths in ticks that churn draws: churn_mean_s / tick_s
    and the online mean that makes a fraction churn_rate of the time offline, each at least
    one tick (an interval lasts whole ticks, at least one)."""
    off = max(1.0, cfg.churn_mean_s / cfg.tick_s)
    return off, max(1.0, off * (1 - cfg.churn_rate) / cfg.churn_rate)


def effective_churn(cfg) -> tuple[float, float]:
    """(offline share, mean offline interval in seconds) that churn actually draws: churn_rate
    and churn_mean_s, unless a mean is shorter than one tick (`churn_means_ticks`)."""
    off, on = churn_means_ticks(cfg)
    return off / (off + on), off * cfg.tick_s


def _warn_effective_churn(cfg) -> None:
    share, mean_s = effective_churn(cfg)
    if abs(share - cfg.churn_rate) > 1e-9 or abs(mean_s - cfg.churn_mean_s) > 1e-12:
        import warnings

        warnings.warn(f"churn_rate={cfg.churn_rate:g}, churn_mean_s={cfg.churn_mean_s:g}: an "
                      f"interval lasts whole ticks of tick_s={cfg.tick_s:g}, at least one, so "
                      f"the run draws an offline share of {share:.4g} and offline intervals of "
                      f"{mean_s:.4g} s on average: lower --tick-s for the values asked",
                      stacklevel=3)


def offline_slots(cfg) -> int:
    """Offline intervals tabled per node: every on + off pair lasts at least two ticks."""
    return cfg.num_ticks // 2 + 1


def offline_intervals(cfg, k_sim: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(start, end), each (n, J) int32: node i is offline at ticks [start[i, j], end[i, j])
    (churn; see the module docstring). Lengths are capped at T + 1 ticks (what lies past the
    run's end T changes nothing) and the sums saturate at SATURATED (far past the run), so
    they never overflow int32. A trace's intervals (`traces.NodeTrace`), constants."""
    if cfg.trace_file:
        nt = traces.node_trace(cfg)
        return jnp.asarray(nt.off_start), jnp.asarray(nt.off_end)
    check_churn_clock(cfg)
    _warn_effective_churn(cfg)
    n, J, T = cfg.n_nodes, offline_slots(cfg), cfg.num_ticks
    mean_off, mean_on = churn_means_ticks(cfg)
    e = _per_node_draws(jax.random.fold_in(k_sim, CHURN_STREAM), n, J,
                        lambda k: jax.random.exponential(k, (2,)))            # (n, J, 2)
    on, off = _geometric_ticks(e[..., 0], mean_on, T), _geometric_ticks(e[..., 1], mean_off, T)
    end = _saturating_cumsum(on + off)
    before = jnp.concatenate([jnp.zeros_like(end[:, :1]), end[:, :-1]], axis=1)
    return jnp.minimum(before + on, SATURATED), end


def _geometric_ticks(e: jax.Array, mean: float, T: int) -> jax.Array:
    """int32 interval lengths in whole ticks from Exp(1) draws `e`: floor(e / lam) + 1 with
    lam = -log(1 - 1 / mean), geometric on 1, 2, ... with exactly `mean` (>= 1) ticks on
    average (the memoryless law in whole ticks; rounding an exponential instead, at least one
    tick, lengthened short intervals: 13% offline for 10% asked at a one-tick mean), capped at
    T + 1 (what lies past the run's end changes nothing)."""
    if mean <= 1.0:
        return jnp.ones(e.shape, jnp.int32)
    lam = jnp.float32(-math.log1p(-1.0 / mean))
    return jnp.clip(jnp.floor(e / lam) + 1, 1, T + 1).astype(jnp.int32)


def _count(rows: jax.Array, node: jax.Array, value: jax.Array, side_right: bool = False
           ) -> jax.Array:
    """Entries of the sorted row rows[node] below `value` (at or below with side_right): a
    binary search, any broadcastable node and value shapes."""
    S = rows.shape[-1]
    node, value = jnp.broadcast_arrays(node, value)
    lo = jnp.zeros(value.shape, jnp.int32)
    hi = jnp.full(value.shape, S, jnp.int32)
    for _ in range(max(1, S.bit_length())):    # static: ceil(log2(S + 1)) steps suffice
        mid = (lo + hi) // 2
        entry = rows[node, jnp.minimum(mid, S - 1)]
        below = (entry <= value) if side_right else (entry < value)
        active = lo < hi
        lo = jnp.where(active & below, mid + 1, lo)
        hi = jnp.where(active & ~below, mid, hi)
    return lo


def is_offline(table, node: jax.Array, tick: jax.Array) -> jax.Array:
    """bool: `node` is offline at `tick` (any broadcastable shapes; False without churn)."""
    if table.off_start is None:
        return jnp.zeros(jnp.broadcast_shapes(jnp.shape(node), jnp.shape(tick)), bool)
    m = _count(table.off_start, node, tick, side_right=True)
    last_end = table.off_end[node, jnp.maximum(m - 1, 0)]
    return (m > 0) & (tick < last_end)


def next_offline_start(table, node: jax.Array, tick: jax.Array) -> jax.Array:
    """The first tick after `tick` at which `node` goes offline; 2^30 if none is tabled (or
    without churn). Any broadcastable shapes."""
    never = jnp.full(jnp.broadcast_shapes(jnp.shape(node), jnp.shape(tick)), 2**30, jnp.int32)
    if table.off_start is None:
        return never
    m = _count(table.off_start, node, tick, side_right=True)
    J = table.off_start.shape[-1]
    return jnp.where(m < J, table.off_start[node, jnp.minimum(m, J - 1)], never)


def stop_tick(table, node: jax.Array, t: jax.Array, next_end: jax.Array) -> jax.Array:
    """When a node's link stops on what it queued at its iteration end t: its next iteration
    end, or (churn, a trace) its next going offline if that comes first (none after its last
    tabled interval: a trace's node back online for good keeps sending)."""
    if table.off_start is None:
        return next_end
    return jnp.minimum(next_end, next_offline_start(table, node, t))


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
    return _count(table.ends, receiver, arrival) + (arrival > 0)


def window_tick(table, receiver: jax.Array, g: jax.Array) -> jax.Array:
    """The tick of aggregation g of `receiver` (g c without jitter)."""
    if table.ends is None:
        return g * table.compute_ticks[receiver]
    return jnp.where(g > 0, end_tick(table, receiver, g - 1), 0)


def host_end_ticks(cfg, compute_ticks: np.ndarray, k_sim: jax.Array) -> np.ndarray | None:
    """The (n, S) table as numpy for the reference simulators; None without one."""
    if not has_table(cfg):
        return None
    return np.asarray(jax.jit(lambda c, k: iteration_ends(cfg, c, k))(
        jnp.asarray(compute_ticks), k_sim))


def host_offline(cfg, k_sim: jax.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """The offline intervals (start, end) as numpy for the reference simulators, or None."""
    if not cfg.churn_rate:
        return None
    return tuple(np.asarray(x) for x in jax.jit(lambda k: offline_intervals(cfg, k))(k_sim))


def auto_iteration_chunk(capacity: int, mean_finishers: float) -> int:
    """`iteration_chunk` for -1 (auto): 0 (every finishing node at once, in a gather padded to
    `capacity`) when nodes finish together, as with equal compute times; else the smallest
    power of two >= the mean number of nodes finishing at a tick, so that a tick trains about
    the nodes that finish instead of `capacity` padded rows (compute spread or jitter: nodes
    finish at many different ticks). Counters, iterations and the schedule do not depend on
    it; parameters only to float rounding (the inbox sums are added in another order)."""
    if capacity <= 2 or 2 * mean_finishers > capacity:
        return 0
    return 1 << max(0, math.ceil(math.log2(max(1.0, mean_finishers))))
