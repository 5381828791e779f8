"""Epidemic Learning (de Vos et al., NeurIPS 2023, "Epidemic Learning: boosting decentralized
learning with randomized communication"), the EL-Oracle variant: synchronous rounds in which every
node sends its post-training model to `fanout` distinct random peers (drawn from its neighbours:
every other node with topology="complete", as in EL-Oracle) and every node averages the models it
received with its own, x_j = (y_j + sum of received) / (1 + number received).

A round lasts the slowest compute time, plus the time the slowest link needs to send `fanout`
full models one after another, plus the largest latency (`sync_round_timing`); every node ends
its round at the same tick and mixes there, also when the engine hands the round's nodes over in
chunks (`dpsgd.sync_iteration_end`). Counters as for D-PSGD (once per fragment).

Message loss (`--loss-rate p`): every model sent is lost independently with probability p
(`network.message_lost` from the round's spare key and the sender, one draw per peer in send
order); it counts as sent, is counted in `lost` at its receiver, and the receiver averages only
what arrived.

Churn (`--churn-rate`, `--churn-mean-s`): as for D-PSGD (divjax.algorithms.dpsgd), rounds keep
their one length, and a node offline at a round end skips it (no training, no sending, no
averaging; model, optimizer state and iteration count stay). An online node still draws its
`fanout` peers among all its neighbours, offline ones included: a model sent to an offline
peer is sent and counted in `lost` at that peer (as a lost message); an online node averages
what arrived.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.base import Algorithm, Context, average_with_inbox, sample_peers
from divjax.algorithms.dpsgd import offline_now, sync_iteration_end
from divjax.algorithms.queues import sync_round_timing
from divjax.config import SimConfig
from divjax.network.links import message_lost


def epidemic_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                    s: int) -> jax.Array:
    """(s,) int32 distinct random peers `node` sends its model to this round."""
    return sample_peers(jax.random.fold_in(key, node), node, neighbors, degree, (), s)


def receive_models(y: jax.Array, arrived: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-receiver sums of the models that arrived, by scatter-add from the send lists.

    y: (n, K, F) the senders' models; arrived: (n, s) int32, arrived[i, c] the node that
    received i's c-th model this round, or n where it did not arrive. Returns total
    (n, K, F), the sum of the models each node received, and got (n,) int32, how many.
    O(n s K F) work and O(n K F) memory (one send column at a time; the send lists are small
    and static): no (n, n) array.
    """
    n = y.shape[0]
    total = jnp.zeros_like(y)
    got = jnp.zeros((n,), jnp.int32)
    for c in range(arrived.shape[1]):   # s columns, static and small
        total = total.at[arrived[:, c]].add(y, mode="drop")
        got = got.at[arrived[:, c]].add(1, mode="drop")
    return total, got


def make_epidemic(cfg: SimConfig) -> Algorithm:
    s = cfg.fanout

    def init(ctx: Context, params):
        del ctx, params  # stateless
        return ()

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        if s == 0:
            return state, trained
        n = ctx.cfg.n_nodes

        def mix(y, handled):
            # every node of the round sends its model to s peers drawn from the tick's key
            sender = jnp.arange(n, dtype=jnp.int32)
            recv = jax.vmap(lambda i: epidemic_routes(keys.route, i, ctx.neighbors, ctx.degree,
                                                      s))(sender)                 # (n, s)
            recv = jnp.where(handled[:, None], recv, n)   # an offline node sends nothing
            lost = message_lost(ctx.cfg, keys.spare, sender, (s,), recv)         # (n, s)
            off = offline_now(ctx, t)
            if off is not None:   # a model that reaches an offline node is lost
                gone = jnp.append(off, False)[recv]
                lost = gone if lost is None else lost | gone
            arrived = recv if lost is None else jnp.where(lost, n, recv)          # (n, s)
            total, got = receive_models(y, arrived)
            x = average_with_inbox(y, total, got[:, None].astype(y.dtype))
            if lost is None:
                return x, got
            missing = jnp.zeros((n,), jnp.int32).at[jnp.where(lost, recv, n)].add(
                1, mode="drop")
            return x, got, missing

        return sync_iteration_end(ctx, state, node, valid, trained, t,
                                  jnp.full((n,), s, jnp.int32), mix)

    def adjust_timing(cfg_, table):
        del cfg_
        return sync_round_timing(cfg, table, np.full(cfg.n_nodes, s, np.int32))

    def longest_delay(cfg_, table) -> int:
        del cfg_, table  # received models are averaged at the round end
        return 1

    return Algorithm("epidemic", init, iteration_end, synchronous=True,
                     adjust_timing=adjust_timing,
                     longest_delay=longest_delay)
