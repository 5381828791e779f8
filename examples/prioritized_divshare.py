"""A DivShare variant as a plug-in algorithm: fragments sent in order of importance.

    divjax compare --algorithms divshare,examples/prioritized_divshare.py:make_prioritized \
        --n-stragglers 7 --inbox sum

DivShare (Biswas et al., WWW 2025) queues its K*s fragment messages in random order and drops
what has not left the link when the next iteration ends, so a slow link sends a random part of
the model. Here a node sends first the fragments that changed most since its previous
iteration end (L2 norm of the change; ties in random order): what a slow link gets through is
the most-changed part of the model, an importance rule in the spirit of top-k sparsification
(Stich et al., NeurIPS 2018) applied to DivShare's fixed fragments. Receivers average each
coordinate with what arrived, as in DivShare.

The factory returns a `divjax.Algorithm` built from divjax's public pieces: `sample_peers`
(receivers), `schedule_replaced_queue` (the link clock), `push` / `collect` (the delay ring)
and `average_with_inbox`. It keeps one array of state, the model each node last sent from,
(n, K, F). Checked by `divjax.testing.check_algorithm` in tests/test_examples.py.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from divjax.algorithms.base import Algorithm, average_with_inbox, sample_peers
from divjax.network.compute_schedule import end_tick, has_offline, is_offline, stop_tick
from divjax.config import ConfigError, download_limited
from divjax.network.messages import collect, push
from divjax.network.links import message_lost, schedule_replaced_queue, units_at
from divjax.engine.state import ERR_RING_TOO_SHORT, flag_error


class PrioritizedState(NamedTuple):
    last: jax.Array     # (n, K, F) float32: each node's model at its previous iteration end


def importance_queue(key, trained, last, s: int):
    """(M,) message indices m = j * K + k, most-changed fragment first (random among ties)."""
    K = trained.shape[0]
    change = jnp.linalg.norm(trained - last, axis=-1)                 # (K,)
    m = jnp.arange(s * K)
    tie = jax.random.permutation(key, s * K)
    return jnp.lexsort((tie, -change[m % K]))


def make_prioritized(cfg):
    if download_limited(cfg) or cfg.inbox != "sum":
        raise ConfigError("prioritized DivShare models neither download limits nor the "
                          "'latest' inbox: use --inbox sum and no --download-mbps")
    s = cfg.fanout

    def init(ctx, params):
        return PrioritizedState(last=params)

    def iteration_end(ctx, state, node, valid, trained, keys, t):
        K, n = ctx.layout.K, cfg.n_nodes
        safe = jnp.minimum(node, n - 1)
        last = state.algo_state.last[safe]                                   # (C, K, F)
        C = node.shape[0]
        # one key per node, folded from the tick's key: independent of how nodes are chunked
        k_node = jax.vmap(jax.random.fold_in)(jnp.broadcast_to(keys.route, (C,)), safe)
        k_pick, k_tie = jnp.moveaxis(jax.vmap(jax.random.split)(k_node), 1, 0)
        peers = jax.vmap(lambda k, i: sample_peers(k, i, ctx.neighbors, ctx.degree, (K,), s))(
            k_pick, safe)                                                    # (C, K, s)
        receivers = jnp.swapaxes(peers, 1, 2)                                # (C, s, K)
        queue = jax.vmap(importance_queue, (0, 0, 0, None))(k_tie, trained, last, s)  # (C, M)
        units_q = jnp.take_along_axis(units_at(ctx.table, safe, t), queue % K, axis=1)
        recv_q = jnp.take_along_axis(receivers.reshape(C, s * K), queue, axis=1)
        stop = stop_tick(ctx.table, safe, t, end_tick(ctx.table, safe,
                                                      state.iterations[safe] + 1))
        sched = schedule_replaced_queue(ctx.table, node, valid, units_q, t,
                                        cfg.link_resolution, recv_q, stop)
        to_msg = jnp.argsort(queue, axis=1)            # queue order -> message order (C, s, K)
        sched = sched._replace(**{f: jnp.take_along_axis(getattr(sched, f), to_msg, axis=1)
                                  .reshape(C, s, K)
                                  for f in ("sent", "leave_tick", "arrival", "arrival_sub")})
        lost = message_lost(cfg, keys.spare, safe, (s, K), receivers)
        if has_offline(cfg):
            offline = is_offline(ctx.table, receivers, sched.arrival)
            lost = offline if lost is None else lost | offline
        inbox, counters, too_late = push(cfg, state.inbox, state.counters, ctx.table, sched,
                                         node, valid, receivers, trained, None, lost)
        state = flag_error(state, jnp.where(too_late, ERR_RING_TOO_SHORT, 0), t)
        inbox, got_total, got_count = collect(cfg, inbox, node, valid, ctx.table, t)
        keep = jnp.where(valid[:, None, None], trained, last)
        new_last = state.algo_state.last.at[node].set(keep, mode="drop")
        return (state.replace(inbox=inbox, counters=counters,
                              algo_state=PrioritizedState(new_last)),
                average_with_inbox(trained, got_total, got_count))

    return Algorithm("prioritized-divshare", init, iteration_end, keeps_nonfinite=True)
