"""Epidemic Learning (de Vos et al., NeurIPS 2023, "Epidemic Learning: boosting decentralized
learning with randomized communication"), the EL-Oracle variant: synchronous rounds in which every
node sends its post-training model to `fanout` distinct random peers (drawn from its neighbours:
every other node with topology="complete", as in EL-Oracle) and every node averages the models it
received with its own, x_j = (y_j + sum of received) / (1 + number received).

A round lasts the slowest compute time, plus the time the slowest link needs to send `fanout`
full models one after another, plus the largest latency (`sync_round_timing`); every node ends
its round at the same tick and is gathered there. Counters as for D-PSGD (once per fragment).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.base import Algorithm, Context, sample_peers
from divjax.algorithms.dpsgd import count_full_models, gather_all
from divjax.algorithms.queues import sync_round_timing
from divjax.config import SimConfig


def epidemic_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                    s: int) -> jax.Array:
    """(s,) int32 distinct random peers `node` sends its model to this round."""
    return sample_peers(jax.random.fold_in(key, node), node, neighbors, degree, (), s)


def make_epidemic(cfg: SimConfig) -> Algorithm:
    s = cfg.fanout

    def init(ctx: Context, params):
        del ctx, params  # stateless
        return ()

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        del t  # receivers come from the tick keys
        n, K = ctx.cfg.n_nodes, trained.shape[1]
        y = gather_all(trained, node, valid, n)
        if s == 0:
            return state, trained
        safe = jnp.minimum(node, n - 1)
        recv = jax.vmap(lambda i: epidemic_routes(keys.route, i, ctx.neighbors, ctx.degree,
                                                  s))(safe)                       # (C, s)
        recv = jnp.where(valid[:, None], recv, n)
        # A[r, i] = 1 if i sent its model to r this round
        A = jnp.zeros((n, n), jnp.float32).at[recv, safe[:, None]].add(1.0, mode="drop")
        got = jnp.sum(A, axis=1)
        x = (y + jnp.einsum("ri,ikf->rkf", A, y)) / (1.0 + got)[:, None, None]
        counters = count_full_models(state.counters, node, valid,
                                     jnp.full((n,), s, jnp.int32), got.astype(jnp.int32), K, n)
        return state.replace(counters=counters), x[safe]

    def adjust_timing(cfg_, table):
        del cfg_
        return sync_round_timing(cfg, table, np.full(cfg.n_nodes, s, np.int32))

    def longest_delay(cfg_, table) -> int:
        del cfg_, table  # received models are averaged at the round end
        return 1

    return Algorithm("epidemic", init, iteration_end, adjust_timing=adjust_timing,
                     longest_delay=longest_delay)
