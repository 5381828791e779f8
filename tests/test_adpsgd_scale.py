"""AD-PSGD's state is linear in n (issue 33): no array with two axes of n nodes, under either
inbox rule, with or without download limits; and the ping table, which now also holds the
"latest" rule's records, refuses to write over an entry that still matters."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from divjax.engine import memory
from divjax.config import SimConfig, default_hparams
from divjax.engine.sim import SimulationError, make_engine, make_run, simulate


def abstract(n: int, **changes):
    """AD-PSGD's initial SimState at n nodes, as shapes (jax.eval_shape: nothing allocated);
    every other size is fixed and none equals n."""
    cfg = SimConfig(algorithm="adpsgd", task="synthetic", n_nodes=n, fanout=6, n_fragments=2,
                    ping_slots=9, inbox_history=5, iteration_slots=7, **changes)
    layout = SimpleNamespace(K=2, F=3, D=6, fragment_bytes=np.full(2, 12, np.int64))
    return memory.abstract_state(cfg, layout, ring_slots=3, train_capacity=n, counter_ticks=11)


@pytest.mark.parametrize("changes", [{}, {"inbox": "sum"}, {"download_mbps": 10.0},
                                     {"delivery": "arrival_tick"}])
def test_adpsgd_state__no_array_has_two_axes_of_n(changes):
    n = 64
    state = abstract(n, **changes)
    square = [(jax.tree_util.keystr(path), leaf.shape)
              for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
              if sum(d == n for d in getattr(leaf, "shape", ())) >= 2]
    assert not square, f"per-pair arrays in the state: {square}"
    # and the bytes grow linearly: twice the nodes, at most twice the bytes (+ constants)
    assert memory.state_bytes(abstract(2 * n, **changes)) <= 2 * memory.state_bytes(state) + 64


def square_values(jaxpr, n: int, out: list) -> list:
    """(primitive, shape) of every value a jaxpr (and the jaxprs inside it) computes that has
    two axes of size n."""
    for eqn in jaxpr.eqns:
        out += [(str(eqn.primitive), v.aval.shape) for v in eqn.outvars
                if sum(d == n for d in getattr(v.aval, "shape", ())) >= 2]
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    square_values(inner, n, out)
    return out


@pytest.mark.parametrize("changes", [{}, {"download_mbps": 10.0}])
def test_adpsgd_program__computes_no_value_with_two_axes_of_n(changes):
    """Not only the state: no temporary of init or of the ticks is per pair (the pongs'
    targets were an (n, n) count and its cumsum at every tick)."""
    n = 64
    engine = make_engine(SimConfig(algorithm="adpsgd", task="synthetic", n_nodes=n,
                                   ping_slots=9, inbox_history=5, duration_s=2.0,
                                   iteration_chunk=8, **changes))
    hp = default_hparams(engine.cfg)
    state = jax.eval_shape(engine.init, jax.random.key(0), hp)
    found = square_values(jax.make_jaxpr(engine.init)(jax.random.key(0), hp).jaxpr, n, [])
    found = square_values(jax.make_jaxpr(engine.run_ticks)(state, hp).jaxpr, n, found)
    assert not found, f"per-pair values: {found[:8]}"


def slow_window_config(**changes):
    """n = 5, p = 1, node 3 aggregates every 27 ticks while the others send every 10."""
    return tiny_config(algorithm="adpsgd", fanout=2, n_fragments=1, duration_s=0.6,
                       eval_every_s=0.3, same_init=False, **changes)


def slow_window_hparams(cfg):
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.1, 0.1, 0.1, 0.27, 0.1], jnp.float32),
        upload_bps=jnp.full((5,), 1e6, jnp.float32))


def test_adpsgd_ping_table__writing_over_a_record_that_matters_is_an_error():
    """One entry per node (ping_slots=1): a node's next ping takes the entry while the slow
    receiver of its last ping (or of the pong answering it) has not aggregated that window,
    so a later model could still replace it: an error naming --ping-slots, never a silently
    forgotten record. Sized automatically, the table holds every ping of the run (the runs
    against the reference in test_baselines use that sizing)."""
    cfg = slow_window_config(ping_slots=1)
    hp = slow_window_hparams(cfg)
    run = make_run(cfg, hp=hp)
    with pytest.raises(SimulationError, match="ping-slots"):
        simulate(run.engine, jax.random.key(0), hp)
    auto = make_engine(slow_window_config(), hp=hp).cfg
    assert auto.ping_slots >= (auto.num_ticks - 1) // 10      # p = 1, fastest iteration 10 ticks


def test_last_on_link__scanned_in_rows_gives_the_same_records(monkeypatch):
    """The last model each sender sent each receiver, from a random ping table with pongs:
    equal to a brute-force search, whether the batch is scanned at once or row by row."""
    from divjax.algorithms import adpsgd_links

    n, Q, C, J = 7, 5, 6, 3
    rng = np.random.default_rng(0)
    ints = lambda lo, hi, shape=(n, Q): jnp.asarray(rng.integers(lo, hi, shape), jnp.int32)  # noqa: E731
    order = rng.permutation(2 * n * Q).reshape(2, n, Q)          # distinct queue indices
    order = np.where(rng.random((2, n, Q)) < 0.3, -1, order)    # some never arrive
    records = adpsgd_links.LinkRecords(ints(0, 9), jnp.asarray(order[0], jnp.int32),
                                       ints(0, 50), ints(0, 9), jnp.asarray(order[1], jnp.int32))
    a = SimpleNamespace(ping_receiver=ints(0, n), ping_arrival=ints(0, 50), records=records)
    sender = jnp.asarray(rng.integers(0, n + 1, C), jnp.int32)   # n: padding
    recv = ints(0, n, (C, J))
    want = adpsgd_links.last_on_link(a, sender, recv, n)
    monkeypatch.setattr(adpsgd_links, "SCAN_ENTRIES", 2 * J * Q)
    got = adpsgd_links.last_on_link(a, sender, recv, n)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(np.asarray(w), np.asarray(g))
    pr, pa = np.asarray(a.ping_receiver), np.asarray(a.ping_arrival)
    for c in range(C):
        for j in range(J):
            s, r = int(sender[c]), int(recv[c, j])
            if s == n:   # padding: callers mask it
                continue
            cands = [(order[0][s, q], pa[s, q], int(records.ping_version[s, q]))
                     for q in range(Q) if pr[s, q] == r and order[0][s, q] >= 0]
            cands += [(order[1][r, q], int(records.pong_arrival[r, q]),
                       int(records.pong_version[r, q]))
                      for q in range(Q) if pr[r, q] == s and order[1][r, q] >= 0]
            assert bool(want[0][c, j]) == bool(cands)
            if cands:
                _, arrival, version = max(cands)
                assert (int(want[1][c, j]), int(want[2][c, j])) == (arrival, version)
