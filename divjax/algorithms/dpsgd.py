"""D-PSGD (Lian et al., NeurIPS 2017, "Can decentralized algorithms outperform centralized
algorithms?"): synchronous gossip on a fixed graph with Metropolis-Hastings weights.

Every round each node takes its local steps, sends its post-training model to every neighbour
and replaces its model by x_i = sum_j W_ij y_j (W: Metropolis-Hastings weights of the topology,
symmetric and doubly stochastic). A round lasts as long as its slowest node and link
(`sync_round_timing`): the slowest compute time, plus the time the slowest link needs to send its
node's model to all of its neighbours one after another, plus the largest latency. Every node
therefore ends its round at the same tick; the engine gathers them all there and mixes directly.
Counters: node i sends deg_i full models per round (counted once per fragment, like every full
model message in divjax, see divjax.algorithms.queues), counted at the round end.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from divjax.algorithms.base import Algorithm, Context
from divjax.algorithms.queues import sync_round_timing
from divjax.config import SimConfig
from divjax.topology import adjacency, metropolis_hastings


def gather_all(trained, node, valid, n):
    """(n, K, F) models of every node from the C gathered ones (all nodes end together)."""
    drop = jnp.where(valid, node, n)
    return jnp.zeros((n,) + trained.shape[1:], trained.dtype).at[drop].set(trained, mode="drop")


def count_full_models(counters, node, valid, sent_per_node, recv_per_node, K, n):
    """Add synchronous full-model messages to the totals (sent per fragment, delivered per
    fragment), for the C gathered senders and every receiver."""
    drop = jnp.where(valid, node, n)
    safe = jnp.minimum(node, n - 1)
    sent = counters.sent.at[drop].add(
        jnp.broadcast_to(sent_per_node[safe][:, None], (node.shape[0], K)), mode="drop")
    return counters._replace(sent=sent, delivered=counters.delivered + K * recv_per_node)


def make_dpsgd(cfg: SimConfig) -> Algorithm:
    adj = adjacency(cfg)
    W_np = metropolis_hastings(adj)
    deg_np = adj.sum(1).astype(np.int32)

    def init(ctx: Context, params):
        del ctx, params  # the mixing matrix is a constant
        return ()

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        del keys, t  # deterministic mixing
        n, K = ctx.cfg.n_nodes, trained.shape[1]
        y = gather_all(trained, node, valid, n)
        x = jnp.einsum("ij,jkf->ikf", jnp.asarray(W_np, jnp.float32), y)
        deg = jnp.asarray(deg_np)
        counters = count_full_models(state.counters, node, valid, deg,
                                     jnp.where(jnp.any(valid), deg, 0), K, n)
        return state.replace(counters=counters), x[jnp.minimum(node, n - 1)]

    def adjust_timing(cfg_, table):
        del cfg_
        return sync_round_timing(cfg, table, deg_np)

    def longest_delay(cfg_, table) -> int:
        del cfg_, table  # messages are mixed at the round end: nothing waits in the ring
        return 1

    return Algorithm("dpsgd", init, iteration_end, adjust_timing=adjust_timing,
                     longest_delay=longest_delay)
