"""The baselines (Swift, AD-PSGD, D-PSGD, Epidemic Learning, local-only) against their
event-driven reference, and their invariants."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_equals_reference, straggler_hparams, tiny_config

import divjax
from divjax.reference import baselines as reference_baselines
from divjax.algorithms import adpsgd
from divjax.algorithms.swift import queue_length
from divjax.config import SimConfig, default_hparams, product
from divjax.engine.local import node_batch_key
from divjax.engine.sim import make_run
from divjax.engine.state import tick_keys

ASYNC = ("swift", "adpsgd", "local")
SYNC = ("dpsgd", "epidemic")
ALL = ASYNC + SYNC


def sync_hparams(cfg):
    """Stragglers in compute and links, fast enough that a synchronous round is ~0.3 s."""
    return straggler_hparams(cfg).replace(
        upload_bps=jnp.array([1e4, 1e4, 1e4, 5e3, 4e3], jnp.float32))


def hparams_for(cfg):
    return sync_hparams(cfg) if cfg.algorithm in SYNC else straggler_hparams(cfg)


# One configuration per algorithm (fanout, delivery), compiled once per module and reused with
# other HParams (lr, links): compile time dominates this file on CPU.
SETTINGS = {"swift": ("receiver_iteration", 2), "adpsgd": ("arrival_tick", 4),
            "dpsgd": ("receiver_iteration", 2), "epidemic": ("receiver_iteration", 2),
            "local": ("receiver_iteration", 2)}


@functools.cache
def compiled(algorithm):
    """(engine, init, run_from): run_from(state, hp) -> (state, metrics) runs the whole horizon
    from any initial state, so every test of an algorithm shares one compiled program."""
    delivery, fanout = SETTINGS[algorithm]
    cfg = tiny_config(algorithm=algorithm, delivery=delivery, fanout=fanout, duration_s=2.0,
                      n_fragments=3, same_init=False,
                      local_steps=1 if algorithm == "dpsgd" else 2)
    engine = make_run(cfg, hp=hparams_for(cfg)).engine

    def run_from(state, hp):
        return jax.lax.scan(lambda st, _: engine.advance(st, hp), state, None,
                            length=engine.cfg.num_chunks)

    return engine, divjax.jit(engine.init), divjax.jit(run_from)


def identical(state):
    """The same state with every node holding node 0's model (and AD-PSGD's snapshots too)."""
    same = jnp.broadcast_to(state.params[0], state.params.shape)
    algo_state = state.algo_state
    if hasattr(algo_state, "latest"):
        algo_state = algo_state._replace(
            latest=same, history=jnp.broadcast_to(same, algo_state.history.shape))
    return state.replace(params=same, algo_state=algo_state)


def run_engine(algorithm, same_init=False, seed=0, **hp_changes):
    engine, init, run_from = compiled(algorithm)
    hp = hparams_for(engine.cfg).replace(**hp_changes)
    state0 = init(jax.random.key(seed), hp)
    if same_init:
        state0 = identical(state0)
    state, metrics = run_from(state0, hp)
    assert int(state.errors) == 0
    return engine, hp, state0, state, metrics


@pytest.mark.parametrize("algorithm", ALL)
def test_engine__equals_reference_simulator(algorithm):
    """Every node's parameters and every counter, with compute and link stragglers and
    independent initial models, under the authors' inbox rule (newest model per sender)."""
    engine, hp, _, state, _ = run_engine(algorithm, seed=1)
    ref = reference_baselines.simulate(engine.cfg, engine.task, hp, jax.random.key(1),
                                       inbox_policy="latest")
    chex.assert_tree_all_finite(state.params)
    # models, iterations, sent, delivered, dropped, lost and replaced (the engine counts a
    # replaced full model once per fragment, as it counts deliveries)
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), 0)
    assert ref.iterations.min() >= 3
    if algorithm in ("swift", "adpsgd"):
        np.testing.assert_array_equal(np.asarray(state.algo_state.queue.enqueued), ref.enqueued)
    if algorithm == "adpsgd":
        assert ref.pongs > 0
    if algorithm != "local":
        assert ref.sent.sum() > 0


def uneven_hparams(cfg):
    """Compute from 50 to 270 ms: fast senders land several models in a slow receiver's inbox
    window, so replacements happen."""
    return straggler_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.27, 0.07], jnp.float32),
        upload_bps=jnp.array([1e5, 3e4, 1e4, 4e3, 1e3], jnp.float32),
        # latencies that are not whole ticks (tick 10 ms): time is rounded once, on arrival
        latency_s=jnp.array([0.0234, 0.0, 0.0071, 0.0312, 0.0188], jnp.float32))


@pytest.mark.parametrize("algorithm,delivery,inbox", [
    ("swift", "arrival_tick", "latest"), ("adpsgd", "receiver_iteration", "latest"),
    ("swift", "receiver_iteration", "sum"), ("adpsgd", "arrival_tick", "sum")])
def test_async_baselines__both_inbox_rules_equal_reference_with_uneven_compute(
        algorithm, delivery, inbox):
    """Swift and AD-PSGD on uneven compute and links, where copies from one sender pile up in
    one inbox window: parameters, counters and replacements equal the reference."""
    cfg = tiny_config(algorithm=algorithm, delivery=delivery, fanout=4, n_fragments=3,
                      duration_s=2.0, same_init=False, inbox=inbox)
    hp = uneven_hparams(cfg)
    run = make_run(cfg, hp=hp)
    state, _ = divjax.jit(run)(jax.random.key(2), hp)
    assert int(state.errors) == 0
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(2),
                                       inbox_policy=inbox)
    assert_equals_reference(state, ref)   # models and every counter, replacements included
    if inbox == "latest":
        assert ref.replaced > 0
        # and the other rule gives other models on the same network
        other = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp,
                                             jax.random.key(2), inbox_policy="sum")
        assert np.abs(other.params - ref.params).max() > 1e-3


def test_adpsgd__ping_and_pong_from_one_sender_count_once():
    """A slow node 0 receives pings and pongs of the fast nodes 1 and 2 several times in one
    inbox window; the authors' rule averages only the newest model of each sender."""
    cfg = SimConfig(algorithm="adpsgd", n_nodes=3, fanout=2, n_fragments=1, local_steps=1,
                    batch_size=2, tick_s=0.01, duration_s=1.0, eval_every_s=0.5,
                    compute_s=0.1, topology="complete", same_init=False)
    hp = default_hparams(cfg).replace(
        compute_s=jnp.array([0.3, 0.05, 0.05], jnp.float32),
        upload_bps=jnp.full(3, 1e7, jnp.float32), latency_s=jnp.zeros(3, jnp.float32))
    run = make_run(cfg, hp=hp)
    state, _ = divjax.jit(run)(jax.random.key(0), hp)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(0),
                                       inbox_policy="latest")
    assert ref.replaced > 0
    np.testing.assert_allclose(np.asarray(state.params), ref.params, rtol=1e-5, atol=1e-6)
    assert int(state.counters.replaced.sum()) == ref.replaced


@pytest.mark.parametrize("algorithm", ALL)
def test_baseline__identical_models_are_a_fixed_point(algorithm):
    _, _, state0, state, metrics = run_engine(algorithm, same_init=True, lr=jnp.float32(0.0))
    init = state0.params
    if algorithm != "local":
        assert int(state.counters.delivered.sum()) > 0
    np.testing.assert_allclose(np.asarray(state.params), np.asarray(init), rtol=1e-6, atol=1e-7)
    assert float(np.max(metrics["consensus"])) < 1e-10


@pytest.mark.parametrize("algorithm", ALL)
def test_baseline__consensus_shrinks_without_learning(algorithm):
    """lr = 0 from independent initial models: gossip contracts toward the average."""
    _, _, state0, state, m = run_engine(algorithm, lr=jnp.float32(0.0))
    init = state0.params
    start = float(np.mean(np.sum((init - init.mean(0)) ** 2, axis=(1, 2))))
    end = float(m["consensus"][-1])
    chex.assert_tree_all_finite(state.params)
    if algorithm == "local":
        assert end == pytest.approx(start, rel=1e-5)
    else:
        assert end < 0.5 * start


def test_dpsgd__complete_graph_one_step_equals_centralized_minibatch_sgd():
    """W = 11^T / n on the complete graph: one round is one SGD step on the union of batches."""
    engine, _, state0, state, _ = run_engine("dpsgd", same_init=True, lr=jnp.float32(0.1))
    task, layout, n = engine.task, engine.layout, engine.cfg.n_nodes
    assert engine.cfg.local_steps == 1 and engine.cfg.topology == "complete"
    rounds = int(state.iterations[0])
    assert rounds >= 2 and np.all(np.asarray(state.iterations) == rounds)
    k_sim = state0.k_sim
    x = state0.params[0]
    c = int(np.asarray(state.next_end)[0]) // (rounds + 1)

    def union_loss(p, batches):
        return jnp.mean(jnp.stack([task.loss(layout.unflatten(p), b) for b in batches]))

    for r in range(1, rounds + 1):
        keys = tick_keys(k_sim, jnp.int32(r * c))
        batches = [task.sample_batch(jax.random.split(node_batch_key(keys.batch, i), 1)[0],
                                     jnp.int32(i)) for i in range(n)]
        x = x - 0.1 * jax.grad(union_loss)(x, batches)
    for i in range(n):
        np.testing.assert_allclose(np.asarray(state.params[i]), np.asarray(x), rtol=1e-5,
                                   atol=1e-6)


def test_swift__queue_of_a_slow_link_grows_without_bound():
    _, _, _, state, _ = run_engine("swift")
    q = np.asarray(queue_length(state))
    assert q[4] > 10 * max(1, q[:3].max())
    assert q[4] > 20


def test_sync__round_lasts_slowest_compute_plus_slowest_link_plus_latency():
    engine, _, _, state, _ = run_engine("epidemic")
    # slowest compute 0.17 s; fanout 2 models of 4 D bytes at 4e3 B/s; latency 0.03 s
    model_bytes = 4 * engine.layout.D
    expect = 17 + int(np.ceil(2 * model_bytes / 4e3 / 0.01)) + 3
    np.testing.assert_array_equal(np.asarray(state.next_end) % expect, 0)
    assert int(state.iterations[0]) == engine.cfg.num_ticks // expect


def test_adpsgd__sweep_row_equals_single_run():
    """The pong loop (lax.while_loop) under vmap gives the single run's numbers: each row's
    models and losses to float rounding, its iterations and every counter exactly."""
    from test_chunking import assert_counters_identical

    engine, init, run_from = compiled("adpsgd")
    hp = hparams_for(engine.cfg)
    lrs = [0.01, 0.05]
    grid = product(hp, lr=lrs)
    keys = jax.random.split(jax.random.key(0), 2)
    states, m = divjax.jit(jax.vmap(run_from))(jax.vmap(init)(keys, grid), grid)
    for row, lr in enumerate(lrs):
        hp_r = hp.replace(lr=jnp.float32(lr))
        one, m1 = run_from(init(keys[row], hp_r), hp_r)
        got = jax.tree.map(lambda x, r=row: x[r], states)
        chex.assert_trees_all_close(got.params, one.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(m["loss_mean"][row], m1["loss_mean"], rtol=1e-5)
        chex.assert_trees_all_equal(got.iterations, one.iterations)
        assert_counters_identical(got, one)
    assert int(states.counters.delivered.sum()) > 0


def test_adpsgd__every_ping_is_answered():
    engine, hp, _, state, _ = run_engine("adpsgd", upload_bps=jnp.full(5, 1e6, jnp.float32),
                                         latency_s=jnp.zeros(5, jnp.float32))
    ref = reference_baselines.simulate(engine.cfg, engine.task, hp, jax.random.key(0))
    pings = sum(1 for _, kind, (_, _, what) in ref.log if kind == "arrive" and what == "ping")
    assert ref.pongs == pings > 0
    p = engine.cfg.fanout // 2
    # fast links: each node queued p pings per iteration plus one pong per ping it received
    assert int(np.asarray(state.algo_state.queue.enqueued).sum()) == \
        p * int(np.asarray(state.iterations).sum()) + pings


def test_compare__summary_columns_and_time_to_target():
    from divjax.frontends.compare import summarize

    def fake(loss):
        return {"metrics": {"time_s": np.array([1.0, 2.0, 3.0]), "loss_mean": np.array(loss),
                            "loss_avgmodel": np.array(loss), "bytes_sent": np.array([0, 4e6, 8e6]),
                            "msgs_sent": np.array([0, 4, 8]), "msgs_dropped": np.zeros(3),
                            "consensus": np.ones(3), "iterations_mean": np.arange(3.0)},
                "K": 4, "max_queue": None, "wall_s": 1.0}

    rows, target = summarize({"a": fake([10.0, 5.0, 1.0]), "b": fake([8.0, 6.0, 6.0])},
                             "loss", higher_is_better=False, target=None)
    assert target == pytest.approx(10 + 0.9 * (1 - 10))
    assert [r["time to target (s)"] for r in rows] == [3.0, None]
    assert rows[0]["models sent"] == 2 and rows[0]["MB sent"] == 8.0
    rows, _ = summarize({"a": fake([10.0, 5.0, 1.0])}, "loss", False, target=5.0)
    assert rows[0]["time to target (s)"] == 2.0


def test_compare__cli_writes_table_json_and_plot(tmp_path):
    from divjax.frontends.cli import main

    code = main(["compare", "--preset", "synthetic-small", "--algorithms", "local", "--n-nodes",
                 "4", "--duration-s", "1", "--eval-every-s", "0.5", "--out", str(tmp_path),
                 "--quiet"])
    assert code == 0
    for name in ("compare.md", "compare.json", "compare.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| local |" in (tmp_path / "compare.md").read_text()


def test_adpsgd__pongs_answered_in_chunks_equal_reference(monkeypatch):
    """Equal compute and links: every node's pings land at the same tick, so each pong pass
    has more responders than a chunk (PONG_CHUNK = 2 of n = 5) and runs in several chunks."""
    monkeypatch.setattr(adpsgd, "PONG_CHUNK", 2)
    cfg = tiny_config(algorithm="adpsgd", delivery="receiver_iteration", fanout=4,
                      n_fragments=3, duration_s=1.0, same_init=False)
    hp = default_hparams(cfg).replace(upload_bps=jnp.full(5, 1e5, jnp.float32),
                                      latency_s=jnp.full(5, 0.02, jnp.float32))
    run = make_run(cfg, hp=hp)
    state, _ = divjax.jit(run)(jax.random.key(3), hp)
    assert int(state.errors) == 0
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(3),
                                       inbox_policy="latest")
    assert ref.pongs > 0
    assert_equals_reference(state, ref)
