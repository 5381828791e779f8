"""D-PSGD's Metropolis-Hastings mixing in O(n degree) memory: no (n, n) weight matrix.

W_ij = 1 / (1 + max(deg_i, deg_j)) on the edges of the graph, W_ii = 1 - sum_j W_ij
(`topology.metropolis_hastings` is the dense form, for tests and small n). On the complete graph
every W_ij is 1 / n, so nothing is stored; on a padded (n, width) neighbour table (ring, torus,
regular:D, a file) the weights are per edge, (n, width), computed from the degrees.

A round's mixing, with models y (n, K, F): x_r = sum_j W_rj y_j when every model arrives, and
x_r = y_r + sum over the models that arrived of W_rj (y_j - y_r) under loss or churn (see
divjax.algorithms.dpsgd). Loss draws one uniform per (sender, node id) pair, n per sender (the
run's draws: `network.message_lost`, as `reference_dpsgd` reads them): that is O(n^2) work per
round, made in blocks of senders so that memory stays O(n); without loss everything is
O(n degree K F).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import SimConfig
from divjax.network.links import loss_modelled, message_lost
from divjax.network.topology import neighbors, table_width

DRAW_BLOCK = 1 << 22   # loss draws made at once (senders per block = DRAW_BLOCK // n)


def host_degrees(cfg: SimConfig) -> np.ndarray:
    """(n,) int32 degrees of cfg.topology on the host, in closed form for the complete graph
    and (from 4 nodes) for ring, torus and regular:D, whose rows all have the table's width;
    otherwise from the neighbour table."""
    n, name = cfg.n_nodes, cfg.topology
    if name == "complete":
        return np.full(n, max(0, n - 1), np.int32)
    if n >= 4 and (name in ("ring", "torus") or name.startswith("regular:")):
        return np.full(n, table_width(cfg), np.int32)
    return np.asarray(neighbors(cfg)[1], np.int32)


def sender_block(n: int) -> int:
    """Senders whose n loss draws each are made at once (at least 1)."""
    return max(1, min(n, DRAW_BLOCK // max(1, n)))


def edge_weights(nbr: jax.Array, degree: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Metropolis-Hastings weights on a padded table: w (n, width) float32, W_{i, nbr[i, p]}
    (0 on padding), and w_self (n,) float32, W_ii = 1 - sum_p w[i, p]."""
    valid = jnp.arange(nbr.shape[1])[None, :] < degree[:, None]
    d = jnp.maximum(degree[:, None], degree[nbr]).astype(jnp.float32)
    w = jnp.where(valid, 1.0 / (1.0 + d), 0.0)
    return w, 1.0 - jnp.sum(w, axis=1)


def lost_on_edges(cfg: SimConfig, k_spare: jax.Array, nbr: jax.Array) -> jax.Array | None:
    """(n, width) bool: whether node j's model to nbr[j, p] is lost this round (the run's draws,
    n per sender, read at the sender's neighbours), or None without loss. Senders in blocks:
    O(n) memory, O(n^2) draws."""
    if not loss_modelled(cfg):
        return None
    n = cfg.n_nodes
    ids = jnp.arange(n, dtype=jnp.int32)

    def one(j_row):
        j, row = j_row
        return message_lost(cfg, k_spare, j[None], (n,), ids[None])[0][row]

    return jax.lax.map(one, (ids, nbr), batch_size=sender_block(n))


def _columns(body: Callable, carry, width: int):
    """carry = body(carry, p) for p in range(width): unrolled for narrow tables, a scan else."""
    if width <= 32:
        for p in range(width):
            carry = body(carry, p)
        return carry
    return jax.lax.scan(lambda c, p: (body(c, p), None), carry, jnp.arange(width))[0]


def mix_table(cfg: SimConfig, y: jax.Array, nbr: jax.Array, degree: jax.Array,
              k_spare: jax.Array, off: jax.Array | None):
    """One round's mixing on a padded (n, width) neighbour table.

    x = W y (receiver side: x_r = W_rr y_r + sum_p W_r,nbr y_nbr), plus, under loss or churn,
    W_rj (y_r - y_j) for every model j -> r that did not arrive (added per edge, sender side:
    W is symmetric), so that a loss or churn that misses nothing changes no bit.
    Returns (x (n, K, F), got (n,) int32 models each node received, missing (n,) int32 models to
    each node sent and lost or sent to it while offline); got and missing are None when neither
    loss nor churn is modelled (every node then receives its degree)."""
    n, width = nbr.shape
    w, w_self = edge_weights(nbr, degree)
    scale = lambda a, v: a[:, None, None] * v  # noqa: E731
    x = _columns(lambda x, p: x + scale(w[:, p], y[nbr[:, p]]), scale(w_self, y), width)
    lost = lost_on_edges(cfg, k_spare, nbr)
    if lost is None and off is None:
        return x, None, None
    valid = jnp.arange(width)[None, :] < degree[:, None]
    on = jnp.ones((n,), bool) if off is None else ~off
    sends = valid & on[:, None]                      # an offline node sends nothing
    arrived = sends & on[nbr]                        # a model sent to an offline node is lost
    if lost is not None:
        arrived = arrived & ~lost
    missed = valid & ~arrived                        # r mixes its own model in their place

    def body(carry, p):
        x, got, missing = carry
        r = jnp.where(valid[:, p], nbr[:, p], n)
        fix = jnp.where(missed[:, p, None, None], scale(w[:, p], y[nbr[:, p]] - y), 0.0)
        x = x.at[r].add(fix, mode="drop")
        got = got.at[r].add(arrived[:, p].astype(jnp.int32), mode="drop")
        missing = missing.at[r].add((sends[:, p] & ~arrived[:, p]).astype(jnp.int32),
                                    mode="drop")
        return x, got, missing

    zeros = jnp.zeros((n,), jnp.int32)
    return _columns(body, (x, zeros, zeros), width)


def mix_complete(cfg: SimConfig, y: jax.Array, k_spare: jax.Array, off: jax.Array | None):
    """One round's mixing on the complete graph (every W_ij = 1 / n): as `mix_table`."""
    n = cfg.n_nodes
    w = jnp.float32(1.0 / n)
    x = jnp.broadcast_to(w * jnp.sum(y, axis=0), y.shape)
    if loss_modelled(cfg):
        return _complete_lossy(cfg, x, y, k_spare, off, w)
    if off is None:
        return x, None, None
    on = ~off
    n_on = jnp.sum(on, dtype=jnp.int32)
    absent = jnp.sum(jnp.where(off[:, None, None], y, 0.0), axis=0)      # offline senders
    n_off = (n - n_on).astype(jnp.float32)
    x = x + jnp.where(n_on < n, w * (n_off * y - absent), 0.0)
    return x, jnp.where(on, n_on - 1, 0), jnp.where(off, n_on, 0)


def _complete_lossy(cfg: SimConfig, x: jax.Array, y: jax.Array, k_spare: jax.Array,
                    off: jax.Array | None, w: jax.Array):
    """The complete graph under loss: x (the lossless W y) plus w (y_r - y_j) for every model
    j -> r that did not arrive. Senders in blocks of B, each block's (B, n) misses summed into
    the receivers with a (B, n) x (B, K F) product: O(n^2 K F) work (every pair exchanges a
    model), O(B n + n K F) memory."""
    n = cfg.n_nodes
    B = sender_block(n)
    blocks = -(-n // B)
    ids = jnp.arange(n, dtype=jnp.int32)
    senders = jnp.pad(ids, (0, blocks * B - n), constant_values=n).reshape(blocks, B)
    on = jnp.ones((n,), bool) if off is None else ~off
    on_pad = jnp.append(on, False)

    def step(carry, js):
        absent, count, got, missing = carry
        lost = message_lost(cfg, k_spare, js, (n,), jnp.broadcast_to(ids, (B, n)))
        edge = (js[:, None] != ids[None, :]) & (js[:, None] < n)           # (B, n)
        sends = edge & on_pad[js][:, None]
        arrived = sends & ~lost & on[None, :]
        missed = edge & ~arrived
        absent = absent + jnp.einsum("br,bkf->rkf", missed.astype(y.dtype),
                                     y[jnp.minimum(js, n - 1)])
        count = count + jnp.sum(missed, axis=0, dtype=jnp.int32)
        got = got + jnp.sum(arrived, axis=0, dtype=jnp.int32)
        missing = missing + jnp.sum(sends & ~arrived, axis=0, dtype=jnp.int32)
        return (absent, count, got, missing), None

    zeros = jnp.zeros((n,), jnp.int32)
    (absent, count, got, missing), _ = jax.lax.scan(
        step, (jnp.zeros_like(y), zeros, zeros, zeros), senders)
    fix = w * (count.astype(jnp.float32)[:, None, None] * y - absent)
    return x + jnp.where((count > 0)[:, None, None], fix, 0.0), got, missing
