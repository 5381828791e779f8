"""The simulated clock and network: compute times, upload links, latency, and message timing.

Time is an integer tick of `cfg.tick_s` seconds. Every node i has
- a compute time of `compute_ticks[i]` ticks per iteration (all its local steps); node i finishes
  iterations at ticks c_i, 2 c_i, 3 c_i, ... (all nodes start at tick 0); with compute jitter or
  churn, at the ticks of its row of `ends`, drawn from the run's key (`divjax.network.compute_schedule`);
- an upload link that sends queued messages one after another. A link keeps its own finer clock
  of `cfg.link_resolution` sub-ticks per tick, so a queue of small fragments is timed exactly:
  fragment k occupies node i's link for `msg_units[i, k]` sub-ticks (bytes / bandwidth, rounded
  up to one sub-tick);
- a latency of `latency_units[i]` link sub-ticks from the moment a message has fully left the
  link to its arrival at the receiver, plus `region_units[region[i], region[j]]` to receiver j
  (geo-distributed nodes: `latency_regions` / `inter_region_ms`, or a full matrix from
  `latency_file`; zero with one region). `pair_latency_units` is the latency of one pair.

A message that leaves the link during tick t (sub-tick in ((t-1)R, tR]) is sent at tick t. It
arrives at the first tick at or after its leave sub-tick plus the latency: the time is rounded
to the tick once, on the arrival (`arrival_tick`), never separately on the leave time and the
latency. At one tick, arrivals happen before iteration ends, so a message that arrives at the
tick its receiver aggregates is averaged in.

Messages in flight and the counters are in `divjax.network.messages` (`push` scatters a Schedule's
messages into the ring).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.network.compute_schedule import has_table, longest_ticks, shortest_ticks
from divjax.config import ConfigError, HParams, SimConfig, download_limited
from divjax.config_checks import clock_messages
from divjax.network.pair_files import loss_matrix, read_latency_file
from divjax.network.trace_checks import check_trace_rows  # noqa: F401 (API)

DELIVERY_MODES = ("arrival_tick", "receiver_iteration")


class LinkTable(NamedTuple):
    """Integer timing of every node, derived from HParams (traced; vmappable)."""

    compute_ticks: jax.Array  # (n,) int32: ticks per iteration, >= 1
    latency_units: jax.Array  # (n,) int32: link sub-ticks from leaving the link to arrival, >= 0
    msg_units: jax.Array      # (n, K) int32: link sub-ticks node i needs to send fragment k, >= 1
    region: jax.Array         # (n,) int32: every node's latency region (all 0 with one region)
    region_units: jax.Array   # (G, G) int32: sub-ticks added from region a to region b, >= 0
    ends: jax.Array | None = None  # (n, S) int32 with compute jitter or churn: the tick
    #                                iteration k of node i ends (`compute_schedule`); None: k c_i
    off_start: jax.Array | None = None  # (n, J) int32 with churn: node i is offline at ticks
    off_end: jax.Array | None = None    # [off_start, off_end) (`offline_intervals`)
    down_units: jax.Array | None = None  # (n, K) int32 with download limits: link sub-ticks
    #                                      node j's download link needs to receive fragment k,
    #                                      >= 0 (0: unlimited); None: downloads not modelled
    seg_tick: jax.Array | None = None   # (n, P) int32 with a trace whose upload or download
    #                                     varies: the tick each of node i's rows starts (padded)
    seg_units: jax.Array | None = None  # (n, P, K) int32: msg_units in force from seg_tick
    #                                     (None: the upload does not vary)
    down_seg_units: jax.Array | None = None  # (n, P, K) int32: down_units in force from
    #                                     seg_tick (None: no download varies, or no limits)


def pair_latency_units(table: LinkTable, sender: jax.Array, receiver: jax.Array) -> jax.Array:
    """Link sub-ticks from leaving sender's link to arriving at receiver (ids in range; any
    broadcastable shapes): the sender's latency plus the latency between their regions."""
    return (table.latency_units[sender]
            + table.region_units[table.region[sender], table.region[receiver]])


def latency_bounds_units(table: LinkTable) -> tuple[jax.Array, jax.Array]:
    """(..., n) the smallest and the largest latency, in sub-ticks, of each sender's messages
    to any node (leaves may carry leading sweep axes)."""
    low = jnp.take_along_axis(jnp.min(table.region_units, axis=-1), table.region, axis=-1)
    high = jnp.take_along_axis(jnp.max(table.region_units, axis=-1), table.region, axis=-1)
    return table.latency_units + low, table.latency_units + high


def latency_ticks(table: LinkTable, resolution: int) -> jax.Array:
    """(..., n) the most whole ticks a latency adds to a message's delay (ceil(units / R)) for
    each sender: arrival_tick(leave, lat) <= ceil(leave / R) + this, so it bounds delays for
    ring sizing."""
    return (latency_bounds_units(table)[1] + resolution - 1) // resolution


def region_latency_ms(cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """(region (n,) int32, extra (G, G) float64 ms): the latency added between regions.

    One region and no file: ((0, ..., 0), [[0]]). `latency_regions` G puts node i in region
    i mod G (the stragglers, the last nodes, spread over the regions) and adds
    `inter_region_ms` between different regions. `latency_file` gives the whole n x n matrix
    (every node its own region)."""
    n = cfg.n_nodes
    if cfg.latency_file:
        return np.arange(n, dtype=np.int32), read_latency_file(cfg.latency_file, n)
    G = cfg.latency_regions
    extra = np.where(np.eye(G, dtype=bool), 0.0, float(cfg.inter_region_ms))
    return (np.arange(n) % G).astype(np.int32), extra


def loss_modelled(cfg: SimConfig) -> bool:
    """Messages may be lost on the way: `loss_rate` > 0 or a per-link `loss_file`."""
    return cfg.loss_rate > 0 or bool(cfg.loss_file)


def arrival_tick(leave_subtick: jax.Array, latency_units: jax.Array, resolution: int
                 ) -> jax.Array:
    """The tick a message arrives: the first tick whose end is at or after the sub-tick it has
    fully left the link plus the latency (one rounding, on the arrival). Sub-ticks may be
    absolute or relative to a tick boundary (then the result is relative to that tick)."""
    return (leave_subtick + latency_units + resolution - 1) // resolution


def link_table(cfg: SimConfig, hp: HParams, fragment_bytes: np.ndarray) -> LinkTable:
    """Convert seconds and bytes/s into integer ticks and link sub-ticks (pure, jittable)."""
    tick = jnp.float32(cfg.tick_s)
    compute = jnp.maximum(1, jnp.round(hp.compute_s / tick)).astype(jnp.int32)
    # latency on the link's sub-tick clock, to the nearest sub-tick (rounded to a tick only
    # once, on the arrival: `arrival_tick`)
    latency = jnp.maximum(0, jnp.round(hp.latency_s / tick * cfg.link_resolution)
                          ).astype(jnp.int32)
    units = fragment_units(fragment_bytes, hp.upload_bps, cfg)
    region, extra_ms = region_latency_ms(cfg)
    region_units = np.round(extra_ms / 1e3 / cfg.tick_s * cfg.link_resolution).astype(np.int32)
    seg_tick = seg_units = down_seg = None
    if cfg.trace_file:   # a trace whose bandwidths change over time: units per row
        from divjax.network.traces import node_trace

        check_trace_rows(cfg, tuple(int(b) for b in np.asarray(fragment_bytes).ravel()))
        nt = node_trace(cfg)
        up, down_rows = nt.upload_seg_bps, nt.download_seg_bps
        down_rows = down_rows if download_limited(cfg) else None
        if up is not None or down_rows is not None:
            seg_tick = jnp.asarray(np.minimum(nt.seg_tick, 2**30), jnp.int32)
        if up is not None:
            seg_units = fragment_units(fragment_bytes, jnp.asarray(up, jnp.float32), cfg)
        if down_rows is not None:
            down_seg = download_units(fragment_bytes, jnp.asarray(down_rows, jnp.float32), cfg)
    down = None
    if download_limited(cfg):   # 0 sub-ticks where unlimited (inf): arrival as without limits
        down = download_units(fragment_bytes, hp.download_bps, cfg)
    return LinkTable(compute, latency, units, jnp.asarray(region), jnp.asarray(region_units),
                     down_units=down, seg_tick=seg_tick, seg_units=seg_units,
                     down_seg_units=down_seg)


def download_units(fragment_bytes: np.ndarray, bps: jax.Array, cfg: SimConfig) -> jax.Array:
    """(..., K) int32 sub-ticks a download link of `bps` (...,) bytes/s takes to receive each
    fragment: bytes / bandwidth, rounded up to a sub-tick; 0 where unlimited (inf)."""
    down_f = (jnp.asarray(fragment_bytes, jnp.float32) / bps[..., None]
              / jnp.float32(cfg.tick_s) * cfg.link_resolution)
    return jnp.maximum(0, jnp.ceil(down_f - 1e-3)).astype(jnp.int32)


def fragment_units(fragment_bytes: np.ndarray, bps: jax.Array, cfg: SimConfig) -> jax.Array:
    """(..., K) int32 link sub-ticks each fragment takes at upload bandwidth `bps` (...,) bytes/s:
    bytes / bandwidth, rounded up to a sub-tick, at least one."""
    units_f = (jnp.asarray(fragment_bytes, jnp.float32) / bps[..., None]
               / jnp.float32(cfg.tick_s) * cfg.link_resolution)
    return jnp.maximum(1, jnp.ceil(units_f - 1e-3)).astype(jnp.int32)


def units_at(table: LinkTable, node: jax.Array, t: jax.Array) -> jax.Array:
    """(C, K) link sub-ticks of every fragment of the C `node`s for a queue formed at tick t
    (() or (C,)): the upload in force then (a trace's row; `msg_units` when it is constant)."""
    if table.seg_units is None:
        return table.msg_units[node]
    rows = table.seg_tick[node]                                                  # (C, P)
    p = jnp.sum(rows <= jnp.reshape(t, (-1, 1)), axis=1) - 1
    return table.seg_units[node, jnp.maximum(p, 0)]


def concrete_link_table(cfg: SimConfig, hp: HParams, fragment_bytes: np.ndarray) -> LinkTable:
    """`link_table` evaluated on the host, for config checks (leaves may have a sweep axis)."""
    table = jax.jit(lambda h: link_table(cfg, h, fragment_bytes))
    lead = np.ndim(hp.compute_s) - 1
    fn = table
    for _ in range(lead):
        fn = jax.vmap(fn)
    return jax.tree.map(np.asarray, fn(hp))


def check_network(cfg: SimConfig, hp: HParams) -> None:
    """Clear errors for non-positive or non-finite bandwidths, latencies and compute times."""
    n = cfg.n_nodes
    for name, positive in (("upload_bps", True), ("compute_s", True), ("latency_s", False)):
        value = np.asarray(getattr(hp, name))
        if value.shape[-1:] != (n,):
            raise ConfigError(f"HParams.{name} has shape {value.shape}: it needs one entry per "
                              f"node, shape (..., {n})")
        bad = ~np.isfinite(value) | ((value <= 0) if positive else (value < 0))
        if bad.any():
            where = np.argwhere(bad)[0]
            raise ConfigError(
                f"HParams.{name}[{tuple(int(i) for i in where)}]={value[tuple(where)]!r} is "
                f"invalid: it must be {'positive' if positive else 'non-negative'} and finite "
                f"(set --{'fast-mbps/--straggler-mbps' if name == 'upload_bps' else name})")
    download = np.asarray(hp.download_bps)
    if download.shape[-1:] != (n,) or (download_limited(cfg) and (
            np.isnan(download) | (download <= 0)).any()):
        raise ConfigError(f"HParams.download_bps (shape {download.shape}) must hold one positive "
                          f"bandwidth (bytes/s, inf = unlimited) per node, shape (..., {n}): set "
                          f"--download-mbps / --straggler-download-mbps")
    # the clock counts whole ticks: a compute time must be one to within 1%
    compute = np.asarray(hp.compute_s, np.float64) / cfg.tick_s
    ticks = np.maximum(1, np.round(compute))
    off = np.abs(ticks - compute) / compute
    if (off > 0.01).any():
        where = tuple(int(i) for i in np.argwhere(off > 0.01)[0])
        raise ConfigError(
            f"HParams.compute_s{list(where)}={float(np.asarray(hp.compute_s)[where])!r} s is "
            f"not a whole number of ticks of tick_s={cfg.tick_s}: it would run as "
            f"{ticks[where] * cfg.tick_s:.6g} s ({off[where]:.0%} off); lower --tick-s (e.g. to "
            f"a divisor of every compute time) or change --compute-s")
    # latencies run on the link's sub-tick clock: refuse one that rounds off by more than 1%
    latency_s = np.asarray(hp.latency_s, np.float64)
    sub_s = cfg.tick_s / cfg.link_resolution
    units = np.maximum(0, np.round(latency_s / sub_s))
    bad_latency = not_whole_subticks(latency_s, sub_s)
    if bad_latency.any():
        where = tuple(int(i) for i in np.argwhere(bad_latency)[0])
        raise ConfigError(
            f"HParams.latency_s{list(where)}={float(latency_s[where])!r} s is not a whole "
            f"number of link sub-ticks of {sub_s:.3g} s (tick_s / link_resolution): it would run "
            f"as {units[where] * sub_s:.6g} s; raise --link-resolution or lower --tick-s")
    loss_matrix(cfg)   # a malformed loss file is refused here, naming its line and column
    _, extra_ms = region_latency_ms(cfg)
    bad_extra = not_whole_subticks(extra_ms / 1e3, sub_s)
    if bad_extra.any():
        a, b = (int(i) for i in np.argwhere(bad_extra)[0])
        raise ConfigError(
            f"the latency added from region {a} to region {b}, {extra_ms[a, b]:.6g} ms, is not a "
            f"whole number of link sub-ticks of {sub_s:.3g} s that the int32 clock holds: raise "
            f"--link-resolution or lower --tick-s (or check --inter-region-ms / --latency-file)")


def not_whole_subticks(seconds: np.ndarray, sub_s: float) -> np.ndarray:
    """bool mask: latencies the link's sub-tick clock cannot hold, i.e. more than 1% off a
    whole number of sub-ticks, or too many sub-ticks for the int32 clock (host side)."""
    units = np.round(seconds / sub_s)
    return (np.abs(units * sub_s - seconds) > 0.01 * seconds) | (units >= 2**30)


def clock_fits(cfg: SimConfig, hp: HParams, fragment_bytes: np.ndarray) -> jax.Array:
    """() bool, traced: every node's timing is finite, valid and fits the int32 link clock.

    The host checks (`check_network`, `sim.resolve`) run when the engine is built; HParams
    given to `run(key, hp)` afterwards (a sweep, a custom grid) are checked here, and a value
    that does not fit raises ERR_CLOCK instead of overflowing into negative times."""
    tick, R = cfg.tick_s, cfg.link_resolution
    units = (jnp.asarray(fragment_bytes, jnp.float32)[None, :] / hp.upload_bps[:, None]
             / tick * R)
    limit = 2.0**30
    M = clock_messages(cfg)
    ok = (jnp.all(hp.upload_bps > 0) & jnp.all(hp.compute_s > 0) & jnp.all(hp.latency_s >= 0)
          & jnp.all(jnp.isfinite(units)) & jnp.all(jnp.isfinite(hp.compute_s))
          & jnp.all(jnp.isfinite(hp.latency_s)))
    ok &= jnp.max(units) * M + (cfg.num_ticks + 1.0) * R < limit
    ok &= jnp.max(hp.compute_s) / tick * R * longest_ticks(cfg, 1) < limit
    ok &= jnp.max(hp.latency_s) / tick * R < limit
    if download_limited(cfg):   # a message's download time on the same int32 clock
        down = jnp.asarray(fragment_bytes, jnp.float32)[None, :] / hp.download_bps[:, None]
        ok &= jnp.all(hp.download_bps > 0) & (jnp.max(down) / tick * R * M < limit)
    return ok


def longest_delay_ticks(cfg: SimConfig, table: LinkTable) -> int:
    """The longest time, in ticks, from enqueueing a message to its arrival.

    With a replaced queue (DivShare) a message must leave the link before its sender's next
    iteration end, c ticks later, so the delay is at most c + the latency's whole ticks.
    """
    return int(np.max(replaced_queue_delay_bound(cfg, table)))


def replaced_queue_delay_bound(cfg: SimConfig, table: LinkTable) -> jax.Array:
    """(..., n) the longest enqueue-to-arrival delay, in ticks, of a message of a queue that
    the sender's next iteration end replaces: it leaves within c ticks (with compute jitter,
    the longest iteration), then the latency."""
    return (longest_ticks(cfg, table.compute_ticks)
            + latency_ticks(table, cfg.link_resolution))


def ring_slots_for(cfg: SimConfig, delay, compute_ticks):
    """Ring slots that hold a message in flight for `delay` ticks, for cfg.delivery: one per
    tick (arrival_tick), or (receiver_iteration) the receiver's aggregations it may span: those
    in [next, ceil((t + delay) / c)], at most ceil(delay / c) + 1 with c its compute ticks.
    The one statement of what a delay needs of the ring: sizing (`ring_slots_needed`), the
    engine's init check of traced HParams, the memory model (through the sized config) and
    `push`'s per-message check (the exact span, never more than this) all follow it. Works on
    ints, numpy and traced arrays."""
    if cfg.delivery == "arrival_tick":
        return delay
    return (delay + compute_ticks - 1) // compute_ticks + 1


def ring_slots_needed(cfg: SimConfig, table: LinkTable, delay: int | None = None) -> int:
    """Smallest ring length that holds every message in flight, for cfg.delivery."""
    delay = longest_delay_ticks(cfg, table) if delay is None else delay
    return int(ring_slots_for(cfg, int(delay),
                              int(np.min(shortest_ticks(cfg, np.asarray(table.compute_ticks))))))


def finishers_per_tick(cfg: SimConfig, table: LinkTable) -> tuple[int, float]:
    """(the largest number of nodes that finish an iteration at one tick during the run, the
    mean number over the ticks at which any finishes), the worst over swept configs. With
    compute jitter or churn the key decides who finishes when: (n, the expected number
    finishing per tick, sum_i 1 / c_i)."""
    if has_table(cfg):
        rate = np.sum(1.0 / np.asarray(table.compute_ticks, np.float64).reshape(
            -1, cfg.n_nodes), axis=-1)
        return cfg.n_nodes, float(np.max(rate))
    c = np.asarray(table.compute_ticks).reshape(-1, cfg.n_nodes)
    T = cfg.num_ticks
    worst, mean = 1, 0.0
    for row in c:  # one row per swept config; host-side, once
        counts = np.zeros(T + 1, np.int64)
        for ci in np.unique(row):
            mult = int(np.sum(row == ci))
            counts[np.arange(ci, T + 1, ci)] += mult
        worst = max(worst, int(counts.max()))
        busy = counts[counts > 0]
        mean = max(mean, float(busy.mean()) if busy.size else 0.0)
    return worst, mean


class Schedule(NamedTuple):
    """Timing of the messages that each of C sending nodes queued at tick t (any trailing shape)."""

    sent: jax.Array        # (C, ...) bool: fully leaves the link before the queue is replaced
    leave_tick: jax.Array  # (C, ...) int32: tick at which it has fully left the link
    arrival: jax.Array     # (C, ...) int32: tick at which it reaches its receiver
    drop_tick: jax.Array   # (C,) int32: when the unsent rest of the queue is dropped
    enqueue_tick: jax.Array  # (C,) int32: the tick the messages were queued
    arrival_sub: jax.Array | None = None  # (C, ...) int32: absolute link sub-tick at which it
    #                        reaches the receiver (before any download queue; replaced queues)


def schedule_replaced_queue(table: LinkTable, sender: jax.Array, valid: jax.Array,
                            units: jax.Array, t: jax.Array, resolution: int,
                            receiver: jax.Array, next_end: jax.Array | None = None
                            ) -> Schedule:
    """Sequential sends from a queue that the sender's next iteration end replaces (DivShare).

    The link starts on the new queue at tick t (the old queue and the message on the wire were
    dropped just then). Message q of the queue has fully left after the link time of messages
    0..q; it is sent only if that is no later than the sender's next iteration end, t + c (or
    `next_end` (C,), with compute jitter), and dropped then otherwise.

    Args:
      sender: (C,) int32; valid: (C,) bool;
      units: (C, M) int32 link sub-ticks of each queued message, in queue order;
      receiver: (C, M) int32 their receivers (for the pair's latency).
    Returns: a Schedule whose per-message fields are (C, M), in queue order.
    """
    safe = jnp.minimum(sender, table.compute_ticks.shape[0] - 1)
    t = jnp.broadcast_to(t, safe.shape)                                     # () or (C,)
    if next_end is None:
        next_end = t + table.compute_ticks[safe]
    leave_rel = jnp.cumsum(units, axis=1)                                   # sub-ticks after t
    budget = ((next_end - t) * resolution)[:, None]                        # until next end
    sent = valid[:, None] & (leave_rel <= budget)
    leave_tick = t[:, None] + (leave_rel + resolution - 1) // resolution
    n = table.compute_ticks.shape[0]
    lat = pair_latency_units(table, safe[:, None], jnp.minimum(receiver, n - 1))
    arrival = t[:, None] + arrival_tick(leave_rel, lat, resolution)
    return Schedule(sent, leave_tick, arrival, next_end, t,
                    t[:, None] * resolution + leave_rel + lat)


def message_lost(cfg: SimConfig, k_spare: jax.Array, sender: jax.Array,
                 shape: tuple[int, ...], receiver: jax.Array | None = None) -> jax.Array | None:
    """(C, *shape) bool: which messages that C senders queue at one tick are lost on the way,
    each independently with probability `cfg.loss_rate`, or with the per-link probability of
    `loss_file` from the sender to its receiver (`receiver` (C, *shape), required then), drawn
    from the tick's spare key folded with the sender id (so the draw does not depend on
    chunking): one uniform u per message, lost when u < p. None without loss."""
    if not loss_modelled(cfg):
        return None
    if not cfg.loss_file:
        return jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(k_spare, i),
                                                       cfg.loss_rate, shape))(sender)
    if receiver is None:
        raise ValueError("message_lost with a loss_file needs each message's receiver")
    p = jnp.asarray(loss_matrix(cfg))
    n = cfg.n_nodes
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(k_spare, i), shape))(sender)
    return u < p[jnp.minimum(sender, n - 1).reshape((-1,) + (1,) * len(shape)),
                 jnp.minimum(receiver, n - 1)]
