"""The vectorized engine against the event-driven reference simulator, and its invariants."""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import straggler_hparams, tiny_config

import divjax
from divjax.reference import divshare as reference
from divjax.config import default_hparams, product
from divjax.engine.sim import make_run, simulate
from divjax.tasks.base import Task


def run_engine(cfg, hp, seed=0):
    run = make_run(cfg, hp=hp)
    state, metrics = divjax.jit(run)(jax.random.key(seed), hp)
    return run, state, metrics


def uneven_hparams(cfg):
    """Uneven compute (50 to 270 ms) and links, n = 5: fast senders often land two copies of a
    fragment in one inbox window of a slow receiver, so the inbox rule matters."""
    return straggler_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.27, 0.07], jnp.float32),
        upload_bps=jnp.array([1e5, 1e4, 1e4, 2e3, 5e2], jnp.float32),
        # latencies that are not whole ticks (tick 10 ms): time is rounded once, on arrival
        latency_s=jnp.array([0.0234, 0.0, 0.0071, 0.0312, 0.0188], jnp.float32))


# Every (Omega, fanout) in both delivery modes, the authors' rule everywhere it matters and
# the "sum" rule once per mode (6 of the 12 combinations: the suite's time is a budget).
@pytest.mark.parametrize("delivery,omega,fanout,inbox,seed", [
    ("receiver_iteration", 4, 3, "latest", 0), ("arrival_tick", 4, 3, "latest", 0),
    ("receiver_iteration", 1, 1, "latest", 0), ("arrival_tick", 7, 1, "latest", 0),
    ("receiver_iteration", 7, 1, "sum", 1), ("arrival_tick", 1, 1, "sum", 1)])
def test_engine__equals_reference_simulator(delivery, omega, fanout, inbox, seed):
    """Every node's parameters and every counter (replacements included), after ~20 iterations
    with stragglers and uneven compute, under both inbox rules."""
    cfg = tiny_config(n_fragments=omega, fanout=fanout, delivery=delivery, duration_s=3.0,
                      inbox=inbox)
    hp = uneven_hparams(cfg)
    run, state, _ = run_engine(cfg, hp, seed)
    ref = reference.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(seed),
                             inbox_policy=inbox)
    assert ref.dropped.sum() > 0 and ref.sent.sum() > 0  # the stragglers do lose messages
    np.testing.assert_allclose(np.asarray(state.params), ref.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.counters.sent), ref.sent)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    np.testing.assert_array_equal(np.asarray(state.counters.delivered), ref.delivered)
    np.testing.assert_array_equal(np.asarray(state.iterations), ref.iterations)
    assert int(state.counters.replaced.sum()) == ref.replaced
    if inbox == "latest":
        assert ref.replaced > 0                            # the rule was exercised


def test_engine__latest_and_sum_differ_where_copies_pile_up():
    """The two inbox rules give different models on a network where replacements happen (so
    the equality test above can tell them apart), and the same where none can."""
    cfg = tiny_config(n_fragments=4, fanout=3, duration_s=3.0)
    hp = uneven_hparams(cfg)
    _, latest, _ = run_engine(cfg, hp)
    _, summed, _ = run_engine(cfg.replace(inbox="sum"), hp)
    assert int(latest.counters.replaced.sum()) > 0
    assert np.abs(np.asarray(latest.params) - np.asarray(summed.params)).max() > 1e-3


def test_engine__identical_models_are_a_fixed_point():
    cfg = tiny_config(lr=0.0)
    hp = straggler_hparams(cfg)
    run, state, metrics = run_engine(cfg, hp)
    init = divjax.jit(run.engine.init)(jax.random.key(0), hp).params
    assert int(state.counters.delivered.sum()) > 0
    np.testing.assert_allclose(np.asarray(state.params), np.asarray(init), rtol=1e-6, atol=1e-7)
    assert float(np.max(metrics["consensus"])) < 1e-10


def test_network__fast_links_deliver_every_message_before_the_next_iteration():
    cfg = tiny_config(n_fragments=3, fanout=2)
    hp = default_hparams(cfg).replace(upload_bps=jnp.full(5, 1e15), latency_s=jnp.zeros(5))
    run, state, _ = run_engine(cfg, hp)
    ref = reference.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(0),
                             keep_log=True)
    assert int(state.counters.dropped.sum()) == 0
    M = cfg.n_fragments * cfg.fanout
    assert int(state.counters.sent.sum()) == int(state.iterations.sum()) * M
    c = int(round(cfg.compute_s / cfg.tick_s))
    for t, kind, _ in ref.log:  # sent at end tick + 1, arrives then: before the next end
        if kind in ("sent", "arrive"):
            assert t % c == 1


def test_network__slower_link_delivers_fewer_fragments():
    cfg = tiny_config(n_fragments=4, fanout=3, duration_s=3.0)
    hp = default_hparams(cfg).replace(
        upload_bps=jnp.array([1e4, 1e4, 1e4, 1e4, 1e3], jnp.float32))
    _, state, _ = run_engine(cfg, hp)
    sent = np.asarray(state.counters.sent).sum(1)
    dropped = np.asarray(state.counters.dropped)
    assert sent[4] < sent[:4].min()
    assert dropped[4] > 0 and dropped[:4].sum() == 0


class _Quadratic(NamedTuple):
    targets: np.ndarray


def quadratic_task(targets) -> Task:
    """Node i minimises 0.5 (w - targets[i])^2; no sampling noise, so each step is exact."""
    a = jnp.asarray(targets, jnp.float32)
    return Task(
        name="quadratic", init=lambda key: {"w": jnp.zeros((1,))},
        loss=lambda p, batch: 0.5 * jnp.sum((p["w"] - batch) ** 2),
        sample_batch=lambda key, node: a[node],
        evaluate=lambda p, node: {"loss": jnp.sum(p["w"] ** 2)},
        metric_names=("loss",), primary="loss", higher_is_better=False, info={})


def test_divshare__sends_post_training_pre_aggregation_values():
    """Two nodes, one fragment, instant links: by hand, y_i^k = x_i^{k-1} - lr (x_i^{k-1} - a_i)
    and x_i^k = (y_i^k + y_j^{k-1}) / 2. Sending the aggregated model instead gives other numbers."""
    targets, lr, iters = [1.0, -3.0], 0.5, 6
    cfg = tiny_config(n_nodes=2, n_fragments=1, fanout=1, local_steps=1, lr=lr,
                      compute_s=0.1, duration_s=0.1 * iters + 0.05, eval_every_s=0.05)
    hp = default_hparams(cfg).replace(upload_bps=jnp.full(2, 1e15), latency_s=jnp.zeros(2))
    run = make_run(cfg, task=quadratic_task(targets), hp=hp)
    state, _ = divjax.jit(run)(jax.random.key(0), hp)
    x, y_prev = np.zeros(2), None
    for _ in range(iters):
        y = x - lr * (x - np.array(targets))
        x = y if y_prev is None else (y + y_prev[::-1]) / 2
        y_prev = y
    got = np.asarray(state.params)[:, 0, 0]
    np.testing.assert_allclose(got, x, rtol=1e-6)
    # the other order (send the aggregate) is measurably different
    x2, s_prev = np.zeros(2), None
    for _ in range(iters):
        y = x2 - lr * (x2 - np.array(targets))
        x2 = y if s_prev is None else (y + s_prev[::-1]) / 2
        s_prev = x2
    assert np.abs(x2 - x).max() > 1e-3


def test_run__same_key_same_bits_and_other_key_differs():
    cfg = tiny_config()
    hp = straggler_hparams(cfg)
    run = divjax.jit(make_run(cfg, hp=hp))
    a = run(jax.random.key(7), hp)
    b = run(jax.random.key(7), hp)
    chex.assert_trees_all_equal(a[1], b[1])
    chex.assert_trees_all_equal(a[0].params, b[0].params)
    c = run(jax.random.key(8), hp)
    assert not np.array_equal(np.asarray(a[0].params), np.asarray(c[0].params))


def test_run__chunked_driver_and_eval_interval_do_not_change_bits():
    cfg = tiny_config()
    hp = straggler_hparams(cfg)
    run = make_run(cfg, hp=hp)
    s1, m1 = divjax.jit(run)(jax.random.key(3), hp)
    s2, m2 = simulate(run.engine, jax.random.key(3), hp)
    chex.assert_trees_all_equal(np.asarray(s1.params), np.asarray(s2.params))
    chex.assert_trees_all_equal(np.asarray(m1["consensus"]), m2["consensus"])
    run_fine = make_run(cfg.replace(eval_every_s=0.25), hp=hp)
    s3, _ = divjax.jit(run_fine)(jax.random.key(3), hp)
    chex.assert_trees_all_equal(np.asarray(s1.params), np.asarray(s3.params))


def test_sweep__row_equals_single_run():
    cfg = tiny_config()
    hp = straggler_hparams(cfg)
    run = make_run(cfg, hp=hp)
    keys = jax.random.split(jax.random.key(0), 2)
    grid = product(hp, lr=[0.01, 0.1])
    _, m = divjax.jit(jax.vmap(jax.vmap(run, (0, None)), (None, 0)))(keys, grid)
    dims = chex.Dimensions(H=2, S=2, C=cfg.num_chunks)
    chex.assert_shape(m["loss_mean"], dims["HSC"])
    _, m1 = divjax.jit(run)(keys[1], hp.replace(lr=jnp.float32(0.1)))
    chex.assert_trees_all_close(m["loss_mean"][1, 1], m1["loss_mean"], rtol=1e-5)


def test_run__traces_once_across_hparam_values():
    cfg = tiny_config()
    hp = straggler_hparams(cfg)
    chex.clear_trace_counter()
    run = jax.jit(chex.assert_max_traces(make_run(cfg, hp=hp), n=1))
    run(jax.random.key(0), hp.replace(lr=jnp.float32(0.1)))
    run(jax.random.key(1), hp.replace(lr=jnp.float32(0.3)))


def test_run__metrics_have_documented_shapes_and_are_finite():
    cfg = tiny_config()
    hp = straggler_hparams(cfg)
    _, state, m = run_engine(cfg, hp)
    chex.assert_shape(state.params, (cfg.n_nodes, cfg.n_fragments, None))
    for name in ("time_s", "loss_mean", "loss_avgmodel", "consensus", "bytes_sent",
                 "msgs_delivered", "msgs_dropped"):
        chex.assert_shape(m[name], (cfg.num_chunks,))
    chex.assert_shape(m["node"]["loss"], (cfg.num_chunks, cfg.n_nodes))
    chex.assert_tree_all_finite(m)
    np.testing.assert_allclose(m["time_s"], np.arange(1, cfg.num_chunks + 1) * 0.5, rtol=1e-6)


@pytest.mark.parametrize("algorithm,delivery", [("divshare", "receiver_iteration"),
                                                ("divshare", "arrival_tick"),
                                                ("adpsgd", "arrival_tick")])
def test_iteration_chunk__equals_every_finishing_node_at_once(algorithm, delivery):
    """Up to 4 nodes finish together; chunks of 2 give the same models and the same counters."""
    cfg = tiny_config(algorithm=algorithm, delivery=delivery, fanout=2, duration_s=1.5)
    hp = straggler_hparams(cfg)
    _, whole, m_whole = run_engine(cfg, hp, seed=3)
    run, chunked, m_chunked = run_engine(cfg.replace(iteration_chunk=2), hp, seed=3)
    assert run.engine.cfg.train_capacity > 2            # so the finishers span two chunks
    np.testing.assert_allclose(np.asarray(chunked.params), np.asarray(whole.params),
                               rtol=1e-6, atol=1e-7)
    from test_chunking import assert_counters_identical
    assert_counters_identical(chunked, whole)   # every counter, replaced and lost too
    np.testing.assert_array_equal(np.asarray(chunked.iterations), np.asarray(whole.iterations))
    assert float(m_whole["msgs_delivered"][-1]) > 0
