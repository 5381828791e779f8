"""The simulated clock and network: compute times, upload links, latency, and messages in flight.

Time is an integer tick of `cfg.tick_s` seconds. Every node i has
- a compute time of `compute_ticks[i]` ticks per iteration (all its local steps); node i finishes
  iterations at ticks c_i, 2 c_i, 3 c_i, ... (all nodes start at tick 0);
- an upload link that sends queued messages one after another. A link keeps its own finer clock
  of `cfg.link_resolution` sub-ticks per tick, so a queue of small fragments is timed exactly:
  fragment k occupies node i's link for `msg_units[i, k]` sub-ticks (bytes / bandwidth, rounded
  up to one sub-tick);
- a latency of `latency_units[i]` link sub-ticks from the moment a message has fully left the
  link to its arrival at the receiver.

A message that leaves the link during tick t (sub-tick in ((t-1)R, tR]) is sent at tick t. It
arrives at the first tick at or after its leave sub-tick plus the latency: the time is rounded
to the tick once, on the arrival (`arrival_tick`), never separately on the leave time and the
latency. At one tick, arrivals happen before iteration ends, so a message that arrives at the
tick its receiver aggregates is averaged in.

Messages in flight wait in a ring buffer of payload sums, indexed by when they will be consumed:
- `delivery="arrival_tick"`: slot (arrival tick) mod L; at every tick the slot of that tick is
  moved into each node's pending sum, which a node averages in when it finishes an iteration.
- `delivery="receiver_iteration"`: slot (index of the receiver's first aggregation at or after the
  arrival) mod B. Because compute times are fixed per node, that index is known at send time, so
  the message goes straight to the aggregation that will use it. Results are identical (the tests
  check both against the reference simulator); memory is B n D floats with B ~ 2-3 instead of
  L n D with L = longest delay in ticks.
Either way a message is scattered once, at send time, into the slot it will be read from; it is
never visible before its arrival tick, and a delay longer than the ring is a config error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import ConfigError, HParams, SimConfig
from divjax.rows import add_rows, get_rows, set_rows, zero_rows

DELIVERY_MODES = ("arrival_tick", "receiver_iteration")


class LinkTable(NamedTuple):
    """Integer timing of every node, derived from HParams (traced; vmappable)."""

    compute_ticks: jax.Array  # (n,) int32: ticks per iteration, >= 1
    latency_units: jax.Array  # (n,) int32: link sub-ticks from leaving the link to arrival, >= 0
    msg_units: jax.Array      # (n, K) int32: link sub-ticks node i needs to send fragment k, >= 1


def latency_ticks(table: LinkTable, resolution: int) -> jax.Array:
    """(..., n) the most whole ticks a latency adds to a message's delay (ceil(units / R)):
    arrival_tick(leave, lat) <= ceil(leave / R) + this, so it bounds delays for ring sizing."""
    return (table.latency_units + resolution - 1) // resolution


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
    units_f = (jnp.asarray(fragment_bytes, jnp.float32)[None, :] / hp.upload_bps[:, None]
               / tick * cfg.link_resolution)
    units = jnp.maximum(1, jnp.ceil(units_f - 1e-3)).astype(jnp.int32)
    return LinkTable(compute, latency, units)


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
    off = np.abs(units * sub_s - latency_s)
    bad_latency = off > 0.01 * latency_s
    if bad_latency.any():
        where = tuple(int(i) for i in np.argwhere(bad_latency)[0])
        raise ConfigError(
            f"HParams.latency_s{list(where)}={float(latency_s[where])!r} s is not a whole "
            f"number of link sub-ticks of {sub_s:.3g} s (tick_s / link_resolution): it would run "
            f"as {units[where] * sub_s:.6g} s; raise --link-resolution or lower --tick-s")


def clock_fits(cfg: SimConfig, hp: HParams, fragment_bytes: np.ndarray) -> jax.Array:
    """() bool, traced: every node's timing is finite, valid and fits the int32 link clock.

    The host checks (`check_network`, `sim.resolve`) run when the engine is built; HParams
    given to `run(key, hp)` afterwards (a sweep, a custom grid) are checked here, and a value
    that does not fit raises ERR_CLOCK instead of overflowing into negative times."""
    tick, R = cfg.tick_s, cfg.link_resolution
    units = (jnp.asarray(fragment_bytes, jnp.float32)[None, :] / hp.upload_bps[:, None]
             / tick * R)
    limit = 2.0**30
    M = max(1, cfg.messages_per_iteration, cfg.n_nodes * max(1, cfg.fanout // 2))
    ok = (jnp.all(hp.upload_bps > 0) & jnp.all(hp.compute_s > 0) & jnp.all(hp.latency_s >= 0)
          & jnp.all(jnp.isfinite(units)) & jnp.all(jnp.isfinite(hp.compute_s))
          & jnp.all(jnp.isfinite(hp.latency_s)))
    ok &= jnp.max(units) * M + (cfg.num_ticks + 1.0) * R < limit
    ok &= jnp.max(hp.compute_s) / tick * R < limit
    ok &= jnp.max(hp.latency_s) / tick * R < limit
    return ok


def longest_delay_ticks(table: LinkTable, resolution: int) -> int:
    """The longest time, in ticks, from enqueueing a message to its arrival.

    With a replaced queue (DivShare) a message must leave the link before its sender's next
    iteration end, c ticks later, so the delay is at most c + the latency's whole ticks.
    """
    return int(np.max(replaced_queue_delay_bound(table, resolution)))


def replaced_queue_delay_bound(table: LinkTable, resolution: int) -> jax.Array:
    """(..., n) the longest enqueue-to-arrival delay, in ticks, of a message of a queue that
    the sender's next iteration end replaces: it leaves within c ticks, then the latency."""
    return table.compute_ticks + latency_ticks(table, resolution)


def ring_slots_needed(cfg: SimConfig, table: LinkTable, delay: int | None = None) -> int:
    """Smallest ring length that holds every message in flight, for cfg.delivery."""
    delay = longest_delay_ticks(table, cfg.link_resolution) if delay is None else delay
    if cfg.delivery == "arrival_tick":
        return delay
    # receiver_iteration: messages for receiver r in flight target its aggregations in
    # [next, ceil((t + delay) / c_r)], at most ceil(delay / c_r) + 1 of them.
    c_min = int(np.min(table.compute_ticks))
    return int(math.ceil(delay / c_min)) + 1


def max_simultaneous_finishers(cfg: SimConfig, table: LinkTable) -> int:
    """The largest number of nodes that finish an iteration at one tick during the run."""
    c = np.asarray(table.compute_ticks).reshape(-1, cfg.n_nodes)
    T = cfg.num_ticks
    worst = 1
    for row in c:  # one row per swept config; host-side, once
        counts = np.zeros(T + 1, np.int64)
        for ci in np.unique(row):
            mult = int(np.sum(row == ci))
            counts[np.arange(ci, T + 1, ci)] += mult
        worst = max(worst, int(counts.max()))
    return worst


class Inbox(NamedTuple):
    """Messages in flight and arrived-but-not-averaged payloads.

    R = L (arrival_tick) or B (receiver_iteration) slots. `collect` only reads the payloads of
    the nodes that aggregate; their entries are zeroed at the start of the next tick
    (`clear_collected`). Reading and clearing a slot in the same step makes XLA copy the whole
    ring (it cannot order the read before the in-place write); across ticks they are ordered by
    the loop itself, so every write to the ring is in place.
    """

    total: jax.Array          # (R, n, K, F) float32: summed payloads per slot, receiver, fragment
    count: jax.Array          # (R, n, K) float32: number of payloads summed there
    pending_total: jax.Array  # (n, K, F) float32 (arrival_tick) or (0, K, F): arrived, not averaged
    pending_count: jax.Array  # (n, K) float32 (arrival_tick) or (0, K)
    clear_slot: jax.Array     # (C,) int32: ring slot (receiver_iteration) collected last tick
    clear_node: jax.Array     # (C,) int32: nodes collected last tick, n = none


class Counters(NamedTuple):
    """Per-node message counters, timed exactly by a small tick ring (Lc = longest delay + 1)."""

    ring_sent: jax.Array      # (Lc, n, K) int32: messages of sender n, fragment k, leaving at tick
    ring_dropped: jax.Array   # (Lc, n) int32: messages of sender n dropped at that tick
    ring_delivered: jax.Array  # (Lc, n) int32: messages arriving at receiver n at that tick
    ring_replaced: jax.Array  # (Lc, n) int32: arrivals at receiver n (that tick) that a newer
    #                           message from the same sender (and fragment) replaces in the inbox
    sent: jax.Array           # (n, K) int32: messages fully sent, per sender and fragment
    dropped: jax.Array        # (n,) int32: messages dropped from sender n's queue (or wire)
    delivered: jax.Array      # (n,) int32: messages that arrived at receiver n
    replaced: jax.Array       # (n,) int32: of those, replaced before the receiver aggregated
    #                           (inbox "latest"; always 0 with inbox "sum")


def init_inbox(cfg: SimConfig, slots: int, K: int, F: int, capacity: int = 1) -> Inbox:
    """Empty ring of `slots` slots; `capacity` = most nodes collected at one tick."""
    n = cfg.n_nodes
    pend = n if cfg.delivery == "arrival_tick" else 0
    return Inbox(
        total=jnp.zeros((slots, n, K, F), jnp.float32),
        count=jnp.zeros((slots, n, K), jnp.float32),
        pending_total=jnp.zeros((pend, K, F), jnp.float32),
        pending_count=jnp.zeros((pend, K), jnp.float32),
        clear_slot=jnp.zeros((capacity,), jnp.int32),
        clear_node=jnp.full((capacity,), n, jnp.int32),
    )


def init_counters(n: int, K: int, ticks: int) -> Counters:
    z = lambda *s: jnp.zeros(s, jnp.int32)  # noqa: E731
    return Counters(z(ticks, n, K), z(ticks, n), z(ticks, n), z(ticks, n), z(n, K), z(n), z(n),
                    z(n))


def tick_counters(counters: Counters, t: jax.Array) -> Counters:
    """Fold the counter events of tick t into the totals and clear their slot."""
    s = t % counters.ring_sent.shape[0]
    return counters._replace(
        sent=counters.sent + counters.ring_sent[s],
        dropped=counters.dropped + counters.ring_dropped[s],
        delivered=counters.delivered + counters.ring_delivered[s],
        replaced=counters.replaced + counters.ring_replaced[s],
        ring_sent=counters.ring_sent.at[s].set(0),
        ring_dropped=counters.ring_dropped.at[s].set(0),
        ring_delivered=counters.ring_delivered.at[s].set(0),
        ring_replaced=counters.ring_replaced.at[s].set(0),
    )


def arrive(cfg: SimConfig, inbox: Inbox, t: jax.Array) -> Inbox:
    """arrival_tick mode: move what arrives at tick t into the pending sums; clear that slot."""
    if cfg.delivery != "arrival_tick":
        return inbox
    s = t % inbox.total.shape[0]
    return inbox._replace(
        pending_total=inbox.pending_total + inbox.total[s],
        pending_count=inbox.pending_count + inbox.count[s],
        total=inbox.total.at[s].set(0.0),
        count=inbox.count.at[s].set(0.0),
    )


def collect(cfg: SimConfig, inbox: Inbox, node: jax.Array, valid: jax.Array,
            compute_ticks: jax.Array, t: jax.Array):
    """Read the arrived payloads of the nodes aggregating at tick t (at most once per tick).

    Their inbox entries are zeroed by `clear_collected` at the start of the next tick; until
    then nothing can arrive there (a message sent at t arrives after t, so it joins a later
    aggregation, hence another ring slot).

    Args:
      node: (C,) int32 ids of the aggregating nodes (entries with valid=False are padding);
        C must not exceed the capacity the inbox was built with.
    Returns:
      (inbox, got_total (C, K, F), got_count (C, K)).
    """
    n = cfg.n_nodes
    drop = jnp.where(valid, node, n)
    safe = jnp.minimum(node, n - 1)
    if cfg.delivery == "arrival_tick":
        got_total = get_rows(inbox.pending_total, (safe,))
        got_count = get_rows(inbox.pending_count, (safe,))
        slot = jnp.zeros_like(safe)
    else:
        slot = (t // compute_ticks[safe]) % inbox.total.shape[0]  # this aggregation's index
        got_total = get_rows(inbox.total, (slot, safe))
        got_count = get_rows(inbox.count, (slot, safe))
    C = inbox.clear_node.shape[0]
    if node.shape[0] > C:
        raise ValueError(f"collect of {node.shape[0]} nodes but the inbox clears at most {C}")
    pad = C - node.shape[0]
    inbox = inbox._replace(clear_slot=jnp.pad(slot, (0, pad)).astype(jnp.int32),
                           clear_node=jnp.pad(drop, (0, pad), constant_values=n).astype(jnp.int32))
    return inbox, got_total, got_count


def clear_collected(cfg: SimConfig, inbox: Inbox) -> Inbox:
    """Zero what `collect` read at the previous tick (call first thing in a tick)."""
    n = cfg.n_nodes
    slot, node = inbox.clear_slot, inbox.clear_node

    # model rows are zeroed one dynamic_update_slice at a time (`rows.zero_rows`: no zeros
    # buffer of every collected model), in chunks of iteration_chunk entries so that only the
    # chunks holding collected nodes are visited
    C = node.shape[0]
    ch = cfg.iteration_chunk if 0 < cfg.iteration_chunk < C else C
    chunks = -(-C // ch)
    slot_p = jnp.pad(slot, (0, chunks * ch - C))
    node_p = jnp.pad(node, (0, chunks * ch - C), constant_values=n)

    def clear_chunk(i, inbox: Inbox) -> Inbox:
        s = jax.lax.dynamic_slice(slot_p, (i * ch,), (ch,))
        r = jax.lax.dynamic_slice(node_p, (i * ch,), (ch,))
        if cfg.delivery == "arrival_tick":
            return inbox._replace(
                pending_total=zero_rows(inbox.pending_total, (r,)),
                pending_count=set_rows(inbox.pending_count, (r,), 0.0))
        return inbox._replace(total=zero_rows(inbox.total, (s, r)),
                              count=set_rows(inbox.count, (s, r), 0.0))

    def clear(inbox: Inbox) -> Inbox:
        if chunks == 1:
            inbox = clear_chunk(0, inbox)
        else:
            inbox = jax.lax.fori_loop(0, (jnp.sum(node < n) + ch - 1) // ch, clear_chunk, inbox)
        return inbox._replace(clear_node=jnp.full_like(node, n))

    return jax.lax.cond(jnp.any(node < n), clear, lambda i: i, inbox)


class Schedule(NamedTuple):
    """Timing of the messages that each of C sending nodes queued at tick t (any trailing shape)."""

    sent: jax.Array        # (C, ...) bool: fully leaves the link before the queue is replaced
    leave_tick: jax.Array  # (C, ...) int32: tick at which it has fully left the link
    arrival: jax.Array     # (C, ...) int32: tick at which it reaches its receiver
    drop_tick: jax.Array   # (C,) int32: when the unsent rest of the queue is dropped
    enqueue_tick: jax.Array  # (C,) int32: the tick the messages were queued


def schedule_replaced_queue(table: LinkTable, sender: jax.Array, valid: jax.Array,
                            units: jax.Array, t: jax.Array, resolution: int) -> Schedule:
    """Sequential sends from a queue that the sender's next iteration end replaces (DivShare).

    The link starts on the new queue at tick t (the old queue and the message on the wire were
    dropped just then). Message q of the queue has fully left after the link time of messages
    0..q; it is sent only if that is no later than the sender's next iteration end, t + c, and
    dropped then otherwise.

    Args:
      sender: (C,) int32; valid: (C,) bool;
      units: (C, M) int32 link sub-ticks of each queued message, in queue order.
    Returns: a Schedule whose per-message fields are (C, M), in queue order.
    """
    safe = jnp.minimum(sender, table.compute_ticks.shape[0] - 1)
    t = jnp.broadcast_to(t, safe.shape)                                     # () or (C,)
    leave_rel = jnp.cumsum(units, axis=1)                                   # sub-ticks after t
    budget = (table.compute_ticks[safe] * resolution)[:, None]             # until next end
    sent = valid[:, None] & (leave_rel <= budget)
    leave_tick = t[:, None] + (leave_rel + resolution - 1) // resolution
    arrival = t[:, None] + arrival_tick(leave_rel, table.latency_units[safe][:, None],
                                        resolution)
    return Schedule(sent, leave_tick, arrival, t + table.compute_ticks[safe], t)


def aggregation_index(arrival: jax.Array, receiver_compute: jax.Array) -> jax.Array:
    """Index g of the receiver's first aggregation at or after `arrival` (it aggregates at ticks
    g * c, and arrivals come before iteration ends): the inbox window a message lands in.
    Under the "latest" rule, of the messages of one sender (and fragment) that land in the same
    window only the newest counts."""
    return (arrival + receiver_compute - 1) // receiver_compute


def push(cfg: SimConfig, inbox: Inbox, counters: Counters, table: LinkTable, sched: Schedule,
         sender: jax.Array, valid: jax.Array, receiver: jax.Array,
         payload: jax.Array, replaced: jax.Array | None = None
         ) -> tuple[Inbox, Counters, jax.Array]:
    """Scatter queued messages into the ring slot they will be read from; time the counters.

    `replaced` (C, J, K) bool, optional: sent messages that a newer message from the same
    sender (and fragment) replaces in the receiver's inbox before it aggregates (the "latest"
    rule; the caller knows it from the schedule). They are sent, counted as delivered and as
    replaced, but their payload is never scattered: it would not be averaged in.

    Returns (inbox, counters, too_late): too_late is a () bool, True if a sent message's delay
    exceeds what the rings were sized for (the caller raises ERR_RING_TOO_SHORT; never silent).

    Messages are laid out in fragment order: message (c, j, k) carries fragment k of sender c's
    payload to receiver[c, j, k] (j = copy). The payload is scattered straight from the (C, K, F)
    array, once per copy, so no (C, J, K, F) buffer is built.

    Args:
      sender: (C,) int32; valid: (C,) bool; receiver: (C, J, K) int32;
      sched: Schedule with (C, J, K) fields; payload: (C, K, F) float32.
    """
    n = cfg.n_nodes
    C, J, K = receiver.shape
    frag = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32), (C, K))
    Lc = counters.ring_sent.shape[0]
    recv_all = jnp.where(sched.sent, receiver, n)                    # unsent: out of range
    counted = sched.sent if replaced is None else sched.sent & ~replaced
    recv_pay = jnp.where(counted, receiver, n)                       # payloads that count
    if cfg.delivery == "arrival_tick":
        slot_all = sched.arrival % inbox.total.shape[0]
    else:
        c_recv = table.compute_ticks[jnp.minimum(recv_all, n - 1)]
        slot_all = ((sched.arrival + c_recv - 1) // c_recv) % inbox.total.shape[0]
    R = inbox.total.shape[0]
    if cfg.delivery == "arrival_tick":
        span = sched.arrival - sched.enqueue_tick[:, None, None]       # ticks in flight
    else:
        # the receiver's slots free at tick t belong to its aggregations after t (one that
        # aggregates at t keeps that slot until the next tick clears it): aggregations
        # ceil(t / c) .. ceil(t / c) + R - 1, counting t's own only if it is still to come
        enq = sched.enqueue_tick[:, None, None]
        span = ((sched.arrival + c_recv - 1) // c_recv - (enq + c_recv - 1) // c_recv) + 1
    too_late = jnp.any(sched.sent & ((span > R) | (
        sched.arrival - sched.enqueue_tick[:, None, None] >= Lc)))
    total, count = inbox.total, inbox.count
    for j in range(J):  # static and small (fanout): one fragment-order scatter per copy
        recv, slot = recv_pay[:, j], slot_all[:, j]
        total = add_rows(total, (slot, recv, frag), payload)
        count = add_rows(count, (slot, recv, frag), 1.0)
    inbox = inbox._replace(total=total, count=count)
    snd = jnp.where(sched.sent, sender[:, None, None], n)
    fr = jnp.broadcast_to(frag[:, None, :], (C, J, K))
    n_dropped = jnp.sum(valid[:, None, None] & ~sched.sent, axis=(1, 2)).astype(jnp.int32)
    counters = counters._replace(
        ring_sent=counters.ring_sent.at[sched.leave_tick % Lc, snd, fr].add(1, mode="drop"),
        ring_delivered=counters.ring_delivered.at[sched.arrival % Lc, recv_all].add(
            1, mode="drop"),
        ring_replaced=counters.ring_replaced if replaced is None else
        counters.ring_replaced.at[sched.arrival % Lc,
                                  jnp.where(sched.sent & replaced, receiver, n)].add(
            1, mode="drop"),
        ring_dropped=counters.ring_dropped.at[sched.drop_tick % Lc,
                                              jnp.where(valid, sender, n)].add(
            n_dropped, mode="drop"),
    )
    return inbox, counters, too_late
