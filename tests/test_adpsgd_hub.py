"""AD-PSGD with a hub: a tick answers its first `level_limit` levels of pongs by segment mins
(O(n Q) per level) and the rest from one sort (`adpsgd_pongs.answer_sorted`, O(n Q log(n Q))
per tick), so a node pinged by everyone no longer costs O(n^2 Q) per tick. Both ways give the
same pongs in the same order: the same bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divjax.algorithms import adpsgd_pongs
from divjax.algorithms.adpsgd_links import first_due, sorted_levels, take_level
from divjax.algorithms.adpsgd_pongs import active_ids
from divjax.config import SimConfig, default_hparams
from divjax.engine.sim import make_run, simulate


def hub_key(rng, n: int, Q: int, due: float):
    """A ping table's due keys (n Q,): half the pings to node 0 (a hub), the rest spread with
    ties, n where nothing is due."""
    recv = np.where(rng.random((n, Q)) < 0.5, 0, rng.integers(0, n, (n, Q)))
    return jnp.asarray(np.where(rng.random((n, Q)) < due, recv, n).ravel(), jnp.int32)


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("n,Q,due,B", [(1, 1, 1.0, 1), (6, 2, 0.0, 4), (9, 3, 1.0, 2),
                                       (31, 4, 0.6, 4), (50, 3, 0.9, 16)])
def test_sorted_levels__slice_per_level_equals_the_level_by_level_order(monkeypatch, n, Q, due,
                                                                        B, pack):
    """Level m's slice of the sorted order holds the responders `active_ids` gives at level m
    (increasing id) and each one's entry `first_due` gives: the order of the segment mins.
    With the pairs packed into one int32 key, and sorted as two keys (large n Q)."""
    from divjax.algorithms import adpsgd_links

    assert adpsgd_links.packs(n, n * Q)
    monkeypatch.setattr(adpsgd_links, "packs", lambda n, N: pack)
    rng = np.random.default_rng(n * 10 + Q)
    for _ in range(3):
        key = hub_key(rng, n, Q, due)
        recv, entry, count, start, levels = (np.asarray(x) for x in sorted_levels(key, n, B))
        assert recv.shape == entry.shape == (n * Q + B,)
        total = np.bincount(np.asarray(key), minlength=n + 1)[:n]
        assert int(levels) == total.max(initial=0)
        m = 0
        while True:
            first = np.asarray(first_due(key, n))
            has = first < n * Q
            if not has.any():
                break
            ids = np.asarray(active_ids(jnp.asarray(has), B))[:int(has.sum())]
            lo, k = int(start[m]), int(count[m])
            np.testing.assert_array_equal(recv[lo:lo + k], ids)
            np.testing.assert_array_equal(entry[lo:lo + k], first[ids])
            key = take_level(key, jnp.asarray(first), n)
            m += 1
        assert m == int(levels)
        assert count[m:].sum() == 0
        assert np.all(recv[start[m] if m < n * Q else n * Q:] == n)   # then padding


def wheel(tmp_path, n: int) -> str:
    """Node 0 joined to every other node, the others in a ring (degree 3)."""
    path = tmp_path / "wheel.edges"
    path.write_text("".join(f"0 {i}\n{i} {i % (n - 1) + 1}\n" for i in range(1, n)))
    return f"file:{path}"


def hub_run(monkeypatch, topology: str, limit: int, **changes):
    monkeypatch.setattr(adpsgd_pongs, "LEVEL_LIMIT", limit)
    cfg = SimConfig(algorithm="adpsgd", task="synthetic", n_nodes=13, fanout=2,
                    n_fragments=2, local_steps=1, duration_s=0.4, eval_every_s=0.2,
                    tick_s=0.01, compute_s=0.05, topology=topology, **changes)
    run = make_run(cfg)
    state, metrics = simulate(run.engine, jax.random.key(5), default_hparams(run.engine.cfg))
    return state, metrics


@pytest.mark.parametrize("changes,limits", [
    ({}, (0, 2, 10**6)),
    ({"inbox": "sum", "delivery": "arrival_tick", "download_mbps": 20.0, "loss_rate": 0.2},
     (0, 10**6)),
])
def test_answer_pings__sorted_and_level_paths_give_the_same_run(monkeypatch, tmp_path,
                                                                changes, limits):
    """A wheel's hub receives many pings per tick. Every level by segment mins (limit 10^6),
    every level from the sort (0), or 2 levels then the sort: the whole final state and the
    metrics are bit-identical."""
    topology = wheel(tmp_path, 13)
    runs = [hub_run(monkeypatch, topology, limit, **changes) for limit in limits]
    a = runs[0][0].algo_state
    arrival, recv = np.asarray(a.ping_arrival).ravel(), np.asarray(a.ping_receiver).ravel()
    at_hub = np.bincount(arrival[(recv == 0) & (arrival >= 0)])
    assert at_hub.max() >= 4, at_hub          # the hub answers several levels in one tick
    assert int(runs[0][0].errors) == 0
    leaves = [jax.tree_util.tree_leaves((s.replace(k_sim=jnp.zeros(())), m)) for s, m in runs]
    for other in leaves[1:]:
        for x, y in zip(leaves[0], other, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_answer_pings__vmapped_seeds_give_the_same_bits_either_way(monkeypatch, tmp_path):
    """Under vmap the switch to the sort is taken when any member needs it (`run_if`: a while
    loop, where a batched cond would run both ways for all): seeds whose hub loads differ give
    the same bits with 2 levels then the sort as with every level by segment mins."""
    topology = wheel(tmp_path, 13)
    cfg = SimConfig(algorithm="adpsgd", task="synthetic", n_nodes=13, fanout=2,
                    n_fragments=2, local_steps=1, duration_s=0.4, eval_every_s=0.2,
                    tick_s=0.01, compute_s=0.05, topology=topology, compute_spread=0.5)
    keys = jax.random.split(jax.random.key(2), 2)
    runs = []
    for limit in (2, 10**6):
        monkeypatch.setattr(adpsgd_pongs, "LEVEL_LIMIT", limit)
        run = make_run(cfg)
        states, metrics = jax.jit(jax.vmap(run, in_axes=(0, None)))(
            keys, default_hparams(run.engine.cfg))
        runs.append(jax.tree_util.tree_leaves((states.replace(k_sim=jnp.zeros((2,))), metrics)))
    for x, y in zip(*runs, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
