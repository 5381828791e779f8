"""DivShare (Biswas et al., WWW 2025, arXiv 2410.12918), with the semantics of the authors' code.

At the end of each iteration a node (1) cuts its post-training model into the K fixed fragments,
(2) drops whatever of its previous queue has not fully left its link, (3) queues K*s messages,
each fragment to s distinct random neighbours, in random order, and (4) averages every
coordinate of its model with the fragments that have arrived since its last aggregation:
x[c] = (x[c] + sum of received values of c) / (1 + number received). See ../shared/paper.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divjax.algorithms.base import Algorithm, Context, sample_peers
from divjax.config import SimConfig
from divjax.network import collect, push, schedule_replaced_queue
from divjax.state import ERR_RING_TOO_SHORT, flag_error


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


def make_divshare(cfg: SimConfig) -> Algorithm:
    K, s = cfg.n_fragments, cfg.fanout

    def init(ctx: Context, params):
        del ctx, params  # DivShare keeps no state beyond the inbox.
        return ()

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        C = node.shape[0]
        safe = jnp.minimum(node, cfg.n_nodes - 1)
        inbox, counters = state.inbox, state.counters
        if s > 0:
            receivers, queue = jax.vmap(
                lambda i: divshare_routes(keys.route, i, ctx.neighbors, ctx.degree, K, s))(safe)
            fragment_q = queue % K                                               # (C, M)
            units_q = jnp.take_along_axis(ctx.table.msg_units[safe], fragment_q, axis=1)
            sched = schedule_replaced_queue(ctx.table, node, valid, units_q, t,
                                            cfg.link_resolution)
            # back from queue order to message order m = j * K + k, then (C, s, K)
            to_msg = jnp.argsort(queue, axis=1)
            unq = lambda x: jnp.take_along_axis(x, to_msg, axis=1).reshape(C, s, K)  # noqa: E731
            sched = sched._replace(sent=unq(sched.sent), leave_tick=unq(sched.leave_tick),
                                   arrival=unq(sched.arrival))
            inbox, counters, too_late = push(cfg, inbox, counters, ctx.table, sched, node,
                                             valid, receivers, trained)
            state = flag_error(state, jnp.where(too_late, ERR_RING_TOO_SHORT, 0), t)
        # with s = 0 nothing is sent, and replacing the (empty) old queue drops nothing
        inbox, got_total, got_count = collect(cfg, inbox, node, valid,
                                              ctx.table.compute_ticks, t)
        averaged = (trained + got_total) / (1.0 + got_count)[..., None]
        return state.replace(inbox=inbox, counters=counters), averaged

    return Algorithm("divshare", init, iteration_end)
