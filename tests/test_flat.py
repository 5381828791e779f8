"""The fragment layout: the authors' partition, coordinates in raveled order inside a fragment,
and checkpoints of another layout refused."""

import jax.numpy as jnp
import numpy as np
import pytest

from divjax.engine import checkpoint
from divjax.engine.flat import LAYOUT_VERSION, make_layout


def authors_partition(sizes, K, seed):
    """Per tensor: one permutation from the shared stream, K parts of floor(size/K), the last
    part taking the remainder; fragment k = part k of every tensor (paper.md)."""
    rng = np.random.default_rng(seed)
    frags, offset = [set() for _ in range(K)], 0
    for size in sizes:
        perm = rng.permutation(size) + offset
        base = size // K
        for k in range(K):
            frags[k].update(perm[k * base:(k + 1) * base if k < K - 1 else size].tolist())
        offset += size
    return frags


@pytest.mark.parametrize("K", [1, 3, 8])
def test_layout__fragments_hold_the_authors_partition_in_raveled_order(K):
    template = {"a": jnp.zeros((7, 5)), "b": jnp.zeros((13,)), "c": jnp.zeros((2, 3, 4))}
    layout = make_layout(template, K, seed=11)
    sizes = [35, 13, 24]   # ravel_pytree order: leaves "a", "b", "c"
    want = authors_partition(sizes, K, 11)
    pos = np.asarray(layout.position)
    assert sorted(pos.tolist()) == sorted(set(pos.tolist()))          # one place per coordinate
    for k in range(K):
        coords = np.flatnonzero(pos // layout.F == k)
        assert set(coords.tolist()) == want[k]
        slots = pos[coords] % layout.F
        assert np.array_equal(slots, np.arange(coords.size))            # raveled order, no gaps
    assert np.array_equal(layout.fragment_sizes, [len(w) for w in want])
    x = {"a": jnp.arange(35.).reshape(7, 5), "b": -jnp.arange(13.), "c": jnp.ones((2, 3, 4))}
    back = layout.unflatten(layout.flatten(x))
    assert all(np.array_equal(back[k], x[k]) for k in x)


def test_checkpoint__another_layouts_checkpoint_is_refused():
    current = {"config": {"n_nodes": 4}, "hparams": {}, "layout": LAYOUT_VERSION}
    assert checkpoint.fingerprint_mismatch(dict(current), current) is None
    old = {"config": {"n_nodes": 4}, "hparams": {}}    # written before layouts were recorded
    diff = checkpoint.fingerprint_mismatch(old, current)
    assert diff is not None and "fragment layout" in diff and "rerun" in diff
