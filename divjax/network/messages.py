"""Messages in flight: the ring buffer of payload sums, the counters, and `push`.

Messages in flight wait in a ring buffer of payload sums, indexed by when they will be consumed:
- `delivery="arrival_tick"`: slot (arrival tick) mod L; at every tick the slot of that tick is
  moved into each node's pending sum, which a node averages in when it finishes an iteration.
- `delivery="receiver_iteration"`: slot (index of the receiver's first aggregation at or after the
  arrival) mod B. Because compute times are known per node (fixed, or jittered from the run's
  key: `divjax.network.compute_schedule`), that index is known at send time, so
  the message goes straight to the aggregation that will use it. Results are identical (the tests
  check both against the reference simulator); memory is B n D floats with B ~ 2-3 instead of
  L n D with L = longest delay in ticks.
Either way a message is scattered once, at send time, into the slot it will be read from; it is
never visible before its arrival tick, and a delay longer than the ring is a config error.

The timing of every message (when it leaves its link, when it arrives) is `divjax.network.links`'s;
this module only stores what is in flight and hands an aggregating node what arrived.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from divjax.network.compute_schedule import window_index
from divjax.config import SimConfig
from divjax.network.links import LinkTable, Schedule
from divjax.engine.rows import add_rows, get_rows, padded_rows, set_rows, zero_rows


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
    ring_lost: jax.Array      # (Lc, n) int32: messages to receiver n lost on the way (that tick)
    lost: jax.Array           # (n,) int32: messages to receiver n lost on the way (loss_rate)


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
                    z(n), z(ticks, n), z(n))


def tick_counters(counters: Counters, t: jax.Array) -> Counters:
    """Fold the counter events of tick t into the totals and clear their slot."""
    s = t % counters.ring_sent.shape[0]
    return counters._replace(
        sent=counters.sent + counters.ring_sent[s],
        dropped=counters.dropped + counters.ring_dropped[s],
        delivered=counters.delivered + counters.ring_delivered[s],
        replaced=counters.replaced + counters.ring_replaced[s],
        lost=counters.lost + counters.ring_lost[s],
        ring_lost=counters.ring_lost.at[s].set(0),
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
            table: LinkTable, t: jax.Array):
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
    _, safe, drop = padded_rows(node, n, valid)
    if cfg.delivery == "arrival_tick":
        got_total = get_rows(inbox.pending_total, (safe,))
        got_count = get_rows(inbox.pending_count, (safe,))
        slot = jnp.zeros_like(safe)
    else:
        slot = window_index(table, safe, t) % inbox.total.shape[0]  # this aggregation's index
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


def push(cfg: SimConfig, inbox: Inbox, counters: Counters, table: LinkTable, sched: Schedule,
         sender: jax.Array, valid: jax.Array, receiver: jax.Array,
         payload: jax.Array, replaced: jax.Array | None = None, lost: jax.Array | None = None
         ) -> tuple[Inbox, Counters, jax.Array]:
    """Scatter queued messages into the ring slot they will be read from; time the counters.

    `replaced` (C, J, K) bool, optional: sent messages that a newer message from the same
    sender (and fragment) replaces in the receiver's inbox before it aggregates (the "latest"
    rule; the caller knows it from the schedule). They are sent, counted as delivered and as
    replaced, but their payload is never scattered: it would not be averaged in.
    `lost` (C, J, K) bool, optional: sent messages lost on the way (`message_lost`): they
    occupy the link and count as sent, never as delivered; counted in `counters.lost` of
    their receiver.

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
    arrives = sched.sent if lost is None else sched.sent & ~lost
    recv_all = jnp.where(arrives, receiver, n)                       # unsent/lost: out of range
    counted = arrives if replaced is None else arrives & ~replaced
    recv_pay = jnp.where(counted, receiver, n)                       # payloads that count
    if cfg.delivery == "arrival_tick":
        slot_all = sched.arrival % inbox.total.shape[0]
    else:
        r_safe = jnp.minimum(jnp.where(sched.sent, receiver, n), n - 1)
        window = window_index(table, r_safe, sched.arrival)
        slot_all = window % inbox.total.shape[0]
    R = inbox.total.shape[0]
    if cfg.delivery == "arrival_tick":
        span = sched.arrival - sched.enqueue_tick[:, None, None]       # ticks in flight
    else:
        # the receiver's slots free at tick t belong to its aggregations after t (one that
        # aggregates at t keeps that slot until the next tick clears it): aggregations
        # ceil(t / c) .. ceil(t / c) + R - 1, counting t's own only if it is still to come
        enq = jnp.broadcast_to(sched.enqueue_tick[:, None, None], r_safe.shape)
        span = window - window_index(table, r_safe, enq) + 1
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
        ring_lost=counters.ring_lost if lost is None else
        counters.ring_lost.at[sched.arrival % Lc,
                              jnp.where(sched.sent & lost, receiver, n)].add(1, mode="drop"),
        ring_dropped=counters.ring_dropped.at[sched.drop_tick % Lc,
                                              jnp.where(valid, sender, n)].add(
            n_dropped, mode="drop"),
    )
    return inbox, counters, too_late
