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
records, for every ping and pong in the ping table's entry of the ping (`adpsgd_links`: no
per-pair array), the arrival tick, snapshot version and queue index of what arrives, and keeps
every node's last `inbox_history` post-training snapshots: when a newer model from the same
sender lands in the same window as the last one it sent that receiver, the older one is
subtracted from the receiver's slot. A snapshot needed after it left the history raises
ERR_HISTORY (never silent).
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

Download limits (`--download-mbps`, `divjax.network.downloads`): pings and pongs queue on their
receivers' download links as Swift's models do, and a ping is answered at the tick it is
delivered. Pong times then depend on the download queues, which hold pongs: every message's
delivery is computed at init by a replay of the network alone (`adpsgd_network.download_table`)
and read when the message is queued (`delivery_of`: its scatter slot, its ping-table entry, the
"latest" bookkeeping and the counters); one lost on a download link counts in `lost`.

Ring sizing: pong times depend on the random pings, so the rings are sized for the run's horizon
(`longest_delay`: T - 1 - min compute + max latency ticks) unless `cfg.delay_ticks` is set; a
delay beyond the rings raises ERR_RING_TOO_SHORT, never a silent drop.

Pings in flight: each node keeps its pings in its own table of `cfg.ping_slots` entries
(arrival tick, receiver, and with "latest" the records above), filled in the order it sends
them: O(n * slots) memory, where a ring indexed by arrival tick would hold (delay + 1) n^2
counts and a record per link n^2. At tick t the entries arriving at t are answered
(`adpsgd_pongs`; with latency regions a node's pings need not arrive in the order they were
sent). A node has at most `fanout // 2` pings per iteration end in flight within the longest
delay, and with "latest" an entry matters until its pong's receiver has aggregated it
(`ping_slots_needed`); writing over one that still matters raises ERR_RING_TOO_SHORT.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.adpsgd_links import (  # noqa: F401  (re-exported)
    LinkRecords,
    init_records,
    record_pings,
    retract_replaced,
)
from divjax.algorithms.adpsgd_network import (  # noqa: F401  (re-exported)
    PONG_STREAM,
    adpsgd_routes,
    delivery_of,
    download_table,
    history_depth,
    ping_slots_needed,
    pong_lost,
)
from divjax.algorithms.adpsgd_pongs import answer_pings
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
from divjax.network.compute_schedule import shortest_ticks
from divjax.config import SimConfig, download_limited
from divjax.network.messages import collect, push
from divjax.network.links import latency_ticks, message_lost
from divjax.engine.rows import padded_rows
from divjax.engine.state import ERR_HISTORY, ERR_RING_TOO_SHORT, ERR_SCHEDULE, flag_error


class ADPSGDState(NamedTuple):
    """AD-PSGD's algorithm state (history and records are empty, leading size 0, with
    inbox="sum"). Every array is O(n): nothing is kept per pair of nodes."""

    queue: QueueState    # link end of queue and models queued, per node
    latest: jax.Array    # (n, K, F) float32: every node's latest post-training snapshot
    ping_arrival: jax.Array   # (n, Q) int32: arrival tick of sender i's pings, the j-th it
    #                           ever sent at [i, j mod Q] (-1: none; before t: answered)
    ping_receiver: jax.Array  # (n, Q) int32: their receivers
    ping_tail: jax.Array      # (n,) int32: pings of each sender sent within the run
    history: jax.Array   # (H, n, K, F) float32: snapshot version v of node i at [v % H, i]
    #                      (version = iterations finished when it was taken; 0 = initial model)
    records: LinkRecords  # (n, Q) int32 leaves: what each entry's ping and pong carry
    #                       (`adpsgd_links`), for the "latest" rule
    downloads: tuple = ()    # with download limits: (codes (M,), start (n,)) int32, every
    #                          message's delivery, and () bool: the table overflowed
    #                          (`adpsgd_network.download_table`)


# Pongs are scheduled and scattered PONG_CHUNK responders at a time (`adpsgd_pongs`).
PONG_CHUNK = 16


def init_state(ctx: Context, params, latest_rule: bool, downloads: bool) -> ADPSGDState:
    n, Q = ctx.cfg.n_nodes, ctx.cfg.ping_slots
    H, m = (ctx.cfg.inbox_history, n) if latest_rule else (0, 0)
    if (latest_rule and H < 2) or Q < 1:
        raise ValueError("inbox_history and ping_slots must be resolved before init: "
                         "build the engine with make_engine / make_run")
    history = jnp.zeros((H,) + params.shape, jnp.float32)
    if H:
        history = history.at[0].set(params)                                      # version 0
    zq = jnp.zeros((n, Q), jnp.int32)
    return ADPSGDState(init_queue_state(n), params, zq - 1, zq, jnp.zeros((n,), jnp.int32),
                       history, init_records(m, Q if m else 0),
                       download_table(ctx, ctx.k_sim) if downloads else ())


def send_pings(ctx: Context, state, a, node, valid, safe, trained, keys, t, version,
               p: int, latest_rule: bool):
    """Queue the p pings of each of the C nodes `node` ending an iteration at t, carrying their
    post-training models `trained` (C, K, F); records them. Returns (state, algo state)."""
    C, K = trained.shape[0], trained.shape[1]
    n = ctx.cfg.n_nodes
    recv = jax.vmap(lambda i: adpsgd_routes(keys.route, i, ctx.neighbors, ctx.degree, p))(safe)
    stop = queue_stop(ctx.cfg, ctx.table, node, t)         # churn: None or (C,)
    sched = schedule_appended_queue(
        ctx.cfg, ctx.table, a.queue.link_free, node, jnp.broadcast_to(valid[:, None], (C, p)),
        jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (C, p)), t, K, recv, stop)
    sent = sched.sent[..., 0]
    lost = lost_or_offline(ctx.cfg, ctx.table,
                           message_lost(ctx.cfg, keys.spare, safe, (p,), recv), recv,
                           sched.arrival[..., 0])                                  # (C, p)
    order = a.queue.enqueued[safe][:, None] + jnp.arange(p)          # queue indices (C, p)
    sched, lost = delivery_of(ctx.cfg, a.downloads, sched, lost, node, order)   # download links
    if a.downloads:   # the pre-pass held every message (else: sized for other HParams)
        state = flag_error(state, jnp.where(a.downloads[2], ERR_SCHEDULE, 0), t)
    dropping = jnp.zeros_like(valid) if stop is None else valid & (stop < ctx.cfg.num_ticks)
    arrives = sent if lost is None else sent & ~lost
    inbox, counters, replaced = state.inbox, state.counters, None
    if latest_rule:
        inbox, counters, rep, short, _ = retract_replaced(
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
    arrival = jnp.where(arrives, sched.arrival[..., 0], -1)
    a, overflow = (record_pings(a, node, recv, sent, arrival, t, n, version, order, ctx.table)
                   if latest_rule else record_pings(a, node, recv, sent, arrival, t, n))
    state = flag_error(state, jnp.where(overflow, ERR_RING_TOO_SHORT, 0), t)
    q = QueueState(
        appended_link_free(ctx.cfg, ctx.table, a.queue.link_free, node, valid,
                           jnp.full((C,), p, jnp.int32), t, stop),
        a.queue.enqueued.at[jnp.where(valid, node, n)].add(p, mode="drop"))
    return state, a._replace(queue=q)


def iteration_end(ctx: Context, state, node, valid, trained, keys, t, p: int,
                  latest_rule: bool):
    """Snapshot, send the pings (p > 0), then average with the inbox."""
    n = ctx.cfg.n_nodes
    _, safe, drop = padded_rows(node, n, valid)
    a = state.algo_state
    version = state.iterations[safe] + 1                      # of the snapshot taken now
    latest = a.latest.at[drop].set(trained, mode="drop")
    if latest_rule:
        H = a.history.shape[0]
        a = a._replace(history=a.history.at[version % H, drop].set(trained, mode="drop"))
    if p > 0:
        state, a = send_pings(ctx, state, a, node, valid, safe, trained, keys, t, version, p,
                              latest_rule)
    inbox, got_total, got_count = collect(ctx.cfg, state.inbox, node, valid, ctx.table, t)
    averaged = average_with_inbox(trained, got_total, got_count)
    return state.replace(inbox=inbox, algo_state=a._replace(latest=latest)), averaged


def longest_delay(cfg_resolved: SimConfig, table, p: int, downloads: bool) -> int:
    """A pong is queued when a random ping arrives: delays are bound by the run's horizon."""
    check_link_clock(cfg_resolved, table, max(p, cfg_resolved.n_nodes * max(p, 1)))
    if cfg_resolved.delay_ticks > 0:
        return cfg_resolved.delay_ticks
    c_min = int(np.min(shortest_ticks(cfg_resolved, np.asarray(table.compute_ticks))))
    lat_max = int(np.max(np.asarray(latency_ticks(table, cfg_resolved.link_resolution))))
    # with download limits a delivery at or after the run's end is taken as T
    return max(1, cfg_resolved.num_ticks - 1 - c_min + lat_max,
               cfg_resolved.num_ticks - c_min if downloads else 0)


def resolve_sizes(cfg_resolved: SimConfig, table, latest_rule: bool,
                  downloads: bool) -> SimConfig:
    if downloads:   # the pre-pass's capacity
        cfg_resolved = size_download_table(cfg_resolved, table)
    if cfg_resolved.ping_slots == 0:
        cfg_resolved = cfg_resolved.replace(ping_slots=ping_slots_needed(cfg_resolved, table))
    if latest_rule and cfg_resolved.inbox_history == 0:
        cfg_resolved = cfg_resolved.replace(inbox_history=history_depth(cfg_resolved, table))
    return cfg_resolved


def make_adpsgd(cfg: SimConfig) -> Algorithm:
    p = cfg.fanout // 2
    latest_rule = cfg.inbox == "latest"
    downloads = download_limited(cfg) and p > 0

    def on_tick(ctx: Context, state, keys, t):
        return answer_pings(ctx, state, keys, t, latest_rule, PONG_CHUNK)   # read at trace

    return Algorithm(
        "adpsgd",
        functools.partial(init_state, latest_rule=latest_rule, downloads=downloads),
        functools.partial(iteration_end, p=p, latest_rule=latest_rule), on_tick=on_tick,
        longest_delay=functools.partial(longest_delay, p=p, downloads=downloads),
        resolve_sizes=functools.partial(resolve_sizes, latest_rule=latest_rule,
                                        downloads=downloads),
        keeps_nonfinite=True)
