"""DivShare (Biswas et al., WWW 2025, arXiv 2410.12918), with the semantics of the authors' code.

At the end of each iteration a node (1) cuts its post-training model into the K fixed fragments,
(2) drops whatever of its previous queue has not fully left its link, (3) queues K*s messages,
each fragment to s distinct random neighbours, in random order, and (4) averages every
coordinate of its model with the fragments that have arrived since its last aggregation:
x[c] = (x[c] + sum of received values of c) / (1 + number received). With inbox="latest" (the
authors' rule, the default) only the newest fragment per (sender, fragment index) counts; with
inbox="sum" every copy that arrived does. See ../shared/paper.md.

Churn (`--churn-rate`, `divjax.network.compute_schedule`): an offline node does not train (its iteration
is paused) and does not send: going offline drops its send queue and the message on the wire,
as its next iteration end would (counted as dropped); a message that arrives at an offline node
is lost (counted in `lost`, as with `--loss-rate`), and replaces nothing in an inbox.

Download limits (`--download-mbps`, `divjax.network.downloads`): every message's delivery tick, or its
loss on a download link that could not take it before its deadline, is read from a table that
`download_table` computes at init from the run's key (the state's only field then).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from divjax.algorithms.base import Algorithm, Context, average_with_inbox, sample_peers
from divjax.network.compute_schedule import (
    end_tick,
    has_offline,
    is_offline,
    next_offline_start,
    slots_needed,
    stop_tick,
    window_index,
    window_tick,
)
from divjax.config import ConfigError, SimConfig, download_limited
from divjax.network.downloads import decode, fifo_deliveries, message_units, row_start_subticks
from divjax.network.messages import collect, push
from divjax.network.links import (
    Schedule,
    loss_modelled,
    message_lost,
    pair_latency_units,
    schedule_replaced_queue,
    units_at,
)
from divjax.engine.state import ERR_RING_TOO_SHORT, flag_error, tick_keys


def divshare_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                    K: int, s: int) -> tuple[jax.Array, jax.Array]:
    """Receivers and queue order of one node's messages at one iteration end.

    Message m = j * K + k sends fragment k to its j-th receiver.
    Returns: receivers (s, K) int32 (distinct within each fragment, never the node itself) and
    queue (s*K,) int32, the message indices in the order the link sends them.
    """
    k_pick, k_order = jax.random.split(jax.random.fold_in(key, node))
    peers = sample_peers(k_pick, node, neighbors, degree, (K,), s)     # (K, s)
    queue = jax.random.permutation(k_order, s * K)
    return peers.T, queue


def queued_messages(ctx: Context, k_route: jax.Array, node: jax.Array, valid: jax.Array,
                    t: jax.Array, next_end: jax.Array) -> tuple[jax.Array, Schedule]:
    """The K*s messages that C nodes queue at their iteration end at tick t (() or (C,)), with
    the keys of that tick, sent until `next_end` (C,): their next iteration end, or their
    going offline if sooner (churn). Returns receivers (C, s, K) and their Schedule, fields
    (C, s, K).

    `k_route` is the route key of tick t: () for one tick, (C,) for one tick per node."""
    K, s = ctx.layout.K, ctx.cfg.fanout
    C = node.shape[0]
    safe = jnp.minimum(node, ctx.cfg.n_nodes - 1)
    k_route = jnp.broadcast_to(k_route, (C,))
    receivers, queue = jax.vmap(
        lambda k, i: divshare_routes(k, i, ctx.neighbors, ctx.degree, K, s))(k_route, safe)
    fragment_q = queue % K                                                       # (C, M)
    units_q = jnp.take_along_axis(units_at(ctx.table, safe, t), fragment_q, axis=1)
    recv_q = jnp.take_along_axis(receivers.reshape(C, s * K), queue, axis=1)   # queue order
    sched = schedule_replaced_queue(ctx.table, node, valid, units_q, t, ctx.cfg.link_resolution,
                                    recv_q, next_end)
    # back from queue order to message order m = j * K + k, then (C, s, K)
    to_msg = jnp.argsort(queue, axis=1)
    unq = lambda x: jnp.take_along_axis(x, to_msg, axis=1).reshape(C, s, K)  # noqa: E731
    return receivers, sched._replace(sent=unq(sched.sent), leave_tick=unq(sched.leave_tick),
                                     arrival=unq(sched.arrival),
                                     arrival_sub=unq(sched.arrival_sub))


class DivShareState(NamedTuple):
    """With download limits: the fate of every message of the run (`download_table`)."""

    deliveries: jax.Array   # (n, S, s, K) int32 `downloads` codes of iteration k's messages


def download_messages(ctx: Context, k_sim: jax.Array) -> tuple[jax.Array, ...]:
    """Every message of the run as it reaches its receiver's download link: (receiver
    (n = none), upload arrival sub-tick, deadline sub-tick, download sub-ticks, enters,
    upload arrival tick), each (n, S, s, K) for node i's iteration k < S = iteration_slots and
    message (j, k'). `enters`: sent and not lost on the way. The schedule is the engine's own
    (`queued_messages`, from the keys of each iteration end)."""
    cfg, table = ctx.cfg, ctx.table
    n, S, T, R = cfg.n_nodes, cfg.iteration_slots, cfg.num_ticks, cfg.link_resolution
    K = ctx.layout.K

    def one_node(i):   # node i's S iteration ends: (S, s, K) fields
        node = jnp.full((S,), i, jnp.int32)
        t = end_tick(table, node, jnp.arange(S, dtype=jnp.int32))
        stop = stop_tick(table, node, t, end_tick(table, node, jnp.arange(1, S + 1)))
        keys = jax.vmap(lambda tt: tick_keys(k_sim, tt))(t)
        receivers, sched = queued_messages(ctx, keys.route, node, t < T, t, stop)
        enters = sched.sent
        if loss_modelled(cfg):
            enters &= ~jax.vmap(lambda kk, rr: message_lost(cfg, kk, i[None], rr.shape,
                                                            rr[None])[0])(keys.spare, receivers)
        deadline = stop[:, None, None] * R + pair_latency_units(table, i, receivers)
        if has_offline(cfg):
            # a receiver offline when a message reaches it never takes it (lost, as without
            # download limits); one that goes offline at tick s must have received it by the
            # end of tick s - 1 (its connections close then)
            enters &= ~is_offline(table, receivers, sched.arrival)
            s_off = next_offline_start(table, receivers, sched.arrival)
            deadline = jnp.where(s_off <= T, jnp.minimum(deadline, (s_off - 1) * R), deadline)
        units = message_units(table, receivers, jnp.arange(K))   # (S, s, K[, P])
        return (jnp.where(enters, receivers, n), sched.arrival_sub, deadline, units,
                enters, sched.arrival)

    # iteration ends of a few nodes at a time: intermediates of about 4096 iteration ends
    return jax.lax.map(one_node, jnp.arange(n, dtype=jnp.int32),
                       batch_size=max(1, min(n, 4096 // S)))


def download_table(ctx: Context, k_sim: jax.Array) -> jax.Array:
    """(n, S, s, K) int32: for every node i, iteration k < S = cfg.iteration_slots and message
    (j, k'), the `downloads.fifo_deliveries` code of that message: its delivery tick, or
    -(tick lost) - 1 when its receiver's download link could not take it all by its deadline
    (the sender's next iteration end plus the pair's latency). Messages that never reach a
    download link (not sent, lost on the way, iterations past the run) hold their upload
    arrival tick. Every iteration of the run at once, then one FIFO per link."""
    recv, avail, deadline, units, enters, upload_tick = download_messages(ctx, k_sim)
    n = ctx.cfg.n_nodes
    sender = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None, None, None], recv.shape)
    R = ctx.cfg.link_resolution
    rows = row_start_subticks(ctx.table, R)
    code = fifo_deliveries(recv.ravel(), avail.ravel(), deadline.ravel(),
                           units.reshape(recv.size, -1) if rows is not None else units.ravel(),
                           sender.ravel(), R, n, rows)
    return jnp.where(enters, code.reshape(recv.shape), upload_tick)


def with_downloads(algo_state, node: jax.Array, k: jax.Array, sched: Schedule
                   ) -> tuple[Schedule, jax.Array | None]:
    """The schedule of iteration k's messages (node, k: (C,)) with their delivery ticks from the
    download table, and which were lost on a download link; unchanged, None, without limits."""
    if not isinstance(algo_state, DivShareState):
        return sched, None
    S = algo_state.deliveries.shape[1]
    tick, lost = decode(algo_state.deliveries[node, jnp.minimum(k, S - 1)])
    return sched._replace(arrival=tick), lost & sched.sent


def replaced_by_newer(ctx: Context, k_sim: jax.Array, node: jax.Array, valid: jax.Array,
                      receivers: jax.Array, sched: Schedule, t: jax.Array, k: jax.Array,
                      algo_state=()) -> jax.Array:
    """(C, s, K) bool: which messages queued at tick t a newer message from the same sender,
    with the same fragment, replaces in the receiver's inbox before the receiver aggregates.

    The sender's later iteration ends (t + i c, or its jitter table's: `end_tick`; the tick t
    ends its iteration k (C,)), their receivers (drawn from the keys of those ticks) and their
    link schedules are known now: a message is replaced when a later iteration sends the same
    fragment to the same receiver and it arrives within the run in the same inbox window
    (`window_index`). The loop looks ahead only while a later iteration end precedes the last
    aggregation these messages join.
    """
    n, T = ctx.cfg.n_nodes, ctx.cfg.num_ticks
    safe = jnp.minimum(node, n - 1)
    window = window_index(ctx.table, receivers, sched.arrival)                   # (C, s, K)
    last_agg = jnp.max(jnp.where(sched.sent, window_tick(ctx.table, receivers, window), 0),
                       axis=(1, 2))                                              # (C,)
    horizon = jnp.where(valid, jnp.minimum(last_agg, T), 0)

    def pending(i):
        return end_tick(ctx.table, safe, k + i) < horizon                        # (C,)

    def body(carry):
        i, replaced = carry
        t_i = end_tick(ctx.table, safe, k + i)
        alive = pending(i)
        k_i = jax.vmap(lambda tt: tick_keys(k_sim, tt))(t_i)
        stop_i = stop_tick(ctx.table, safe, t_i, end_tick(ctx.table, safe, k + i + 1))
        recv_i, sched_i = queued_messages(ctx, k_i.route, node, alive, t_i, stop_i)
        sched_i, down_lost_i = with_downloads(algo_state, safe, k + i, sched_i)
        ok_i = sched_i.sent & (sched_i.arrival < T)                              # (C, s, K)
        if down_lost_i is not None:   # nor does one its receiver could not take in time
            ok_i = ok_i & ~down_lost_i
        if loss_modelled(ctx.cfg):   # a newer message lost on the way replaces nothing
            lost_i = jax.vmap(lambda k, i, r: message_lost(ctx.cfg, k, i[None], r.shape,
                                                           r[None])[0])(k_i.spare, safe, recv_i)
            ok_i = ok_i & ~lost_i
        if has_offline(ctx.cfg):    # nor does one that reaches an offline node
            ok_i = ok_i & ~is_offline(ctx.table, recv_i, sched_i.arrival)
        same = ((receivers[:, :, None, :] == recv_i[:, None, :, :]) & ok_i[:, None]
                & (window_index(ctx.table, receivers[:, :, None], sched_i.arrival[:, None])
                   == window[:, :, None]))                                       # (C, s, s', K)
        return i + 1, replaced | jnp.any(same, axis=2)

    _, replaced = jax.lax.while_loop(lambda c: jnp.any(pending(c[0])), body,
                                     (jnp.int32(1), jnp.zeros(receivers.shape, bool)))
    return replaced & sched.sent


def size_download_table(cfg: SimConfig, table) -> SimConfig:
    """`iteration_slots` for a download table (DivShare, Swift, AD-PSGD: host side, numpy
    table): every iteration that ends within the run (`slots_needed`); an explicit value
    that holds fewer is refused (the iterations past it would be missing from the download
    links' FIFOs: a wrong network, not an error)."""
    need = slots_needed(cfg, table.compute_ticks)
    if cfg.iteration_slots == 0:
        return cfg.replace(iteration_slots=need)
    if cfg.iteration_slots < need:
        raise ConfigError(f"iteration_slots={cfg.iteration_slots} cannot hold the iterations "
                          f"of the run's download table ({need} at the shortest compute time): "
                          f"set --iteration-slots {need} or 0 (auto)")
    return cfg


def make_divshare(cfg: SimConfig) -> Algorithm:
    s = cfg.fanout

    def init(ctx: Context, params):
        del params  # DivShare keeps no state beyond the inbox, but for download limits.
        if download_limited(cfg) and s > 0:
            return DivShareState(download_table(ctx, ctx.k_sim))
        return ()

    def resolve_sizes(cfg_resolved: SimConfig, table) -> SimConfig:
        """With download limits: table every iteration of the run (iteration_slots)."""
        if not download_limited(cfg_resolved) or s == 0:
            return cfg_resolved
        return size_download_table(cfg_resolved, table)

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        inbox, counters = state.inbox, state.counters
        if s > 0:
            safe = jnp.minimum(node, cfg.n_nodes - 1)
            k = state.iterations[safe]                   # the iteration that ends now
            stop = stop_tick(ctx.table, safe, t, end_tick(ctx.table, safe, k + 1))
            receivers, sched = queued_messages(ctx, keys.route, node, valid, t, stop)
            sched, down_lost = with_downloads(state.algo_state, safe, k, sched)
            lost = message_lost(cfg, keys.spare, safe, (s, ctx.layout.K), receivers)  # (C, s, K)
            if down_lost is not None:   # its receiver's download link could not take it
                lost = down_lost if lost is None else lost | down_lost
            if has_offline(cfg):   # what arrives at an offline node (churn, a trace) is lost
                offline = is_offline(ctx.table, receivers, sched.arrival)
                lost = offline if lost is None else lost | offline
            replaced = None
            if cfg.inbox == "latest":
                replaced = replaced_by_newer(ctx, state.k_sim, node, valid, receivers, sched, t,
                                             k, state.algo_state)
                if lost is not None:   # a lost message is never in an inbox to be replaced
                    replaced = replaced & ~lost
            inbox, counters, too_late = push(cfg, inbox, counters, ctx.table, sched, node,
                                             valid, receivers, trained, replaced, lost)
            state = flag_error(state, jnp.where(too_late, ERR_RING_TOO_SHORT, 0), t)
        # with s = 0 nothing is sent, and replacing the (empty) old queue drops nothing
        inbox, got_total, got_count = collect(cfg, inbox, node, valid, ctx.table, t)
        averaged = average_with_inbox(trained, got_total, got_count)
        return state.replace(inbox=inbox, counters=counters), averaged

    return Algorithm("divshare", init, iteration_end, resolve_sizes=resolve_sizes,
                     keeps_nonfinite=True)
