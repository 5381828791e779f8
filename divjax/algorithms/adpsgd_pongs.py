"""AD-PSGD's pongs: every ping arriving at tick t is answered at t, by its receiver, with a pong
carrying the receiver's latest model, appended to the receiver's queue; a node answering
several pings answers them in increasing order of the pinging node, then of the ping's slot.
Pongs are answered level by level: level m holds the m-th pong of every node with more than m
pings due (`adpsgd_links.first_due`: its smallest entry not answered at an earlier level), its
responders in increasing order of id, scheduled and scattered B at a time. The work of a tick is
O(n Q) to find the due pings, O(n Q + n) per level (a segment min and a compaction, no sort), and
per chunk O(B) (times the ping table's Q for the "latest" rule's records), never n full models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divjax.algorithms.adpsgd_links import (
    due_pings,
    first_due,
    record_pongs,
    retract_replaced,
    take_level,
)
from divjax.algorithms.adpsgd_network import delivery_of, pong_lost
from divjax.algorithms.queues import (
    QueueState,
    appended_link_free,
    lost_or_offline,
    queue_stop,
    schedule_appended_queue,
)
from divjax.network.messages import push
from divjax.engine.state import ERR_HISTORY, ERR_RING_TOO_SHORT, flag_error


def active_ids(active: jax.Array, B: int) -> jax.Array:
    """(n + B,) int32: the ids of the `active` (n,) nodes in increasing order, then n (padding):
    a compaction by a cumulative sum, O(n)."""
    n = active.shape[0]
    pos = jnp.cumsum(active, dtype=jnp.int32) - 1
    return jnp.full((n + B,), n, jnp.int32).at[jnp.where(active, pos, n + B)].set(
        jnp.arange(n, dtype=jnp.int32), mode="drop")


def pong_batch(ctx, state, keys, t, latest_rule: bool, B: int, a, order, first, m, c):
    """Queue chunk c of the m-th pongs: the responders order[c B:(c + 1) B] ((n + B,): the
    nodes with an m-th pong, then n), each answering its ping at table entry first[r] (n,).
    Returns (inbox, counters, algo state, too_late () bool, history too short () bool)."""
    n = ctx.cfg.n_nodes
    q = a.queue
    K = a.latest.shape[1]
    Q = a.ping_arrival.shape[1]
    sender = jax.lax.dynamic_slice(order, (c * B,), (B,))
    valid = sender < n
    safe = jnp.minimum(sender, n - 1)
    at = first[safe]                     # node r's m-th pong answers the ping at entry at
    target = jnp.where(valid, at // Q, n - 1).astype(jnp.int32)
    stop = queue_stop(ctx.cfg, ctx.table, sender, t)     # churn: None or (B,)
    sched = schedule_appended_queue(ctx.cfg, ctx.table, q.link_free, sender, valid[:, None],
                                    jnp.full((B, 1), m, jnp.int32), t, K, target[:, None], stop)
    lost_p = pong_lost(ctx.cfg, keys.spare, safe, m, target)              # (B,)
    lost_p = lost_or_offline(ctx.cfg, ctx.table, None if lost_p is None else lost_p[:, None],
                             target[:, None], sched.arrival[..., 0])     # (B, 1)
    sched, lost_p = delivery_of(ctx.cfg, a.downloads, sched, lost_p, sender,
                                q.enqueued[safe][:, None] + m)
    arrives = sched.sent[..., 0]
    if lost_p is not None:
        arrives = arrives & ~lost_p
    inbox, counters, short = state.inbox, state.counters, jnp.bool_(False)
    if latest_rule:
        version = state.iterations[safe]
        inbox, counters, _, short, read = retract_replaced(
            ctx.cfg, ctx.table, inbox, counters, a, sender, target[:, None], arrives,
            sched.arrival[..., 0], version, t)
        a = record_pongs(a, jnp.where(valid, target, n), at % Q, arrives[:, 0],
                         sched.arrival[:, 0, 0], version, q.enqueued[safe] + m, n, read)
    none = jnp.zeros((B,), bool)
    inbox, counters, too_late = push(
        ctx.cfg, inbox, counters, ctx.table, sched, sender,
        none if stop is None else valid & (stop < ctx.cfg.num_ticks),
        jnp.broadcast_to(target[:, None, None], (B, 1, K)), a.latest[safe], None,
        None if lost_p is None else jnp.broadcast_to(lost_p[..., None], (B, 1, K)))
    return inbox, counters, a, too_late, short


def answer_level(ctx, state, keys, t, latest_rule: bool, B: int, carry):
    """The m-th pongs of every node with more than m pings due, B responders at a time; the
    entries answered leave `key`."""
    n = ctx.cfg.n_nodes
    m, key, inbox, counters, a, late, short = carry
    first = first_due(key, n)                                                   # (n,)
    active = first < key.shape[0]
    count = jnp.sum(active)
    order = active_ids(active, B)

    def chunk(carry):
        c, inbox, counters, a, late, short = carry
        inbox, counters, a, too_late, short_m = pong_batch(
            ctx, state.replace(inbox=inbox, counters=counters), keys, t, latest_rule, B,
            a, order, first, m, c)
        return c + 1, inbox, counters, a, late | too_late, short | short_m

    _, inbox, counters, a, late, short = jax.lax.while_loop(
        lambda c: c[0] * B < count, chunk, (jnp.int32(0), inbox, counters, a, late, short))
    return m + 1, take_level(key, first, n), inbox, counters, a, late, short


def answer_pings(ctx, state, keys, t, latest_rule: bool, B: int):
    """Answer the pings arriving at tick t with pongs carrying the latest models."""
    n = ctx.cfg.n_nodes
    key, total = due_pings(state.algo_state, t, n)                             # (n,) pongs
    B = min(n, B)

    def answer(state):
        a = state.algo_state
        q = a.queue
        ids = jnp.arange(n, dtype=jnp.int32)
        _, _, inbox, counters, a, late, short = jax.lax.while_loop(
            lambda c: c[0] < jnp.max(total),
            lambda c: answer_level(ctx, state, keys, t, latest_rule, B, c),
            (jnp.int32(0), key, state.inbox, state.counters, a,
             jnp.bool_(False), jnp.bool_(False)))
        q = QueueState(appended_link_free(ctx.cfg, ctx.table, q.link_free, ids, total > 0,
                                          total, t, queue_stop(ctx.cfg, ctx.table, ids, t)),
                       q.enqueued + total)
        state = flag_error(state, jnp.where(late, ERR_RING_TOO_SHORT, 0), t)
        state = flag_error(state, jnp.where(short, ERR_HISTORY, 0), t)
        return state.replace(inbox=inbox, counters=counters, algo_state=a._replace(queue=q))

    return jax.lax.cond(jnp.any(total > 0), answer, lambda s: s, state)
