"""AD-PSGD's pongs are answered level by level without a sort (issue 33): the m-th pong of each
node found by a segment min over the ping table (`adpsgd_links.first_due`), the nodes with one
compacted by a cumulative sum (`adpsgd_pongs.active_ids`). Both equal the sorts they replaced
(kept here as the reference): a stable sort of the table by receiver, and a sort of the ids.
And the loops over pongs update the "latest" rule's records in place (no O(n Q) copy)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divjax.algorithms.adpsgd_links import first_due, take_level
from divjax.algorithms.adpsgd_pongs import active_ids
from divjax.config import SimConfig, default_hparams


def sorted_targets(key, n: int):
    """The old `pong_targets`: (start (n,), entry (n Q,)): node r's m-th pong answers
    entry[start[r] + m] (a stable sort of the table entries by receiver)."""
    total = jnp.zeros((n + 1,), jnp.int32).at[key].add(1)[:n]
    entry = jax.lax.sort((key, jnp.arange(key.shape[0], dtype=jnp.int32)), num_keys=2)[1]
    return jnp.cumsum(total) - total, entry, total


def sorted_ids(active, B: int):
    n = active.shape[0]
    ids = jnp.arange(n, dtype=jnp.int32)
    return jnp.pad(jnp.sort(jnp.where(active, ids, n)), (0, B), constant_values=n)


def random_key(rng, n: int, Q: int, due: float, hub: bool):
    """A ping table's due keys (n Q,): receivers drawn with many ties (a pinger pinging one
    receiver in several slots, several pingers one receiver; with `hub` most pings go to
    node 0), n where nothing is due."""
    recv = rng.integers(0, max(1, n // 3) if not hub else 2, (n, Q))
    recv = np.where(rng.random((n, Q)) < 0.5, recv, rng.integers(0, n, (n, Q)))
    return jnp.asarray(np.where(rng.random((n, Q)) < due, recv, n).ravel(), jnp.int32)


@pytest.mark.parametrize("n,Q,due,hub,B", [(1, 1, 1.0, False, 1), (5, 3, 0.0, False, 2),
                                           (5, 3, 1.0, True, 2), (17, 4, 0.5, False, 16),
                                           (40, 6, 0.3, True, 4), (64, 2, 0.9, False, 16)])
def test_levels__equal_the_sorted_grouping(n, Q, due, hub, B):
    """At every level, each node's target entry and the compacted responders equal what the
    sorts gave; after max(total) levels nothing is left due (empty ticks included)."""
    rng = np.random.default_rng(n * 100 + Q)
    for _ in range(3):
        key = random_key(rng, n, Q, due, hub)
        start, entry, total = (np.asarray(x) for x in sorted_targets(key, n))
        for m in range(int(total.max())):
            first = np.asarray(first_due(key, n))
            has = total > m
            want = np.where(has, entry[np.minimum(start + m, n * Q - 1)], n * Q)
            np.testing.assert_array_equal(first, want)
            np.testing.assert_array_equal(np.asarray(active_ids(jnp.asarray(first < n * Q), B)),
                                          np.asarray(sorted_ids(jnp.asarray(has), B)))
            key = take_level(key, jnp.asarray(first), n)
        assert np.all(np.asarray(key) == n)
        assert np.all(np.asarray(first_due(key, n)) == n * Q)


def test_levels__under_jit_equal_eager():
    """The same functions traced (as the engine runs them) give the same entries."""
    n, Q = 23, 5
    key = random_key(np.random.default_rng(7), n, Q, 0.6, True)
    step = jax.jit(lambda k: (first_due(k, n), take_level(k, first_due(k, n), n)))
    got_first, got_key = step(key)
    np.testing.assert_array_equal(np.asarray(got_first), np.asarray(first_due(key, n)))
    np.testing.assert_array_equal(np.asarray(got_key),
                                  np.asarray(take_level(key, first_due(key, n), n)))
    np.testing.assert_array_equal(np.asarray(jax.jit(active_ids, static_argnums=1)(
        got_first < n * Q, 3)), np.asarray(sorted_ids(got_first < n * Q, 3)))


def while_bodies(hlo: str) -> dict[str, list[str]]:
    """The instructions of every while loop body of a compiled module's text."""
    comps, name = {}, None
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            name = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            comps[name] = []
        elif name:
            comps[name].append(line)
    bodies = {m.group(1) for lines in comps.values() for line in lines
              for m in [re.search(r"body=%?([\w.\-]+)", line)] if m}
    return {b: comps[b] for b in bodies if b in comps}


def test_pong_loops__write_the_records_in_place():
    """The loops over levels and chunks of pongs copy no (n, Q) array: the "latest" rule's
    records are read (`last_on_link`) and written (`record_pongs`) in every chunk, and without
    `after` XLA copied all three, O(n Q) per chunk of 16 pongs (quadratic in n per tick)."""
    from divjax.engine.sim import make_engine

    n, Q = 61, 7
    cfg = SimConfig(algorithm="adpsgd", task="synthetic", n_nodes=n, fanout=6, ping_slots=Q,
                    inbox_history=5, duration_s=0.5, eval_every_s=0.5, local_steps=1,
                    n_fragments=2)
    engine = make_engine(cfg)
    hp = default_hparams(engine.cfg)
    state = jax.eval_shape(engine.init, jax.random.key(0), hp)
    hlo = jax.jit(engine.run_ticks).lower(state, hp).compile().as_text()
    pong_loops = {b: lines for b, lines in while_bodies(hlo).items()
                  if any(f"s32[{n + 16}]" in line for line in lines)}   # the responders
    assert len(pong_loops) >= 2, sorted(while_bodies(hlo))              # levels and chunks
    copies = [line.strip()[:100] for lines in pong_loops.values() for line in lines
              if re.search(rf"s32\[{n},{Q}\]\{{1,0\}} copy\(", line)]
    assert not copies, copies
