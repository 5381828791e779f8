"""AD-PSGD's per-message records: its ping table and, for the "latest" inbox rule, what every
ping and pong that arrives carries, in O(n * ping_slots) memory (never per pair of nodes).

Every exchange is a ping i -> r and the pong r -> i that answers it, so every message has a
place in the pinger's ping table: the j-th ping node i sends is at [i, j mod Q], and the pong
answering it at the same entry. The "latest" rule asks, for a model s sends to r, which model
s sent to r last (its arrival tick and snapshot version): if it lands in the same inbox window
of r, the newer one replaces it. That model is the arriving message of the largest queue index
of s among
  - the pings s -> r, in row s (receiver r), and
  - the pongs s -> r, in row r (the pings r -> s that s has answered),
(`last_on_link`: a scan of two rows of Q, where a record per ordered pair would be n^2).
Queue indices (`QueueState.enqueued` before the append, plus the message's position) order a
sender's messages as the engine queues them, so this is the record a per-pair table would hold.

A table entry is written over when its pinger sends Q more pings. That is refused (the caller
raises ERR_RING_TOO_SHORT, naming --ping-slots), never silent, while the entry still matters:
its ping is in flight, or its ping's or pong's receiver has not yet aggregated the window the
message lands in (a later model of the same sender could still replace it).
`adpsgd_network.ping_slots_needed` sizes Q so that this cannot happen without churn.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from divjax.network.compute_schedule import window_index
from divjax.config import SimConfig
from divjax.network.messages import Inbox
from divjax.engine.rows import add_rows, get_rows


class LinkRecords(NamedTuple):
    """The "latest" rule's records, one per ping-table entry ((0, Q) with inbox="sum")."""

    ping_version: jax.Array  # (n, Q) int32: snapshot version the ping at [i, j] carries
    ping_order: jax.Array    # (n, Q) int32: its index in i's queue (-1: none, or it is lost)
    pong_arrival: jax.Array  # (n, Q) int32: arrival tick of the pong answering it
    pong_version: jax.Array  # (n, Q) int32: the responder's snapshot version it carries
    pong_order: jax.Array    # (n, Q) int32: its index in the responder's queue (-1: no pong
    #                          that arrives, or not answered yet)


def init_records(m: int, Q: int) -> LinkRecords:
    z = jnp.zeros((m, Q), jnp.int32)
    return LinkRecords(z, z - 1, z - 1, z, z - 1)


# Entries the scans of `last_on_link` compare at once (C J Q): larger batches are scanned in
# rows of at most this many entries (lax.map), bounding the temporaries when many nodes end an
# iteration together at large n.
SCAN_ENTRIES = 1 << 22


def last_on_link(a, sender: jax.Array, recv: jax.Array, n: int):
    """The last arriving model each of C `sender`s (n: padding) sent to `recv` (C, J) before
    now. Returns (found, arrival, version), each (C, J)."""
    C, J = recv.shape
    Q = a.ping_arrival.shape[1]
    if C * J * Q <= SCAN_ENTRIES:
        return _last_on_link(a, sender, recv, n)
    rows = max(1, SCAN_ENTRIES // (J * Q))
    one = lambda x: tuple(y[0] for y in _last_on_link(a, x[0][None], x[1][None], n))  # noqa: E731
    return jax.lax.map(one, (sender, recv), batch_size=rows)


def _last_on_link(a, sender: jax.Array, recv: jax.Array, n: int):
    s = jnp.minimum(sender, n - 1)
    r = jnp.minimum(recv, n - 1)
    rec = a.records
    # pings s -> r: row s
    o1 = jnp.where(a.ping_receiver[s][:, None, :] == recv[:, :, None],
                   rec.ping_order[s][:, None, :], -1)                            # (C, J, Q)
    j1 = jnp.argmax(o1, axis=-1)
    best1 = jnp.max(o1, axis=-1)
    # pongs s -> r: row r, the pings r -> s that s answered
    o2 = jnp.where(a.ping_receiver[r] == sender[:, None, None], rec.pong_order[r], -1)
    j2 = jnp.argmax(o2, axis=-1)
    best2 = jnp.max(o2, axis=-1)
    pong = best2 > best1
    s_b = jnp.broadcast_to(s[:, None], r.shape)
    arrival = jnp.where(pong, rec.pong_arrival[r, j2], a.ping_arrival[s_b, j1])
    version = jnp.where(pong, rec.pong_version[r, j2], rec.ping_version[s_b, j1])
    return jnp.maximum(best1, best2) >= 0, arrival, version


def retract_replaced(cfg: SimConfig, table, inbox: Inbox, counters, a, sender: jax.Array,
                     recv: jax.Array, sent: jax.Array, arrival: jax.Array, version: jax.Array,
                     t: jax.Array):
    """The "latest" rule for full models queued at tick t: what the newest of each sender
    replaces in the receivers' inboxes (the caller records the new messages afterwards).

    Args:
      sender: (C,) int32 (n = padding); recv, sent, arrival: (C, J) in queue order;
      version: (C,) int32 snapshot version the messages carry.
    Returns: (inbox, counters, replaced (C, J): messages of this batch that a later message of
      the same batch replaces (not to be scattered), error flag () bool: a replaced model's
      snapshot has left the history, read () int32: a value of everything read from the
      records, for `after`).
    """
    n, K = cfg.n_nodes, inbox.total.shape[2]
    H = a.history.shape[0]
    C, J = recv.shape
    safe = jnp.minimum(sender, n - 1)
    r = jnp.minimum(recv, n - 1)
    window = window_index(table, r, arrival)                                     # (C, J)
    same_r = (recv[:, :, None] == recv[:, None, :]) & sent[:, None, :]           # (C, J, J')
    later = jnp.triu(jnp.ones((J, J), bool), 1)                                  # j' > j
    earlier = later.T
    # (a newer model arriving at or after the run's end replaces nothing within it)
    in_run = (arrival < cfg.num_ticks)[:, None, :]
    replaced = sent & jnp.any(same_r & later & in_run
                              & (window[:, :, None] == window[:, None, :]), axis=2)
    first = sent & ~jnp.any(same_r & earlier, axis=2)
    s_b = jnp.broadcast_to(safe[:, None], (C, J))
    found, old_a, old_v = last_on_link(a, sender, recv, n)
    retract = first & found & (window_index(table, r, jnp.maximum(old_a, 0)) == window)
    lost = jnp.any(retract & (version[:, None] - old_v >= H))

    def subtract(inbox: Inbox) -> Inbox:
        """Take the replaced models out of the receivers' sums (gathers C J models: only run
        when some message does replace one)."""
        old = get_rows(a.history, (old_v % H, s_b))                              # (C, J, K, F)
        minus = jnp.full((C, J, K), -1.0, jnp.float32)
        if cfg.delivery == "arrival_tick":
            ahead = retract & (old_a > t)                                        # still in flight
            arrived = retract & (old_a <= t)
            slot = old_a % inbox.total.shape[0]
            tgt = jnp.where(ahead, recv, n)
            total = add_rows(inbox.total, (slot, tgt), -old)
            count = add_rows(inbox.count, (slot, tgt), minus)
            tgt = jnp.where(arrived, recv, n)
            return inbox._replace(
                total=total, count=count,
                pending_total=add_rows(inbox.pending_total, (tgt,), -old),
                pending_count=add_rows(inbox.pending_count, (tgt,), minus))
        slot = window % inbox.total.shape[0]
        tgt = jnp.where(retract, recv, n)
        return inbox._replace(total=add_rows(inbox.total, (slot, tgt), -old),
                              count=add_rows(inbox.count, (slot, tgt), minus))

    inbox = jax.lax.cond(jnp.any(retract), subtract, lambda box: box, inbox)
    Lc = counters.ring_replaced.shape[0]
    counters = counters._replace(ring_replaced=counters.ring_replaced.at[
        arrival % Lc, jnp.where(retract, recv, n)].add(K, mode="drop"))
    read = jnp.maximum(jnp.max(found.astype(jnp.int32)), jnp.maximum(jnp.max(old_a),
                                                                      jnp.max(old_v)))
    return inbox, counters, replaced, lost, read


def after(x: jax.Array, read: jax.Array) -> jax.Array:
    """x (int32) itself, computed from `read` ((), int32): min(x, max(x, read)) == x. Written
    into arrays that `read` was gathered from, it orders the write after those reads, so XLA
    updates them in place (without it XLA copies them, O(n Q), at every chunk of pongs)."""
    return jnp.minimum(x, jnp.maximum(x, read))


def still_needed(a, table, row: jax.Array, pos: jax.Array, t: jax.Array) -> jax.Array:
    """(C, p) bool: entry [row, pos] ((C, p), rows in range) still matters at tick t: a later
    model could land in the inbox window its ping or its pong lands in (conservative)."""
    rec = a.records
    pr = a.ping_receiver[row, pos]
    pa = a.ping_arrival[row, pos]
    ping = (rec.ping_order[row, pos] >= 0) & (
        window_index(table, pr, jnp.maximum(pa, 0)) >= window_index(table, pr, t))
    ga = rec.pong_arrival[row, pos]
    pong = (rec.pong_order[row, pos] >= 0) & (
        window_index(table, row, jnp.maximum(ga, 0)) >= window_index(table, row, t))
    return ping | pong


def record_pings(a, node: jax.Array, recv: jax.Array, sent: jax.Array, arrival: jax.Array,
                 t: jax.Array, n: int, version: jax.Array | None = None,
                 order: jax.Array | None = None, table=None):
    """Write the sent pings (C, p) of the nodes `node` (C,) at tick t into their ping tables.

    A node's pings take its table's slots in the order they were sent (the j-th at j mod Q).
    `sent` is a prefix of each row (a ping queued after one that leaves after the run's end
    leaves after it too); `arrival` is -1 for a ping that never arrives (lost). With the
    "latest" rule, `version` (C,) and `order` (C, p) (queue indices) are recorded too, the
    entry's old pong is cleared, and `table` decides `still_needed`. Returns (algo_state,
    overflow: () bool, a slot still held a ping in flight or a record that still matters)."""
    Q = a.ping_arrival.shape[1]
    safe = jnp.minimum(node, n - 1)
    pos = (a.ping_tail[safe][:, None] + jnp.arange(sent.shape[1], dtype=jnp.int32)) % Q
    row = jnp.where(sent & (node < n)[:, None], safe[:, None], n)                 # (C, p)
    held = a.ping_arrival[safe[:, None], pos] > t
    if version is not None:
        held = held | still_needed(a, table, jnp.broadcast_to(safe[:, None], pos.shape), pos, t)
    overflow = (jnp.any((row < n) & held)
                | jnp.any(jnp.sum(row < n, axis=1) > Q))     # more pings at once than slots
    new_tail = a.ping_tail[safe] + jnp.sum(sent, axis=1).astype(jnp.int32)
    a = a._replace(
        ping_arrival=a.ping_arrival.at[row, pos].set(arrival, mode="drop"),
        ping_receiver=a.ping_receiver.at[row, pos].set(recv, mode="drop"),
        ping_tail=a.ping_tail.at[jnp.where(node < n, node, n)].set(new_tail, mode="drop"))
    if version is not None:
        rec = a.records
        a = a._replace(records=rec._replace(
            ping_version=rec.ping_version.at[row, pos].set(
                jnp.broadcast_to(version[:, None], pos.shape), mode="drop"),
            ping_order=rec.ping_order.at[row, pos].set(
                jnp.where(arrival >= 0, order, -1), mode="drop"),
            pong_order=rec.pong_order.at[row, pos].set(-1, mode="drop")))
    return a, overflow


def record_pongs(a, pinger: jax.Array, slot: jax.Array, arrives: jax.Array,
                 arrival: jax.Array, version: jax.Array, order: jax.Array, n: int,
                 read: jax.Array):
    """Record the pongs (B,) answering the pings at [pinger, slot] that arrive (pinger n:
    none): their arrival tick, snapshot version and queue index (`read`: what the caller read
    from the records before, see `after`)."""
    row = jnp.where(arrives & (pinger < n), pinger, n)
    arrival, version, order = (after(x, read) for x in (arrival, version, order))
    rec = a.records
    return a._replace(records=rec._replace(
        pong_arrival=rec.pong_arrival.at[row, slot].set(arrival, mode="drop"),
        pong_version=rec.pong_version.at[row, slot].set(version, mode="drop"),
        pong_order=rec.pong_order.at[row, slot].set(order, mode="drop")))


def due_pings(a, t: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The pings arriving at tick t: (key (n Q,) int32, each table entry's receiver if its
    ping arrives now, else n; total (n,) int32 pings each node receives now)."""
    key = jnp.where(a.ping_arrival == t, a.ping_receiver, n).ravel()
    return key, jnp.zeros((n + 1,), jnp.int32).at[key].add(1)[:n]


def first_due(key: jax.Array, n: int) -> jax.Array:
    """(n,) int32: each node's smallest table entry i * Q + j among the pings `key` (n Q,)
    still marks as due to it (key: the receiver, n: none), n Q if none. Answering level by
    level (the m-th pong of every node, then the (m+1)-th), with the entries of each level
    taken out of `key` before the next, gives every node's pongs in increasing order of the
    pinger, then of j: what a stable sort of the table by receiver gives, in O(n Q) per level
    (a segment min) instead of O(n Q log(n Q)) per tick."""
    N = key.shape[0]
    first = jax.ops.segment_min(jnp.arange(N, dtype=jnp.int32), key, num_segments=n + 1)[:n]
    return jnp.minimum(first, N)      # (an empty segment holds int32's largest value)


def take_level(key: jax.Array, first: jax.Array, n: int) -> jax.Array:
    """`key` with the entries `first` (n,) (n Q: none) answered: no longer due."""
    return key.at[first].set(n, mode="drop")


def packs(n: int, N: int) -> bool:
    """A pair (a <= N, b <= n) of a ping table of N entries fits one int32 as a * (n + 1) + b:
    a sort of one operand, several times faster on CPU than a sort of two (`sort_pairs`)."""
    return (N + 1) * (n + 1) < 2**31


def sort_pairs(major: jax.Array, minor: jax.Array, M: int, pack: bool):
    """(major, minor) (int32, minor < M, distinct pairs) sorted by major, then minor."""
    if pack:
        s = jnp.sort(major * M + minor)
        return s // M, s % M
    return jax.lax.sort((major, minor), num_keys=2)


def sorted_levels(key: jax.Array, n: int, B: int):
    """The pings `key` (n Q,) still marks as due (key: the receiver, n: none), ordered as the
    levels answer them: by rank m (an entry's place among its receiver's due entries, in
    increasing i * Q + j), then by receiver. Two sorts, O(n Q log(n Q)) once per tick, after
    which a level of k responders costs O(k) (`first_due` costs O(n Q) per level).

    Returns (receiver (n Q + B,) int32, entry (n Q + B,) int32: the due entries in that order,
    then n and n Q (padding, B of them at least, so that B-wide slices stay in range);
    count (n Q,) int32: responders at level m (nodes with more than m due entries);
    start (n Q,) int32: where level m begins in the order; levels () int32: the largest
    number of entries due to one node)."""
    N = key.shape[0]
    pack = packs(n, N)
    idx = jnp.arange(N, dtype=jnp.int32)
    recv, entry = sort_pairs(key, idx, N, pack)                 # by receiver, then entry
    due = jnp.zeros((n + 1,), jnp.int32).at[key].add(1)
    first = jnp.cumsum(due) - due                               # receiver r's entries from
    rank = jnp.where(recv < n, idx - first[recv], N)            # m; nothing due: last
    rank, recv = sort_pairs(rank, recv, n + 1, pack)
    entry = jnp.where(recv < n, entry[jnp.minimum(first[recv] + rank, N - 1)], N)
    count = jnp.zeros((N,), jnp.int32).at[rank].add(1, mode="drop")
    pad = lambda x, v: jnp.concatenate([x, jnp.full((B,), v, jnp.int32)])  # noqa: E731
    return (pad(recv, n), pad(entry, N), count, jnp.cumsum(count) - count,
            jnp.max(due[:n]))
