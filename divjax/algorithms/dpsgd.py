"""D-PSGD (Lian et al., NeurIPS 2017, "Can decentralized algorithms outperform centralized
algorithms?"): synchronous gossip on a fixed graph with Metropolis-Hastings weights.

Every round each node takes its local steps, sends its post-training model to every neighbour
and replaces its model by x_i = sum_j W_ij y_j (W: Metropolis-Hastings weights of the topology,
symmetric and doubly stochastic). A round lasts as long as its slowest node and link
(`sync_round_timing`): the slowest compute time, plus the time the slowest link needs to send its
node's model to all of its neighbours one after another, plus the largest latency. Every node
therefore ends its round at the same tick, and mixes there (`sync_iteration_end`).
Counters: node i sends deg_i full models per round (counted once per fragment, like every full
model message in divjax, see divjax.algorithms.queues), counted at the round end.

Message loss (`--loss-rate p`): every model sent is lost independently with probability p
(`network.message_lost` from the round's spare key and the sender, one draw per receiver id);
it counts as sent, is counted in `lost` at its receiver, and the receiver mixes its own model in
its place: x_r = y_r + sum over the models that arrived of W_rj (y_j - y_r) (rows stay
stochastic; no loss gives x = W y).

Download limits (`--download-mbps`, `divjax.network.downloads`): a round's exchange lasts at least until
every node has received its neighbours' models. Each node sends to its neighbours in increasing
id order, one after another on its link; each model reaches its receiver after the pair's
latency and waits on the receiver's download link, first come first served; the round is the
slowest compute plus the later of the upload rule above and the last model received in full
(`queues.sync_download_ticks`, rounded up to a tick once). Nothing is lost on a download link
(everyone waits), so download limits only lengthen rounds.

Churn (`--churn-rate`, `--churn-mean-s`; `compute_schedule.offline_intervals`): rounds keep
their one length and are never paused (unlike an asynchronous iteration): every node's round
ends at the same ticks, online or not. A node offline at a round end (`is_offline` at that
tick) skips the round: it does not train, send or mix, its model and optimizer state stay as
they are and its iteration count does not advance (`iterations` counts the rounds it took
part in). An online node mixes as under loss, an offline neighbour's model counting as lost:
x_r = y_r + sum over the models that arrived of W_rj (y_j - y_r). Counters: an offline node
sends nothing (nothing counted); a model sent to an offline neighbour is sent and counted in
`lost` at that neighbour, as a lost message is. A trace's offline rows are not taken yet
(traces change compute times, which rounds of one length cannot follow).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from divjax.algorithms.base import Algorithm, Context
from divjax.algorithms.mh_mixing import host_degrees, mix_complete, mix_table
from divjax.algorithms.queues import sync_round_timing
from divjax.network.compute_schedule import has_offline, is_offline
from divjax.config import SimConfig
from divjax.engine.rows import get_rows, padded_rows, set_rows
from divjax.network.topology import CompleteNeighbors, edges


def offline_now(ctx: Context, t) -> jax.Array | None:
    """(n,) bool: the nodes offline at tick t (churn, `compute_schedule.is_offline`); None when
    no node ever goes offline."""
    if not has_offline(ctx.cfg):
        return None
    return is_offline(ctx.table, jnp.arange(ctx.cfg.n_nodes, dtype=jnp.int32), t)


def round_progress(ctx: Context, state, node, valid, t):
    """Which nodes end the synchronous round at tick t, and whether this call holds the last.

    The engine hands the nodes that finish at t (`state.next_end == t` until the tick ends) to
    `iteration_end` in one call, or, with `SimConfig.iteration_chunk`, in chunks of increasing
    node ids, one call after another, writing the models each chunk returns to `state.params`
    before the next chunk trains.

    Returns:
      handled: (n,) bool, the nodes the engine trains at t (those finishing at t, at most
        train_capacity of them, lowest ids first, as the engine gathers them);
      closes: () bool, True if this call holds the last of them; the Python True without
        chunks (every handled node is in this call).
    """
    n = ctx.cfg.n_nodes
    cap = ctx.cfg.train_capacity or n
    finishing = state.next_end == t
    off = offline_now(ctx, t)
    if off is not None:   # the engine trains no offline node (divjax.engine.sim.tick)
        finishing = finishing & ~off
    handled = finishing & (jnp.cumsum(finishing) <= cap)
    if node.shape[0] >= cap:  # not chunked
        return handled, True
    last = jnp.max(jnp.where(handled, jnp.arange(n), -1))
    return handled, jnp.any(valid & (node == last))


def sync_iteration_end(ctx: Context, state, node, valid, trained, t, sent_per_node: jax.Array,
                       mix: Callable):
    """`iteration_end` of a synchronous round whose nodes may come in several chunks.

    In a round every node mixes the post-training models of the same round, but with
    `SimConfig.iteration_chunk` the nodes of later chunks have not trained when an earlier chunk
    ends. So until the round's last chunk, a chunk's nodes return their post-training models
    unmixed (the engine keeps them in `state.params`); the last chunk mixes the post-training
    models of every node of the round (earlier chunks' from `state.params`, its own `trained`),
    writes the mixed models of the earlier chunks' nodes into `state.params` and returns its
    own. Equal to one call with every node (tests/test_chunking.py).

    Args:
      sent_per_node: (n,) int32 full models each node sends per round (counted per fragment,
        for this call's nodes).
      mix: mix(y (n, K, F), handled (n,) bool) -> (x (n, K, F) mixed models of every node,
        received (n,) int32 full models each node received this round[, lost (n,) int32 full
        models to each node lost on the way]), called once per round with y the post-training
        models (rows of nodes that did not train: their models).
    Returns: (state, params_after (C, K, F)).
    """
    n, K = ctx.cfg.n_nodes, trained.shape[1]
    _, safe, drop = padded_rows(node, n, valid)
    handled, closes = round_progress(ctx, state, node, valid, t)
    counters = state.counters
    sent = counters.sent.at[drop].add(
        jnp.broadcast_to(sent_per_node[safe][:, None], (node.shape[0], K)), mode="drop")

    def close(_):
        y = set_rows(state.params, (drop,), trained)                   # (n, K, F) post-training
        x, received, *lost = mix(y, handled)
        params = state.params
        if closes is not True:  # the earlier chunks' nodes take their mixed models too
            params = jnp.where(handled[:, None, None], x, params)
        lost = counters.lost + K * lost[0] if lost else counters.lost
        return params, get_rows(x, (safe,)), counters.delivered + K * received, lost

    def wait(_):
        return state.params, trained, counters.delivered, counters.lost

    if closes is True:
        params, after, delivered, lost = close(None)
    else:
        params, after, delivered, lost = jax.lax.cond(closes, close, wait, None)
    counters = counters._replace(sent=sent, delivered=delivered, lost=lost)
    return state.replace(params=params, counters=counters), after


def make_dpsgd(cfg: SimConfig) -> Algorithm:
    def init(ctx: Context, params):
        del ctx, params  # the mixing weights follow from the degrees
        return ()

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        def mix(y, handled):
            del handled  # a node that does not train (capacity overflow) still mixes as is
            off = offline_now(ctx, t)
            if isinstance(ctx.neighbors, CompleteNeighbors):
                x, got, missing = mix_complete(ctx.cfg, y, keys.spare, off)
            else:
                x, got, missing = mix_table(ctx.cfg, y, ctx.neighbors, ctx.degree, keys.spare,
                                            off)
            if missing is None:
                return x, ctx.degree
            return x, got, missing

        return sync_iteration_end(ctx, state, node, valid, trained, t, ctx.degree, mix)

    def adjust_timing(cfg_, table):
        del cfg_
        # the edge list only for download limits (the order of a round's downloads)
        pairs = edges(cfg) if table.down_units is not None else None
        return sync_round_timing(cfg, table, host_degrees(cfg), pairs)

    def longest_delay(cfg_, table) -> int:
        del cfg_, table  # messages are mixed at the round end: nothing waits in the ring
        return 1

    return Algorithm("dpsgd", init, iteration_end, synchronous=True,
                     adjust_timing=adjust_timing,
                     longest_delay=longest_delay)
