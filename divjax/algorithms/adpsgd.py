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
- the authors keep the latest model per sender in the inbox; the engine averages every model that
  arrived (divjax.reference_baselines implements both rules).
Within one tick, arrivals come first, then pongs (in increasing order of the pinging node's id),
then iteration ends; a pong answering a ping that arrives at the tick its receiver finishes an
iteration carries the receiver's previous snapshot.

Ring sizing: pong times depend on the random pings, so the rings are sized for the run's horizon
(`longest_delay`: T - 1 - min compute + max latency ticks) unless `cfg.delay_ticks` is set; a
delay beyond the rings raises ERR_RING_TOO_SHORT, never a silent drop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.base import Algorithm, Context
from divjax.algorithms.queues import (
    QueueState,
    appended_link_free,
    check_link_clock,
    init_queue_state,
    schedule_appended_queue,
    send_full_models,
)
from divjax.config import SimConfig
from divjax.network import collect, push
from divjax.state import ERR_RING_TOO_SHORT, flag_error


class ADPSGDState(NamedTuple):
    """AD-PSGD's algorithm state."""

    queue: QueueState    # link end of queue and models queued, per node
    latest: jax.Array    # (n, K, F) float32: every node's latest post-training snapshot
    pings: jax.Array     # (Lp, n, n) int32: [arrival tick mod Lp, receiver, sender] ping counts


def adpsgd_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                  p: int) -> jax.Array:
    """(p,) int32 neighbours of `node` drawn uniformly WITH replacement, in queue order."""
    idx = jax.random.randint(jax.random.fold_in(key, node), (p,), 0, degree[node])
    return neighbors[node][idx]


def make_adpsgd(cfg: SimConfig) -> Algorithm:
    p = cfg.fanout // 2

    def init(ctx: Context, params):
        n = ctx.cfg.n_nodes
        Lp = ctx.cfg.delay_ticks + 1  # as long as the counters' ring: every delay fits
        return ADPSGDState(init_queue_state(n), params,
                           jnp.zeros((Lp, n, n), jnp.int32))

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        C = node.shape[0]
        n = ctx.cfg.n_nodes
        safe = jnp.minimum(node, n - 1)
        drop = jnp.where(valid, node, n)
        a = state.algo_state
        inbox, counters, q, pings = state.inbox, state.counters, a.queue, a.pings
        latest = a.latest.at[drop].set(trained, mode="drop")
        if p > 0:
            recv = jax.vmap(lambda i: adpsgd_routes(keys.route, i, ctx.neighbors, ctx.degree,
                                                    p))(safe)                     # (C, p)
            state, sched = send_full_models(ctx, state, q.link_free, node, valid, recv, trained,
                                            t)
            inbox, counters = state.inbox, state.counters
            sent = sched.sent[..., 0]
            pings = pings.at[sched.arrival[..., 0] % pings.shape[0],
                             jnp.where(sent, recv, n),
                             jnp.broadcast_to(safe[:, None], (C, p))].add(1, mode="drop")
            q = QueueState(
                appended_link_free(ctx.cfg, ctx.table, q.link_free, node, valid,
                                   jnp.full((C,), p, jnp.int32), t),
                q.enqueued.at[drop].add(p, mode="drop"))
        inbox, got_total, got_count = collect(ctx.cfg, inbox, node, valid,
                                              ctx.table.compute_ticks, t)
        averaged = (trained + got_total) / (1.0 + got_count)[..., None]
        return state.replace(inbox=inbox, counters=counters,
                             algo_state=ADPSGDState(q, latest, pings)), averaged

    def on_tick(ctx: Context, state, keys, t):
        """Answer the pings arriving at tick t with pongs carrying the latest models."""
        del keys  # pongs draw nothing
        n = ctx.cfg.n_nodes
        a = state.algo_state
        slot = t % a.pings.shape[0]
        count = a.pings[slot]                                                  # (recv, send)
        total = jnp.sum(count, axis=1)                                         # (n,) pongs
        state = state.replace(algo_state=a._replace(pings=a.pings.at[slot].set(0)))

        def answer(state):
            a = state.algo_state
            q = a.queue
            K = a.latest.shape[1]
            cum = jnp.cumsum(count, axis=1)                                    # (n, n)
            sender = jnp.arange(n, dtype=jnp.int32)
            none = jnp.zeros((n,), bool)

            def body(carry):
                m, inbox, counters, late = carry
                # node r's m-th pong goes to the pinging node j with cum[r, j-1] <= m < cum[r, j]
                target = jnp.minimum(jnp.sum(cum <= m, axis=1), n - 1).astype(jnp.int32)
                sched = schedule_appended_queue(ctx.cfg, ctx.table, q.link_free, sender,
                                                (total > m)[:, None],
                                                jnp.full((n, 1), m, jnp.int32), t, K)
                inbox, counters, too_late = push(
                    ctx.cfg, inbox, counters, ctx.table, sched, sender, none,
                    jnp.broadcast_to(target[:, None, None], (n, 1, K)), a.latest)
                return m + 1, inbox, counters, late | too_late

            _, inbox, counters, late = jax.lax.while_loop(
                lambda c: c[0] < jnp.max(total), body,
                (jnp.int32(0), state.inbox, state.counters, jnp.bool_(False)))
            q = QueueState(appended_link_free(ctx.cfg, ctx.table, q.link_free, sender,
                                              total > 0, total, t),
                           q.enqueued + total)
            state = flag_error(state, jnp.where(late, ERR_RING_TOO_SHORT, 0), t)
            return state.replace(inbox=inbox, counters=counters,
                                 algo_state=a._replace(queue=q))

        return jax.lax.cond(jnp.any(total > 0), answer, lambda s: s, state)

    def longest_delay(cfg_resolved: SimConfig, table) -> int:
        # a pong is queued when a random ping arrives: bound by the run's horizon
        check_link_clock(cfg_resolved, table, max(p, cfg_resolved.n_nodes * max(p, 1)))
        if cfg_resolved.delay_ticks > 0:
            return cfg_resolved.delay_ticks
        c_min = int(np.min(np.asarray(table.compute_ticks)))
        lat_max = int(np.max(np.asarray(table.latency_ticks)))
        return max(1, cfg_resolved.num_ticks - 1 - c_min + lat_max)

    return Algorithm("adpsgd", init, iteration_end, on_tick=on_tick,
                     longest_delay=longest_delay)
