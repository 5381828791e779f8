"""Row gathers and scatters of the engine's big arrays that stay fast under a sweep's vmap.

    rows = get_rows(params, (node,))                    # params[node]
    ring = add_rows(ring, (slot, recv, frag), payload)  # ring.at[slot, recv, frag].add(payload)

Each call indexes the leading dimensions of `x` with a tuple of integer arrays (one per indexed
dimension, broadcast together, numpy advanced indexing) and moves whole trailing blocks (a model
fragment of F floats). Unbatched, they are exactly `x[idx]`, `x.at[idx].add(u, mode="drop")`
and `x.at[idx].set(u, mode="drop")`.

Why: vmapped with a batched `x` and unbatched indices (the points of a sweep that share a seed
share every index), JAX's default rule makes the batch a window dimension, so each block is
strided across the P copies and XLA's CPU scatter transposes the updates first (measured: 16
copies of the DivShare ring push take 332 ms instead of 153 ms this way, against 16 x 5-9 ms
alone). The rule here instead adds the batch as one more index dimension (an iota), so every
block stays contiguous, for any nesting of vmaps (seeds of configs of nodes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _batched_index(axis_size: int, idx: tuple, idx_batched: tuple, x_batched: bool) -> tuple:
    """Indices of a vmapped call: every index array gets the leading batch axis, and a batched
    `x` gets the batch position itself as its first index."""
    idx = tuple(jnp.asarray(i) for i in idx)
    shape = jnp.broadcast_shapes(*(i.shape[1:] if b else i.shape
                                   for i, b in zip(idx, idx_batched)))
    full = (axis_size,) + shape
    out = tuple(jnp.broadcast_to(i if b else i[None], full) for i, b in zip(idx, idx_batched))
    if x_batched:
        point = jax.lax.broadcasted_iota(jnp.int32, full, 0)
        out = (point,) + out
    return out


def _lead(x, batched: bool, axis_size: int):
    return x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))


@jax.custom_batching.custom_vmap
def get_rows(x: jax.Array, idx: tuple) -> jax.Array:
    """x[idx]: idx indexes the leading len(idx) dimensions of x."""
    return x[idx]


@get_rows.def_vmap
def _get_rows_vmap(axis_size, in_batched, x, idx):
    x_batched, idx_batched = in_batched
    if not x_batched and not any(idx_batched):
        return get_rows(x, idx), False
    idx = _batched_index(axis_size, idx, tuple(idx_batched), x_batched)
    return get_rows(x, idx), True


def _make_scatter(kind: str):
    @jax.custom_batching.custom_vmap
    def scatter(x: jax.Array, idx: tuple, updates: jax.Array) -> jax.Array:
        ref = x.at[idx]
        return ref.add(updates, mode="drop") if kind == "add" else ref.set(updates, mode="drop")

    @scatter.def_vmap
    def _vmap(axis_size, in_batched, x, idx, updates):
        x_batched, idx_batched, _ = in_batched
        x = _lead(x, x_batched, axis_size)
        # the result is batched: index the batch like any other leading dimension. Batched
        # updates are (P, *index shape, *block), aligned with the new indices; unbatched ones
        # broadcast against them like numpy.
        idx = _batched_index(axis_size, idx, tuple(idx_batched), True)
        return scatter(x, idx, updates), True

    scatter.__doc__ = (f"x.at[idx].{kind}(updates, mode='drop'): idx indexes the leading "
                       f"len(idx) dimensions of x; out-of-range rows are dropped.")
    return scatter


add_rows = _make_scatter("add")
set_rows = _make_scatter("set")


def zero_rows(x: jax.Array, idx: tuple) -> jax.Array:
    """`set_rows(x, idx, 0.0)` for 1-D index arrays, one row at a time, in place.

    A scatter of zeros makes XLA write a zeros buffer as large as all the rows first (under a
    sweep's vmap: every point's rows); here each row is a `dynamic_update_slice` of a zeros
    block. An out-of-range entry clears the first in-range entry's row again instead (harmless),
    so no row is read. (If the indices are batched under vmap, the `cond` on "any entry in
    range" becomes a select over `x`: call it where that predicate is unbatched, as the engine
    does inside its own cond on the same condition.)
    """
    idx = tuple(jnp.asarray(i, jnp.int32) for i in idx)
    lead = len(idx)
    block = jnp.zeros((1,) * lead + x.shape[lead:], x.dtype)
    valid = jnp.all(jnp.stack([(i >= 0) & (i < x.shape[d]) for d, i in enumerate(idx)]), axis=0)
    first = jnp.argmax(valid)
    rows = tuple(jnp.clip(jnp.where(valid, i, i[first]), 0, x.shape[d] - 1)
                 for d, i in enumerate(idx))

    def one(k, x):
        start = tuple(r[k] for r in rows) + (jnp.int32(0),) * (x.ndim - lead)
        return jax.lax.dynamic_update_slice(x, block, start)

    def clear(x):
        return jax.lax.fori_loop(0, idx[0].shape[0], one, x)

    # with no entry in range there is no row to fall back on: write nothing
    return jax.lax.cond(jnp.any(valid), clear, lambda x: x, x)


def padded_rows(node: jax.Array, n: int, valid: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(valid, safe, drop) for node ids where entries == n are padding (the engine gathers a
    fixed number of finishing nodes): `valid` marks real ones (node < n unless given), `safe`
    is clamped into range for gathers, `drop` is n for padding so that scatters with
    mode="drop" skip it."""
    valid = node < n if valid is None else valid
    return valid, jnp.minimum(node, n - 1), jnp.where(valid, node, n)
