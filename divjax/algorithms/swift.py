"""Swift (Bornstein et al., ICLR 2023, "SWIFT: rapid decentralized federated learning via
wait-free model communication"), with the semantics of the DivShare authors' `node/Swift.py`.

The same loop and order as DivShare (train, queue the post-training model, aggregate) with the
full model as one message to `fanout` distinct random neighbours (sent in random order), and
the outgoing queue
APPENDED to, never replaced: on a slow link it grows without bound (`QueueState.enqueued` minus
the models sent, see `queue_length`). Nobody waits for anybody. At its iteration end a node
averages its model with the newest model of each sender that arrived since its last aggregation
(inbox="latest", the authors' rule; inbox="sum" averages every copy that arrived).
See ../../shared/paper.md.

Churn (`--churn-rate`, or a trace's offline rows; `divjax.network.compute_schedule`), as for DivShare:
an offline node does not train (its iteration is paused) and does not send. Going offline drops
its whole appended queue and the model on the wire (what has not fully left its link at
sub-tick off_start * R; counted in `dropped`, once per fragment like every full-model counter);
back online, it appends to an empty link at its next iteration end. (The authors' Swift
appends and never drops while the process lives; a node that leaves takes its queue with it.)
A model that arrives at an offline node is lost (counted in `lost` at the receiver, as with
`--loss-rate`) and replaces nothing in an inbox.

Download limits (`--download-mbps`, `divjax.network.downloads`), the rule DivShare uses: a model that
has left its sender's link queues at its receiver's download link, first come first served by
the sub-tick it got there, and joins the inbox at the first tick at or after it has been
received in full. Senders are not slowed (no backpressure): where more reaches a download link
than it drains (the testbed's stragglers), its queue, and the models' delay, grow without bound
(`--delay-ticks` is then the run's horizon). Swift drops nothing: without churn a model is
never lost on a download link. A sender going offline closes its connections, so a model not
received in full by then plus the latency is lost (as DivShare's deadline); a receiver going
offline at tick s must have received it by the end of tick s - 1. Swift's timing does not
depend on downloads or models, so every model's delivery is computed at init
(`download_table`, an (n, iterations, s) table), as for DivShare.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.base import Algorithm, Context, average_with_inbox, sample_peers
from divjax.algorithms.divshare import size_download_table
from divjax.algorithms.queues import (
    QueueState,
    appended_link_free,
    appended_queue_longest_delay,
    init_queue_state,
    queue_stop,
    queued_model_units,
    schedule_appended_queue,
    send_full_models,
)
from divjax.network.compute_schedule import (
    end_tick,
    has_offline,
    is_offline,
    shortest_ticks,
    stop_tick,
    window_index,
    window_tick,
)
from divjax.config import SimConfig, download_limited
from divjax.network.downloads import (
    decode,
    fifo_deliveries,
    message_units,
    reach_download_link,
    row_start_subticks,
)
from divjax.network.messages import collect
from divjax.network.links import (
    arrival_tick,
    latency_bounds_units,
    loss_modelled,
    message_lost,
    pair_latency_units,
)
from divjax.engine.state import tick_keys


class SwiftState(NamedTuple):
    """Swift's algorithm state."""

    queue: QueueState  # link end of queue and models queued, per node
    deliveries: jax.Array | tuple = ()  # with download limits: (n, S, s) int32
    #                                     `downloads` codes of iteration k's models


def swift_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                 s: int) -> jax.Array:
    """(s,) int32 distinct random neighbours of `node`, in the order its link sends to them."""
    return sample_peers(jax.random.fold_in(key, node), node, neighbors, degree, (), s)


def queue_length(state) -> jax.Array:
    """(n,) full models queued but neither fully sent nor dropped going offline (Swift,
    AD-PSGD; counters count a model once per fragment): the queue length."""
    c = state.counters
    return state.algo_state.queue.enqueued - c.sent[:, 0] - c.dropped // c.sent.shape[1]


def download_table(ctx: Context, k_sim: jax.Array) -> jax.Array:
    """(n, S, s) int32: for node i's iteration k < S = cfg.iteration_slots and its j-th model,
    the `downloads.fifo_deliveries` code (delivery tick, or -(tick lost) - 1); models that
    never reach a download link (not sent, lost on the way, reaching an offline node) hold
    their upload arrival tick. Every node's appended queue is walked iteration by iteration
    (all nodes at once, as `iteration_end` schedules them), then one FIFO per download link."""
    cfg, table = ctx.cfg, ctx.table
    n, S, T, R, s = cfg.n_nodes, cfg.iteration_slots, cfg.num_ticks, cfg.link_resolution, \
        cfg.fanout
    nodes = jnp.arange(n, dtype=jnp.int32)
    position = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (n, s))

    def one_iteration(link_free, k):
        t = end_tick(table, nodes, k)
        valid = t < T
        keys = jax.vmap(lambda tt: tick_keys(k_sim, tt))(t)
        recv = jax.vmap(lambda kk, i: swift_routes(kk, i, ctx.neighbors, ctx.degree, s))(
            keys.route, nodes)                                                   # (n, s)
        stop = queue_stop(cfg, table, nodes, t)
        stop = None if stop is None else jnp.broadcast_to(stop, (n,))
        sched = schedule_appended_queue(cfg, table, link_free, nodes,
                                        jnp.broadcast_to(valid[:, None], (n, s)), position, t,
                                        1, recv, stop)
        link_free = appended_link_free(cfg, table, link_free, nodes, valid,
                                       jnp.full((n,), s, jnp.int32), t, stop)
        lost = None
        if loss_modelled(cfg):   # each node's own tick's key
            lost = jax.vmap(lambda kk, i, r: message_lost(cfg, kk, i[None], (s,),
                                                          r[None])[0])(keys.spare, nodes, recv)
        enters, reach, deadline, arrival = reach_download_link(cfg, table, nodes, recv, sched,
                                                               lost, stop)
        return link_free, (jnp.where(enters, recv, n), reach, deadline,
                           message_units(table, recv, None), enters, arrival)

    _, (recv, avail, deadline, units, enters, upload_tick) = jax.lax.scan(
        one_iteration, jnp.zeros((n,), jnp.int32), jnp.arange(S, dtype=jnp.int32))
    flat = lambda x: jnp.swapaxes(x, 0, 1).reshape((n * S * s,) + x.shape[3:])  # noqa: E731
    code = fifo_deliveries(flat(recv), flat(avail), flat(deadline), flat(units),  # node-major
                           jnp.broadcast_to(nodes[:, None, None], (n, S, s)).reshape(-1), R, n,
                           row_start_subticks(table, R))
    return jnp.where(jnp.swapaxes(enters, 0, 1), code.reshape(n, S, s),
                     jnp.swapaxes(upload_tick, 0, 1))


def replaced_by_newer(ctx: Context, k_sim: jax.Array, node: jax.Array, valid: jax.Array,
                      recv: jax.Array, arrival: jax.Array, sent: jax.Array,
                      link_free: jax.Array, t: jax.Array, k: jax.Array,
                      deliveries: jax.Array | tuple = ()) -> jax.Array:
    """(C, s) bool: which full models queued at tick t a newer model from the same sender
    replaces in the receiver's inbox before the receiver aggregates (inbox "latest").

    The appended queue is deterministic: from the link's end of queue after this append
    (`link_free`, (C,) sub-ticks), the sender's later iteration ends t + i c (with compute
    jitter, its table's; tick t ends its iteration k (C,)) append s models each to receivers
    drawn from the keys of those ticks. A model is replaced when a later one
    to the same receiver arrives within the run in the same inbox window. The loop looks ahead
    while a later iteration end precedes the last aggregation these models join and the link
    can still deliver a later model before it. With download limits (`deliveries`, the
    `download_table`) a later model joins the inbox at its delivery tick, if it is not lost on
    its download link; `arrival` is then the delivery of these models.
    """
    cfg, table = ctx.cfg, ctx.table
    n, T, R, s = cfg.n_nodes, cfg.num_ticks, cfg.link_resolution, cfg.fanout
    safe = jnp.minimum(node, n - 1)
    lat_low = latency_bounds_units(table)[0][safe]                                  # (C,)
    window = window_index(table, recv, arrival)                                  # (C, s)
    last_agg = jnp.max(jnp.where(sent, window_tick(table, recv, window), 0), axis=1)
    horizon = jnp.where(valid, jnp.minimum(last_agg, T), 0)                      # (C,)
    position = jnp.arange(1, s + 1, dtype=jnp.int32)

    def pending(i, free):
        t_i = end_tick(table, safe, k + i)
        U = queued_model_units(table, safe, t_i)       # at the upload in force at t_i
        first = arrival_tick(jnp.maximum(free, t_i * R) + U, lat_low, R)       # earliest arrival
        return (t_i < horizon) & (first <= horizon)

    def body(carry):
        i, free, replaced = carry
        t_i = end_tick(table, safe, k + i)
        U = queued_model_units(table, safe, t_i)
        alive = pending(i, free)
        keys_i = jax.vmap(lambda tt: tick_keys(k_sim, tt))(t_i)
        recv_i = jax.vmap(lambda k, j: swift_routes(k, j, ctx.neighbors, ctx.degree, s))(
            keys_i.route, safe)                                                  # (C, s)
        start = jnp.maximum(free, t_i * R)
        leave_sub = start[:, None] + position * U[:, None]
        leave = (leave_sub + R - 1) // R
        arrival_i = arrival_tick(leave_sub, pair_latency_units(table, safe[:, None], recv_i), R)
        ok_i = alive[:, None] & (leave < T) & (arrival_i < T)
        stop_i = stop_tick(table, safe, t_i, jnp.int32(T))   # T, or going offline (churn)
        if loss_modelled(cfg):   # a newer model lost on the way replaces nothing
            ok_i = ok_i & ~jax.vmap(lambda k, j, r: message_lost(cfg, k, j[None], (s,),
                                                                 r[None])[0])(
                keys_i.spare, safe, recv_i)
        if has_offline(cfg):    # nor one dropped when its sender goes offline, nor one that
            ok_i = ok_i & (leave_sub <= stop_i[:, None] * R) & ~is_offline(  # reaches an
                table, recv_i, arrival_i)                                 # offline node
        if isinstance(deliveries, jax.Array):   # when, and whether, its download link takes it
            arrival_i, down_lost = decode(deliveries[safe, jnp.minimum(
                k + i, deliveries.shape[1] - 1)])
            ok_i = ok_i & (arrival_i < T) & ~down_lost
        same = ((recv[:, :, None] == recv_i[:, None, :]) & ok_i[:, None, :]
                & (window_index(table, recv[:, :, None], arrival_i[:, None, :])
                   == window[:, :, None]))                                       # (C, s, s')
        free = jnp.minimum(start + s * U, stop_i * R)
        return i + 1, free, replaced | jnp.any(same, axis=2)

    _, _, replaced = jax.lax.while_loop(
        lambda c: jnp.any(pending(c[0], c[1])), body,
        (jnp.int32(1), link_free, jnp.zeros(recv.shape, bool)))
    return replaced & sent


def make_swift(cfg: SimConfig) -> Algorithm:
    s = cfg.fanout

    def init(ctx: Context, params):
        del params  # all state is link timing
        queue = init_queue_state(ctx.cfg.n_nodes)
        if download_limited(ctx.cfg) and s > 0:
            return SwiftState(queue, download_table(ctx, ctx.k_sim))
        return SwiftState(queue)

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        C = node.shape[0]
        safe = jnp.minimum(node, ctx.cfg.n_nodes - 1)
        inbox, counters, q = state.inbox, state.counters, state.algo_state.queue
        if s > 0:
            recv = jax.vmap(lambda i: swift_routes(keys.route, i, ctx.neighbors, ctx.degree,
                                                   s))(safe)                      # (C, s)
            # churn: the queue is dropped when the node next goes offline (None: never)
            stop = queue_stop(ctx.cfg, ctx.table, node, t)
            link_free = appended_link_free(ctx.cfg, ctx.table, q.link_free, node, valid,
                                           jnp.full((C,), s, jnp.int32), t, stop)
            lost = message_lost(ctx.cfg, keys.spare, safe, (s,), recv)            # (C, s)
            deliveries, delivery = state.algo_state.deliveries, None
            if isinstance(deliveries, jax.Array):   # download limits: the table's row
                delivery = decode(deliveries[safe, jnp.minimum(state.iterations[safe],
                                                               deliveries.shape[1] - 1)])
            replaced_fn = None
            if ctx.cfg.inbox == "latest":
                def replaced_fn(sched):   # (lost ones are taken out by send_full_models)
                    return replaced_by_newer(ctx, state.k_sim, node, valid, recv,
                                             sched.arrival[..., 0], sched.sent[..., 0],
                                             link_free[safe], t, state.iterations[safe],
                                             deliveries)
            state, _ = send_full_models(ctx, state, q.link_free, node, valid, recv, trained, t,
                                        replaced_fn, lost, stop, delivery)
            inbox, counters = state.inbox, state.counters
            q = QueueState(link_free,
                           q.enqueued.at[jnp.where(valid, node, ctx.cfg.n_nodes)].add(
                               s, mode="drop"))
        inbox, got_total, got_count = collect(ctx.cfg, inbox, node, valid, ctx.table, t)
        averaged = average_with_inbox(trained, got_total, got_count)
        return state.replace(inbox=inbox, counters=counters,
                             algo_state=state.algo_state._replace(queue=q)), averaged

    def longest_delay(cfg_resolved: SimConfig, table) -> int:
        delay = appended_queue_longest_delay(cfg_resolved, table, s)
        if download_limited(cfg_resolved) and s > 0:
            # a download queue may hold a model until the run's end (never read after it)
            c_min = int(np.min(shortest_ticks(cfg_resolved, np.asarray(table.compute_ticks))))
            delay = max(delay, cfg_resolved.num_ticks - c_min)
        return delay

    def resolve_sizes(cfg_resolved: SimConfig, table) -> SimConfig:
        """With download limits: table every iteration of the run (iteration_slots)."""
        if not download_limited(cfg_resolved) or s == 0:
            return cfg_resolved
        return size_download_table(cfg_resolved, table)

    return Algorithm("swift", init, iteration_end, longest_delay=longest_delay,
                     resolve_sizes=resolve_sizes, keeps_nonfinite=True)
