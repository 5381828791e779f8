"""AD-PSGD's pongs: every ping arriving at tick t is answered at t, by its receiver, with a pong
carrying the receiver's latest model, appended to the receiver's queue; a node answering
several pings answers them in increasing order of the pinging node, then of the ping's slot.
Pongs are answered level by level: level m holds the m-th pong of every node with more than m
pings due, its responders in increasing order of id, scheduled and scattered B at a time (the
order a stable sort of the table by receiver gives; it fixes the float additions into inboxes).

A tick has as many levels as the most pings one node receives in it: a few with uniform peers,
about n / c with a hub (a star, a node everyone pings). Two ways to walk them, same order:
- `answer_level`: each level's pongs found by a segment min over the ping table
  (`adpsgd_links.first_due`) and its responders compacted by a cumulative sum, O(n Q + n)
  per level, no sort;
- `answer_sorted`: the due entries sorted once by (rank within their receiver, receiver)
  (`adpsgd_links.sorted_levels`, O(n Q log(n Q))), each level a slice of that order, O(B) per
  chunk of B responders (a chunk never spans two levels: one responder per level).
A tick answers its first `level_limit` levels (log2(n Q), or 4 log2(n Q) where the sort is
slower: about what the sort costs) the first way and the rest, if any, the second: O(n Q log(n Q)) per tick at worst, not O(n^2 Q) with a hub. Per chunk
O(B) (times the ping table's Q for the "latest" rule's records), never n full models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divjax.algorithms.adpsgd_links import (
    due_pings,
    first_due,
    packs,
    record_pongs,
    retract_replaced,
    sorted_levels,
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


def pong_batch(ctx, state, keys, t, latest_rule: bool, B: int, a, sender, at, m):
    """Queue a chunk of the m-th pongs: the responders `sender` (B,) (n: padding), each
    answering the ping at its table entry `at` (B,) (i * Q + j). Returns (inbox, counters,
    algo state, too_late () bool, history too short () bool)."""
    n = ctx.cfg.n_nodes
    q = a.queue
    K = a.latest.shape[1]
    Q = a.ping_arrival.shape[1]
    valid = sender < n
    safe = jnp.minimum(sender, n - 1)
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
        sender = jax.lax.dynamic_slice(order, (c * B,), (B,))
        inbox, counters, a, too_late, short_m = pong_batch(
            ctx, state.replace(inbox=inbox, counters=counters), keys, t, latest_rule, B,
            a, sender, first[jnp.minimum(sender, n - 1)], m)
        return c + 1, inbox, counters, a, late | too_late, short | short_m

    _, inbox, counters, a, late, short = jax.lax.while_loop(
        lambda c: c[0] * B < count, chunk, (jnp.int32(0), inbox, counters, a, late, short))
    return m + 1, take_level(key, first, n), inbox, counters, a, late, short


# Levels answered by `answer_level` (O(n Q) each) before the rest of a tick's levels are
# answered from one sort (`answer_sorted`, O(n Q log(n Q)) once, then O(B) per chunk); None: the
# default `level_limit`. Read at trace time (tests set it to force either path).
LEVEL_LIMIT: int | None = None


def level_limit(n: int, N: int) -> int:
    """Levels a tick answers by segment mins before it sorts its ping table of N entries: about
    what the sort costs in levels (measured on CPU: 12 levels at n = 4,096, Q = 13, where the
    pairs pack into one int32 key; 60 at n = 16,384 and 65,536, where they do not), so a tick
    costs at most about twice what the cheaper way alone would."""
    return int(N).bit_length() * (1 if packs(n, N) else 4)


def run_if(pred: jax.Array, f, x):
    """f(x) if pred else x, as a while loop of at most one step: under vmap a cond with a
    batched predicate runs both branches for every member, this runs f only when some
    member's pred holds (and keeps x for the others)."""
    return jax.lax.while_loop(lambda c: c[0], lambda c: (jnp.bool_(False), f(c[1])),
                              (pred, x))[1]


def answer_sorted(ctx, state, keys, t, latest_rule: bool, B: int, carry):
    """The levels m0, m0 + 1, ... of the pings `key` still due (carry: as `answer_level`'s,
    m0 levels done): ordered once by (rank, responder) (`sorted_levels`), each level's
    responders read from its slice of that order, B at a time. The same pongs in the same
    order as `answer_level` level after level, at O(B) per chunk instead of O(n Q) per level."""
    n = ctx.cfg.n_nodes
    m0, key, inbox, counters, a, late, short = carry
    recv, entry, count, start, levels = sorted_levels(key, n, B)
    lane = jnp.arange(B, dtype=jnp.int32)

    def level(carry):
        m, inbox, counters, a, late, short = carry

        def chunk(carry):
            c, inbox, counters, a, late, short = carry
            at = start[m] + c * B
            inside = c * B + lane < count[m]           # chunks never reach the next level
            sender = jnp.where(inside, jax.lax.dynamic_slice(recv, (at,), (B,)), n)
            inbox, counters, a, too_late, short_m = pong_batch(
                ctx, state.replace(inbox=inbox, counters=counters), keys, t, latest_rule, B,
                a, sender, jax.lax.dynamic_slice(entry, (at,), (B,)), m0 + m)
            return c + 1, inbox, counters, a, late | too_late, short | short_m

        _, inbox, counters, a, late, short = jax.lax.while_loop(
            lambda c: c[0] * B < count[m], chunk, (jnp.int32(0), inbox, counters, a, late, short))
        return m + 1, inbox, counters, a, late, short

    _, inbox, counters, a, late, short = jax.lax.while_loop(
        lambda c: c[0] < levels, level, (jnp.int32(0), inbox, counters, a, late, short))
    return m0 + levels, jnp.full_like(key, n), inbox, counters, a, late, short


def answer_pings(ctx, state, keys, t, latest_rule: bool, B: int):
    """Answer the pings arriving at tick t with pongs carrying the latest models: the first
    `level_limit` levels by `answer_level`, the rest (a hub: a node receiving many pings at
    once) by `answer_sorted`; either way in the same order, so with the same bits."""
    n = ctx.cfg.n_nodes
    key, total = due_pings(state.algo_state, t, n)                             # (n,) pongs
    B = min(n, B)
    limit = level_limit(n, key.shape[0]) if LEVEL_LIMIT is None else LEVEL_LIMIT
    most = jnp.max(total)

    def answer(state):
        a = state.algo_state
        q = a.queue
        ids = jnp.arange(n, dtype=jnp.int32)
        carry = jax.lax.while_loop(
            lambda c: c[0] < jnp.minimum(most, limit),
            lambda c: answer_level(ctx, state, keys, t, latest_rule, B, c),
            (jnp.int32(0), key, state.inbox, state.counters, a,
             jnp.bool_(False), jnp.bool_(False)))
        _, _, inbox, counters, a, late, short = run_if(
            most > limit, lambda c: answer_sorted(ctx, state, keys, t, latest_rule, B, c),
            carry)
        q = QueueState(appended_link_free(ctx.cfg, ctx.table, q.link_free, ids, total > 0,
                                          total, t, queue_stop(ctx.cfg, ctx.table, ids, t)),
                       q.enqueued + total)
        state = flag_error(state, jnp.where(late, ERR_RING_TOO_SHORT, 0), t)
        state = flag_error(state, jnp.where(short, ERR_HISTORY, 0), t)
        return state.replace(inbox=inbox, counters=counters, algo_state=a._replace(queue=q))

    return jax.lax.cond(jnp.any(total > 0), answer, lambda s: s, state)
