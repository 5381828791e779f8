"""AD-PSGD (Lian et al., ICML 2018, "Asynchronous Decentralized Parallel Stochastic Gradient
Descent"), with the semantics of the DivShare authors' `node/ADPSGD.py` (../../shared/paper.md).

At its iteration end a node (1) snapshots its post-training model as its "latest model",
(2) appends to its outgoing queue `fanout // 2` pings, each to a neighbour drawn at random WITH
replacement, each carrying that model, and (3) averages its model with every model that arrived
since its last aggregation (pings and pongs alike, equal weights). A node answers every ping, at
the tick it arrives, with a pong carrying its own latest model, appended to its own queue (pongs
are never answered). Queues are appended to, never replaced, so a slow link delays both
directions of an exchange.

Documented differences from the authors' code:
- the authors' pings and pongs of one iteration share one message object whose "first ping" flag
  is overwritten, so whether a ping gets answered depends on thread timing; here every ping is
  answered (the algorithm as its paper defines it);

Inbox rule. With inbox="latest" (the default, the authors' rule) a node averages only the newest
model of each sender that arrived since its last aggregation: a ping and a pong from the same
sender, or two pings, count once. Pong times depend on other nodes' pings, so the engine cannot
know in advance which message will be replaced (as it does for DivShare and Swift); instead it
keeps, for every (receiver, sender) link, the inbox window, arrival tick and snapshot version of
the last model sent, and every node's last `inbox_history` post-training snapshots: when a newer
model from the same sender lands in the same window, the older one is subtracted from the
receiver's slot. A snapshot needed after it left the history raises ERR_HISTORY (never silent).
With inbox="sum" every model that arrived is averaged in.
Within one tick, arrivals come first, then pongs (in increasing order of the pinging node's id),
then iteration ends; a pong answering a ping that arrives at the tick its receiver finishes an
iteration carries the receiver's previous snapshot.

Message loss (`--loss-rate p`): every ping and every pong is lost on the way independently with
probability p (pings: `network.message_lost` from the tick's spare key and the sender, as for
Swift; the m-th pong a node queues at a tick: from a key of its own, `pong_lost`). A lost
message occupies its sender's link and counts as sent, never arrives, and is counted in `lost`
at its receiver; a lost ping is never answered, and a lost message replaces nothing in an inbox.
Churn (`--churn-rate`), as for Swift: an offline node does not train (its iteration is paused),
going offline drops its queue (pings and pongs not fully sent; counted in `dropped`), and a ping
or pong that arrives at an offline node is lost (a ping then goes unanswered). `history_depth`
ignores offline pauses: a window spanning one may raise ERR_HISTORY (raise --inbox-history).

Download limits (`--download-mbps`, `divjax.downloads`): pings and pongs queue on their
receivers' download links as Swift's models do, and a ping is answered at the tick it is
delivered. Pong times then depend on the download queues, which hold pongs: every message's
delivery is computed at init by a replay of the network alone (`adpsgd_network.download_table`)
and read when the message is queued (`delivery_of`: its scatter slot, its ping-table entry, the
"latest" bookkeeping and the counters); one lost on a download link counts in `lost`.

Ring sizing: pong times depend on the random pings, so the rings are sized for the run's horizon
(`longest_delay`: T - 1 - min compute + max latency ticks) unless `cfg.delay_ticks` is set; a
delay beyond the rings raises ERR_RING_TOO_SHORT, never a silent drop.

Pings in flight: each node keeps its pings in its own table of `cfg.ping_slots` entries
(arrival tick, receiver), filled in the order it sends them: O(n * slots) memory, where a ring
indexed by arrival tick would hold (delay + 1) n^2 counts. At tick t the entries arriving at t
are answered (`arrived_pings`; with latency regions a node's pings need not arrive in the order
they were sent). A node has at most `fanout // 2` pings per iteration end within the longest
delay in flight (`ping_slots_needed`); writing over one still in flight raises
ERR_RING_TOO_SHORT.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.adpsgd_network import (  # noqa: F401  (re-exported)
    PONG_STREAM,
    adpsgd_routes,
    delivery_of,
    download_table,
    history_depth,
    ping_slots_needed,
    pong_lost,
)
from divjax.algorithms.base import Algorithm, Context, average_with_inbox
from divjax.algorithms.divshare import size_download_table
from divjax.algorithms.queues import (
    QueueState,
    appended_link_free,
    check_link_clock,
    init_queue_state,
    lost_or_offline,
    queue_stop,
    schedule_appended_queue,
)
from divjax.compute_schedule import shortest_ticks, window_index
from divjax.config import SimConfig, download_limited
from divjax.messages import Inbox, collect, push
from divjax.network import latency_ticks, message_lost
from divjax.rows import add_rows, get_rows, padded_rows
from divjax.state import ERR_HISTORY, ERR_RING_TOO_SHORT, ERR_SCHEDULE, flag_error


class ADPSGDState(NamedTuple):
    """AD-PSGD's algorithm state (the last four are empty, leading size 0, with inbox="sum")."""

    queue: QueueState    # link end of queue and models queued, per node
    latest: jax.Array    # (n, K, F) float32: every node's latest post-training snapshot
    ping_arrival: jax.Array   # (n, Q) int32: arrival tick of sender i's pings, the j-th it
    #                           ever sent at [i, j mod Q] (-1: none; before t: answered)
    ping_receiver: jax.Array  # (n, Q) int32: their receivers
    ping_tail: jax.Array      # (n,) int32: pings of each sender sent within the run
    history: jax.Array   # (H, n, K, F) float32: snapshot version v of node i at [v % H, i]
    #                      (version = iterations finished when it was taken; 0 = initial model)
    last_window: jax.Array   # (n, n) int32 [receiver, sender]: inbox window of the last model
    #                          sent on that link (-1: none)
    last_arrival: jax.Array  # (n, n) int32: its arrival tick
    last_version: jax.Array  # (n, n) int32: its snapshot version
    downloads: tuple = ()    # with download limits: (codes (M,), start (n,)) int32, every
    #                          message's delivery, and () bool: the table overflowed
    #                          (`adpsgd_network.download_table`)


# Pongs are scheduled and scattered PONG_CHUNK responders at a time (the m-th pong of each,
# then the next m): the work of a tick follows the pongs that arrive, not n full models per pass.
PONG_CHUNK = 16


def retract_replaced(cfg: SimConfig, table, inbox: Inbox, counters, a: ADPSGDState,
                     sender: jax.Array, recv: jax.Array, sent: jax.Array, arrival: jax.Array,
                     version: jax.Array, t: jax.Array):
    """The "latest" rule for full models queued at tick t: what the newest of each sender
    replaces in the receivers' inboxes.

    Args:
      sender: (C,) int32 (n = padding); recv, sent, arrival: (C, J) in queue order;
      version: (C,) int32 snapshot version the messages carry.
    Returns: (inbox, counters, algo state, replaced (C, J): messages of this batch that a later
      message of the same batch replaces (not to be scattered), error flag () bool).
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
    last = sent & ~jnp.any(same_r & later, axis=2)
    s_b = jnp.broadcast_to(safe[:, None], (C, J))
    old_w, old_a = a.last_window[r, s_b], a.last_arrival[r, s_b]
    old_v = a.last_version[r, s_b]
    retract = first & (old_w == window)
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
    keep = jnp.where(last, recv, n)
    a = a._replace(last_window=a.last_window.at[keep, s_b].set(window, mode="drop"),
                   last_arrival=a.last_arrival.at[keep, s_b].set(arrival, mode="drop"),
                   last_version=a.last_version.at[keep, s_b].set(
                       jnp.broadcast_to(version[:, None], (C, J)), mode="drop"))
    return inbox, counters, a, replaced, lost


def record_pings(a, node: jax.Array, recv: jax.Array, sent: jax.Array, arrival: jax.Array,
                 t: jax.Array, n: int):
    """Write the sent pings (C, p) of the nodes `node` (C,) at tick t into their ping tables.

    A node's pings take its table's slots in the order they were sent (the j-th at j mod Q).
    `sent` is a prefix of each row (a ping queued after one that leaves after the run's end
    leaves after it too). Returns (algo_state, overflow: () bool, a slot still held a ping in
    flight, i.e. arriving after t)."""
    Q = a.ping_arrival.shape[1]
    safe = jnp.minimum(node, n - 1)
    pos = (a.ping_tail[safe][:, None] + jnp.arange(sent.shape[1], dtype=jnp.int32)) % Q
    row = jnp.where(sent & (node < n)[:, None], safe[:, None], n)                 # (C, p)
    overflow = (jnp.any((row < n) & (a.ping_arrival[safe[:, None], pos] > t))
                | jnp.any(jnp.sum(row < n, axis=1) > Q))     # more pings at once than slots
    new_tail = a.ping_tail[safe] + jnp.sum(sent, axis=1).astype(jnp.int32)
    a = a._replace(
        ping_arrival=a.ping_arrival.at[row, pos].set(arrival, mode="drop"),
        ping_receiver=a.ping_receiver.at[row, pos].set(recv, mode="drop"),
        ping_tail=a.ping_tail.at[jnp.where(node < n, node, n)].set(new_tail, mode="drop"))
    return a, overflow


def arrived_pings(a, t: jax.Array, n: int) -> jax.Array:
    """(n, n) int32: the pings arriving at tick t, [receiver, sender]. Every ping is answered
    at its arrival tick, so a slot whose arrival is before t is free again; the latencies of
    one node's pings may differ by receiver (latency regions), so every slot is looked at."""
    due = a.ping_arrival == t                                                   # (n, Q)
    sender = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], due.shape)
    return jnp.zeros((n, n), jnp.int32).at[jnp.where(due, a.ping_receiver, n), sender].add(
        1, mode="drop")


def make_adpsgd(cfg: SimConfig) -> Algorithm:
    p = cfg.fanout // 2
    latest_rule = cfg.inbox == "latest"
    downloads = download_limited(cfg) and p > 0

    def init(ctx: Context, params):
        n, Q = ctx.cfg.n_nodes, ctx.cfg.ping_slots
        H, m = (ctx.cfg.inbox_history, n) if latest_rule else (0, 0)
        if (latest_rule and H < 2) or Q < 1:
            raise ValueError("inbox_history and ping_slots must be resolved before init: "
                             "build the engine with make_engine / make_run")
        history = jnp.zeros((H,) + params.shape, jnp.float32)
        if H:
            history = history.at[0].set(params)                                  # version 0
        zq = jnp.zeros((n, Q), jnp.int32)
        return ADPSGDState(init_queue_state(n), params, zq - 1, zq, jnp.zeros((n,), jnp.int32),
                           history,
                           jnp.full((m, m), -1, jnp.int32), jnp.zeros((m, m), jnp.int32),
                           jnp.zeros((m, m), jnp.int32),
                           download_table(ctx, ctx.k_sim) if downloads else ())

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        C = node.shape[0]
        n = ctx.cfg.n_nodes
        _, safe, drop = padded_rows(node, n, valid)
        a = state.algo_state
        version = state.iterations[safe] + 1                      # of the snapshot taken now
        latest = a.latest.at[drop].set(trained, mode="drop")
        if latest_rule:
            H = a.history.shape[0]
            a = a._replace(history=a.history.at[version % H, drop].set(trained, mode="drop"))
        if p > 0:
            recv = jax.vmap(lambda i: adpsgd_routes(keys.route, i, ctx.neighbors, ctx.degree,
                                                    p))(safe)                     # (C, p)
            K = trained.shape[1]
            stop = queue_stop(ctx.cfg, ctx.table, node, t)         # churn: None or (C,)
            sched = schedule_appended_queue(
                ctx.cfg, ctx.table, a.queue.link_free, node,
                jnp.broadcast_to(valid[:, None], (C, p)),
                jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (C, p)), t, K, recv, stop)
            sent = sched.sent[..., 0]
            lost = lost_or_offline(ctx.cfg, ctx.table,
                                   message_lost(ctx.cfg, keys.spare, safe, (p,), recv), recv,
                                   sched.arrival[..., 0])                          # (C, p)
            sched, lost = delivery_of(ctx.cfg, a.downloads, sched, lost, node,   # download
                                      a.queue.enqueued[safe][:, None] + jnp.arange(p))  # links
            if a.downloads:   # the pre-pass held every message (else: sized for other HParams)
                state = flag_error(state, jnp.where(a.downloads[2], ERR_SCHEDULE, 0), t)
            dropping = jnp.zeros_like(valid) if stop is None else valid & (stop < ctx.cfg.num_ticks)
            arrives = sent if lost is None else sent & ~lost
            inbox, counters, replaced = state.inbox, state.counters, None
            if latest_rule:
                inbox, counters, a, rep, short = retract_replaced(
                    ctx.cfg, ctx.table, inbox, counters, a, node, recv, arrives,
                    sched.arrival[..., 0], version, t)
                replaced = jnp.broadcast_to(rep[..., None], (C, p, K))
                state = flag_error(state, jnp.where(short, ERR_HISTORY, 0), t)
            inbox, counters, too_late = push(
                ctx.cfg, inbox, counters, ctx.table, sched, node, dropping,
                jnp.broadcast_to(recv[..., None], (C, p, K)), trained, replaced,
                None if lost is None else jnp.broadcast_to(lost[..., None], (C, p, K)))
            state = flag_error(state.replace(inbox=inbox, counters=counters),
                               jnp.where(too_late, ERR_RING_TOO_SHORT, 0), t)
            # a lost ping takes its slot in the ping table but never arrives (-1): unanswered
            a, overflow = record_pings(a, node, recv, sent,
                                       jnp.where(arrives, sched.arrival[..., 0], -1), t, n)
            state = flag_error(state, jnp.where(overflow, ERR_RING_TOO_SHORT, 0), t)
            q = QueueState(
                appended_link_free(ctx.cfg, ctx.table, a.queue.link_free, node, valid,
                                   jnp.full((C,), p, jnp.int32), t, stop),
                a.queue.enqueued.at[drop].add(p, mode="drop"))
            a = a._replace(queue=q)
        inbox, got_total, got_count = collect(ctx.cfg, state.inbox, node, valid, ctx.table, t)
        averaged = average_with_inbox(trained, got_total, got_count)
        return state.replace(inbox=inbox, algo_state=a._replace(latest=latest)), averaged

    def on_tick(ctx: Context, state, keys, t):
        """Answer the pings arriving at tick t with pongs carrying the latest models."""
        n = ctx.cfg.n_nodes
        count = arrived_pings(state.algo_state, t, n)                          # (recv, send)
        total = jnp.sum(count, axis=1)                                         # (n,) pongs

        def answer(state):
            a = state.algo_state
            q = a.queue
            K = a.latest.shape[1]
            B = min(n, PONG_CHUNK)
            cum = jnp.cumsum(count, axis=1)                                    # (n, n)
            ids = jnp.arange(n, dtype=jnp.int32)
            none = jnp.zeros((B,), bool)

            def body(carry):
                m, c, inbox, counters, a, late, short = carry
                # chunk c of the nodes that send an m-th pong now, in increasing id (n: none)
                active = total > m
                order = jnp.pad(jnp.sort(jnp.where(active, ids, n)), (0, B), constant_values=n)
                sender = jax.lax.dynamic_slice(order, (c * B,), (B,))
                valid = sender < n
                safe = jnp.minimum(sender, n - 1)
                # node r's m-th pong goes to the pinging node j with cum[r, j-1] <= m < cum[r, j]
                target = jnp.minimum(jnp.sum(cum[safe] <= m, axis=1), n - 1).astype(jnp.int32)
                stop = queue_stop(ctx.cfg, ctx.table, sender, t)     # churn: None or (B,)
                sched = schedule_appended_queue(ctx.cfg, ctx.table, q.link_free, sender,
                                                valid[:, None], jnp.full((B, 1), m, jnp.int32),
                                                t, K, target[:, None], stop)
                lost_p = pong_lost(ctx.cfg, keys.spare, safe, m, target)              # (B,)
                lost_p = lost_or_offline(ctx.cfg, ctx.table,
                                         None if lost_p is None else lost_p[:, None],
                                         target[:, None], sched.arrival[..., 0])     # (B, 1)
                sched, lost_p = delivery_of(ctx.cfg, a.downloads, sched, lost_p, sender,
                                            q.enqueued[safe][:, None] + m)
                arrives = sched.sent[..., 0]
                if lost_p is not None:
                    arrives = arrives & ~lost_p
                if latest_rule:
                    inbox, counters, a, _, short_m = retract_replaced(
                        ctx.cfg, ctx.table, inbox, counters, a, sender, target[:, None],
                        arrives, sched.arrival[..., 0], state.iterations[safe], t)
                    short = short | short_m
                inbox, counters, too_late = push(
                    ctx.cfg, inbox, counters, ctx.table, sched, sender,
                    none if stop is None else valid & (stop < ctx.cfg.num_ticks),
                    jnp.broadcast_to(target[:, None, None], (B, 1, K)), a.latest[safe], None,
                    None if lost_p is None else jnp.broadcast_to(lost_p[..., None], (B, 1, K)))
                more = (c + 1) * B < jnp.sum(active)
                return (jnp.where(more, m, m + 1), jnp.where(more, c + 1, 0), inbox, counters,
                        a, late | too_late, short)

            _, _, inbox, counters, a, late, short = jax.lax.while_loop(
                lambda c: c[0] < jnp.max(total), body,
                (jnp.int32(0), jnp.int32(0), state.inbox, state.counters, a,
                 jnp.bool_(False), jnp.bool_(False)))
            q = QueueState(appended_link_free(ctx.cfg, ctx.table, q.link_free, ids, total > 0,
                                              total, t, queue_stop(ctx.cfg, ctx.table, ids, t)),
                           q.enqueued + total)
            state = flag_error(state, jnp.where(late, ERR_RING_TOO_SHORT, 0), t)
            state = flag_error(state, jnp.where(short, ERR_HISTORY, 0), t)
            return state.replace(inbox=inbox, counters=counters,
                                 algo_state=a._replace(queue=q))

        return jax.lax.cond(jnp.any(total > 0), answer, lambda s: s, state)

    def longest_delay(cfg_resolved: SimConfig, table) -> int:
        # a pong is queued when a random ping arrives: bound by the run's horizon
        check_link_clock(cfg_resolved, table, max(p, cfg_resolved.n_nodes * max(p, 1)))
        if cfg_resolved.delay_ticks > 0:
            return cfg_resolved.delay_ticks
        c_min = int(np.min(shortest_ticks(cfg_resolved, np.asarray(table.compute_ticks))))
        lat_max = int(np.max(np.asarray(latency_ticks(table, cfg_resolved.link_resolution))))
        # with download limits a delivery at or after the run's end is taken as T
        return max(1, cfg_resolved.num_ticks - 1 - c_min + lat_max,
                   cfg_resolved.num_ticks - c_min if downloads else 0)

    def resolve_sizes(cfg_resolved: SimConfig, table) -> SimConfig:
        if downloads:   # the pre-pass's capacity
            cfg_resolved = size_download_table(cfg_resolved, table)
        if cfg_resolved.ping_slots == 0:
            cfg_resolved = cfg_resolved.replace(
                ping_slots=ping_slots_needed(cfg_resolved, table))
        if latest_rule and cfg_resolved.inbox_history == 0:
            cfg_resolved = cfg_resolved.replace(
                inbox_history=history_depth(cfg_resolved, table))
        return cfg_resolved

    return Algorithm("adpsgd", init, iteration_end, on_tick=on_tick,
                     longest_delay=longest_delay, resolve_sizes=resolve_sizes,
                     keeps_nonfinite=True)
