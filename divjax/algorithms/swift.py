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

Churn (`--churn-rate`, or a trace's offline rows; `divjax.compute_schedule`), as for DivShare:
an offline node does not train (its iteration is paused) and does not send. Going offline drops
its whole appended queue and the model on the wire (what has not fully left its link at
sub-tick off_start * R; counted in `dropped`, once per fragment like every full-model counter);
back online, it appends to an empty link at its next iteration end. (The authors' Swift
appends and never drops while the process lives; a node that leaves takes its queue with it.)
A model that arrives at an offline node is lost (counted in `lost` at the receiver, as with
`--loss-rate`) and replaces nothing in an inbox.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from divjax.algorithms.base import Algorithm, Context, average_with_inbox, sample_peers
from divjax.algorithms.queues import (
    QueueState,
    appended_link_free,
    appended_queue_longest_delay,
    init_queue_state,
    model_units,
    queue_stop,
    send_full_models,
)
from divjax.compute_schedule import (
    end_tick,
    has_offline,
    is_offline,
    stop_tick,
    window_index,
    window_tick,
)
from divjax.config import SimConfig
from divjax.messages import collect
from divjax.network import (
    arrival_tick,
    latency_bounds_units,
    loss_modelled,
    message_lost,
    pair_latency_units,
)
from divjax.state import tick_keys


class SwiftState(NamedTuple):
    """Swift's algorithm state."""

    queue: QueueState  # link end of queue and models queued, per node


def swift_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                 s: int) -> jax.Array:
    """(s,) int32 distinct random neighbours of `node`, in the order its link sends to them."""
    return sample_peers(jax.random.fold_in(key, node), node, neighbors, degree, (), s)


def queue_length(state) -> jax.Array:
    """(n,) full models queued but neither fully sent nor dropped going offline (Swift,
    AD-PSGD; counters count a model once per fragment): the queue length."""
    c = state.counters
    return state.algo_state.queue.enqueued - c.sent[:, 0] - c.dropped // c.sent.shape[1]


def replaced_by_newer(ctx: Context, k_sim: jax.Array, node: jax.Array, valid: jax.Array,
                      recv: jax.Array, arrival: jax.Array, sent: jax.Array,
                      link_free: jax.Array, t: jax.Array, k: jax.Array) -> jax.Array:
    """(C, s) bool: which full models queued at tick t a newer model from the same sender
    replaces in the receiver's inbox before the receiver aggregates (inbox "latest").

    The appended queue is deterministic: from the link's end of queue after this append
    (`link_free`, (C,) sub-ticks), the sender's later iteration ends t + i c (with compute
    jitter, its table's; tick t ends its iteration k (C,)) append s models each to receivers
    drawn from the keys of those ticks. A model is replaced when a later one
    to the same receiver arrives within the run in the same inbox window. The loop looks ahead
    while a later iteration end precedes the last aggregation these models join and the link
    can still deliver a later model before it.
    """
    cfg, table = ctx.cfg, ctx.table
    n, T, R, s = cfg.n_nodes, cfg.num_ticks, cfg.link_resolution, cfg.fanout
    safe = jnp.minimum(node, n - 1)
    U = model_units(table)[safe]
    lat_low = latency_bounds_units(table)[0][safe]                                  # (C,)
    window = window_index(table, recv, arrival)                                  # (C, s)
    last_agg = jnp.max(jnp.where(sent, window_tick(table, recv, window), 0), axis=1)
    horizon = jnp.where(valid, jnp.minimum(last_agg, T), 0)                      # (C,)
    position = jnp.arange(1, s + 1, dtype=jnp.int32)

    def pending(i, free):
        t_i = end_tick(table, safe, k + i)
        first = arrival_tick(jnp.maximum(free, t_i * R) + U, lat_low, R)       # earliest arrival
        return (t_i < horizon) & (first <= horizon)

    def body(carry):
        i, free, replaced = carry
        t_i = end_tick(table, safe, k + i)
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
        return SwiftState(init_queue_state(ctx.cfg.n_nodes))

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
            replaced_fn = None
            if ctx.cfg.inbox == "latest":
                def replaced_fn(sched):   # (lost ones are taken out by send_full_models)
                    return replaced_by_newer(ctx, state.k_sim, node, valid, recv,
                                             sched.arrival[..., 0], sched.sent[..., 0],
                                             link_free[safe], t, state.iterations[safe])
            state, _ = send_full_models(ctx, state, q.link_free, node, valid, recv, trained, t,
                                        replaced_fn, lost, stop)
            inbox, counters = state.inbox, state.counters
            q = QueueState(link_free,
                           q.enqueued.at[jnp.where(valid, node, ctx.cfg.n_nodes)].add(
                               s, mode="drop"))
        inbox, got_total, got_count = collect(ctx.cfg, inbox, node, valid, ctx.table, t)
        averaged = average_with_inbox(trained, got_total, got_count)
        return state.replace(inbox=inbox, counters=counters,
                             algo_state=SwiftState(q)), averaged

    def longest_delay(cfg_resolved: SimConfig, table) -> int:
        return appended_queue_longest_delay(cfg_resolved, table, s)

    return Algorithm("swift", init, iteration_end, longest_delay=longest_delay)
