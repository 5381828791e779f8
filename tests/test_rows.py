"""divjax.engine.rows: the row gathers/scatters equal numpy-style indexing, unbatched and under any vmap."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divjax.engine.rows import add_rows, get_rows, set_rows, zero_rows

P = 3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(P, 4, 5, 6)), jnp.float32)     # P copies of (4, 5) rows of 6
    a = jnp.asarray(rng.integers(0, 4, (P, 2, 7)), jnp.int32)
    b = jnp.asarray(rng.integers(0, 6, (P, 2, 7)), jnp.int32)        # 5 is out of range: dropped
    u = jnp.asarray(rng.normal(size=(P, 2, 7, 6)), jnp.float32)
    return x, a, b, u


def _pick(v, batched):
    return v if batched else v[0]


@pytest.mark.parametrize("batched", list(itertools.product([True, False], repeat=4))[:-1])
def test_rows__vmapped_equal_plain_indexing(batched):
    x, a, b, u = (_pick(v, bt) for v, bt in zip(_data(), batched))
    axes = tuple(0 if bt else None for bt in batched)
    for ours, plain in ((add_rows, lambda x, i, u: x.at[i].add(u, mode="drop")),
                        (set_rows, lambda x, i, u: x.at[i].set(u, mode="drop"))):
        got = jax.jit(jax.vmap(lambda x, a, b, u: ours(x, (a, b), u), in_axes=axes))(x, a, b, u)
        want = jax.vmap(lambda x, a, b, u: plain(x, (a, b), u), in_axes=axes)(x, a, b, u)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    if any(batched[:3]):
        b_in = jnp.minimum(b, 4)
        got = jax.vmap(lambda x, a, b: get_rows(x, (a, b)), in_axes=axes[:3])(x, a, b_in)
        want = jax.vmap(lambda x, a, b: x[a, b], in_axes=axes[:3])(x, a, b_in)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_rows__unbatched_nested_and_scalar_updates():
    x, a, b, u = _data(1)
    np.testing.assert_array_equal(add_rows(x[0], (a[0], b[0]), u[0]),
                                  x[0].at[a[0], b[0]].add(u[0], mode="drop"))
    xx = jnp.broadcast_to(x, (2,) + x.shape)           # seeds x configs, indices per seed only
    nested = jax.vmap(jax.vmap(lambda x, a, b: set_rows(x, (a, b), 0.0), (0, None, None)),
                      (0, 0, 0))
    plain = jax.vmap(jax.vmap(lambda x, a, b: x.at[a, b].set(0.0, mode="drop"), (0, None, None)),
                     (0, 0, 0))
    np.testing.assert_array_equal(nested(xx, a[:2], b[:2]), plain(xx, a[:2], b[:2]))


def test_rows__shared_indices_keep_blocks_contiguous():
    """The batch becomes an index dimension: the scatter's window is the 6-float block alone
    (JAX's default rule makes it (P, 6), strided across the copies)."""
    x, a, b, u = _data(2)
    ours = jax.make_jaxpr(jax.vmap(lambda x, u: add_rows(x, (a[0], b[0]), u)))(x, u)
    plain = jax.make_jaxpr(jax.vmap(lambda x, u: x.at[a[0], b[0]].add(u, mode="drop")))(x, u)

    def scatters(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name.startswith("scatter"):
                yield e
            for p in e.params.values():
                sub = getattr(p, "jaxpr", p)
                if hasattr(sub, "eqns"):
                    yield from scatters(sub)

    def windows(closed):
        eq = next(scatters(closed.jaxpr))
        return len(eq.params["dimension_numbers"].update_window_dims)

    assert windows(ours) == 1 and windows(plain) == 2


def test_rows__zero_rows_equals_set_zero_and_skips_out_of_range():
    x, a, b, _ = _data(3)
    x = x[0]
    for rows_a, rows_b in ((a[0, 0], b[0, 0]), (jnp.array([9, 9]), jnp.array([0, 1]))):
        want = x.at[rows_a, rows_b].set(0.0, mode="drop")
        np.testing.assert_array_equal(jax.jit(zero_rows)(x, (rows_a, rows_b)), want)
    xx = jnp.broadcast_to(x, (P,) + x.shape)       # vmapped over copies, shared rows
    got = jax.vmap(lambda x: zero_rows(x, (a[0, 0], b[0, 0])))(xx)
    np.testing.assert_array_equal(got, xx.at[:, a[0, 0], b[0, 0]].set(0.0, mode="drop"))
