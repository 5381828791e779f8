"""The `Algorithm` bundle and what every algorithm receives from the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import SimConfig
from divjax.engine.flat import FragmentLayout
from divjax.network.links import LinkTable


class Context(NamedTuple):
    """Everything fixed during one run, handed to an algorithm's functions."""

    cfg: SimConfig            # static
    layout: FragmentLayout    # static
    neighbors: Any            # (n, max_degree) int32 padded neighbour lists, or for the
    #                           complete graph topology.CompleteNeighbors: table[i, p] computed
    #                           as p + (p >= i), no (n, n - 1) array (index it, never jnp.asarray)
    degree: jax.Array         # (n,) int32
    table: LinkTable          # integer timing of every node (traced from HParams)
    k_sim: jax.Array | None = None  # the run's simulation key (set for `Algorithm.init`)


class Algorithm(NamedTuple):
    """A decentralized learning rule as pure functions (cf. optax.GradientTransformation).

    init(ctx, params) -> algo_state
    iteration_end(ctx, state, node, valid, trained, keys, t) -> (state, params_after)
        (see the field comments for the optional hooks)
        Called at tick t for the C nodes `node` (valid marks real entries) that just finished
        their local steps, with their post-training models `trained` (C, K, F). Returns the
        state with the messages queued and the inboxes emptied, and the models the nodes start
        their next iteration from (C, K, F).

    Example:
        >>> algo = make_algorithm(cfg)        # divjax.algorithms: a name or MODULE:ATTR
        >>> run = make_run(cfg, task, algo)
    """

    name: str
    init: Callable[[Context, jax.Array], Any]
    iteration_end: Callable[..., tuple[Any, jax.Array]]
    # True for synchronous rounds (D-PSGD, Epidemic Learning): every node ends its round at
    # the same tick and mixes the post-training models of all of them. With
    # `SimConfig.iteration_chunk` the engine calls iteration_end once per chunk of that tick;
    # a synchronous algorithm must then complete the round in the last chunk
    # (`dpsgd.sync_iteration_end`), and is tested chunked == unchunked. An asynchronous one
    # only ever reads messages sent before t, so chunks cannot see each other.
    synchronous: bool = False
    # Optional: on_tick(ctx, state, keys, t) -> state, called every tick after arrivals and
    # before iteration ends (e.g. AD-PSGD answers the pings that arrived with pongs).
    on_tick: Callable | None = None
    # Optional: adjust_timing(cfg, table) -> LinkTable, applied to the per-node timing before
    # anything uses it (e.g. a synchronous round lasts as long as its slowest node and link).
    # Must be jittable and work on host numpy tables too.
    adjust_timing: Callable | None = None
    # Optional: longest_delay(cfg, table) -> int ticks from enqueue to arrival (host side, numpy
    # table), used to size the rings. Default: compute + latency (a replaced queue).
    longest_delay: Callable | None = None
    # Optional: resolve_sizes(cfg, table) -> cfg, host side: fill the algorithm's own sizing
    # fields left at 0 (e.g. AD-PSGD's snapshot history), from the numpy timing table.
    resolve_sizes: Callable | None = None
    # True when params_after is `trained` itself or `average_with_inbox(trained, ...)`: a NaN or
    # inf in a trained coordinate then stays non-finite after the average, so the engine's
    # finiteness check reads params_after alone (one pass over the models less per tick).
    keeps_nonfinite: bool = False


def sample_peers(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                 shape: tuple[int, ...], count: int) -> jax.Array:
    """`count` distinct random neighbours of `node`, independently for each entry of `shape`.

    Floyd's algorithm over the node's degree: O(count) work per draw whatever the degree (a
    complete graph on thousands of nodes costs the same as a ring), uniform over subsets. Floyd
    returns the set in a biased order (the last slot takes the largest index more often), so
    the picks are then shuffled: the order is uniform too, and callers may send in it.
    `neighbors` is a padded table or, for the complete graph, `topology.CompleteNeighbors`
    (static): the picks over [0, n - 1) then skip the node itself (pick + (pick >= node)),
    exactly the entries the materialised table held, so the draws are the same.
    Returns (*shape, count) int32 node ids.
    """
    N = degree[node]
    total = int(np.prod(shape)) if shape else 1
    k_set, k_order = jax.random.split(key)
    keys = jax.random.split(k_set, total * count).reshape(total, count)

    def one(ks, k_perm):
        chosen = jnp.full((count,), -1, jnp.int32)
        for idx in range(count):  # static and small
            j = N - count + idx
            t = jax.random.randint(ks[idx], (), 0, j + 1, dtype=jnp.int32)
            t = jnp.where(jnp.any(chosen == t), j, t)
            chosen = chosen.at[idx].set(t)
        return jax.random.permutation(k_perm, chosen) if count > 1 else chosen

    picks = jax.vmap(one)(keys, jax.random.split(k_order, total))
    return neighbors[node, picks.reshape(tuple(shape) + (count,))]


def average_with_inbox(own: jax.Array, got_total: jax.Array, got_count: jax.Array) -> jax.Array:
    """Average every coordinate with what arrived: (own + sum received) / (1 + count received).

    own, got_total (..., K, F); got_count (..., K) the copies of each fragment averaged in.
    A non-finite own coordinate gives a non-finite average, whatever arrived (what
    `Algorithm.keeps_nonfinite` relies on): (inf + x) is inf or NaN, and 1 + count >= 1."""
    return (own + got_total) / (1.0 + got_count)[..., None]
