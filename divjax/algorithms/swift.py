"""Swift (Bornstein et al., ICLR 2023, "SWIFT: rapid decentralized federated learning via
wait-free model communication"), with the semantics of the DivShare authors' `node/Swift.py`.

The same loop and order as DivShare (train, queue the post-training model, aggregate) with the
full model as one message to `fanout` distinct random neighbours, and the outgoing queue
APPENDED to, never replaced: on a slow link it grows without bound (`QueueState.enqueued` minus
the models sent, see `queue_length`). Nobody waits for anybody. At its iteration end a node
averages its model with every model that arrived since its last aggregation (the engine's "sum"
inbox; the authors keep the latest per sender, see divjax.reference_baselines).
See ../../shared/paper.md.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from divjax.algorithms.base import Algorithm, Context, sample_peers
from divjax.algorithms.queues import (
    QueueState,
    appended_link_free,
    appended_queue_longest_delay,
    init_queue_state,
    send_full_models,
)
from divjax.config import SimConfig
from divjax.network import collect


class SwiftState(NamedTuple):
    """Swift's algorithm state."""

    queue: QueueState  # link end of queue and models queued, per node


def swift_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                 s: int) -> jax.Array:
    """(s,) int32 distinct random neighbours of `node`, in the order its link sends to them."""
    return sample_peers(jax.random.fold_in(key, node), node, neighbors, degree, (), s)


def queue_length(state) -> jax.Array:
    """(n,) full models queued but not yet fully sent (Swift, AD-PSGD): the queue length."""
    return state.algo_state.queue.enqueued - state.counters.sent[:, 0]


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
            state, _ = send_full_models(ctx, state, q.link_free, node, valid, recv, trained, t)
            inbox, counters = state.inbox, state.counters
            q = QueueState(
                appended_link_free(ctx.cfg, ctx.table, q.link_free, node, valid,
                                   jnp.full((C,), s, jnp.int32), t),
                q.enqueued.at[jnp.where(valid, node, ctx.cfg.n_nodes)].add(s, mode="drop"))
        inbox, got_total, got_count = collect(ctx.cfg, inbox, node, valid,
                                              ctx.table.compute_ticks, t)
        averaged = (trained + got_total) / (1.0 + got_count)[..., None]
        return state.replace(inbox=inbox, counters=counters,
                             algo_state=SwiftState(q)), averaged

    def longest_delay(cfg_resolved: SimConfig, table) -> int:
        return appended_queue_longest_delay(cfg_resolved, table, s)

    return Algorithm("swift", init, iteration_end, longest_delay=longest_delay)
