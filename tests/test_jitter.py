"""Per-iteration compute jitter (issue 18): iteration k of node i lasts round(c_i f_ik) ticks,
f_ik log-normal, drawn from the run's key per (node, iteration). The engine equals the reference
simulators (parameters and counters) with jitter on, in both delivery modes; a jitter that
moves no iteration end runs the jitter code paths and gives the bits of no jitter; bad values
and the synchronous algorithms are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_equals_reference, reference_of, run_checked, uneven_hparams

from divjax.network import compute_schedule
from divjax.config import ConfigError, SimConfig
from divjax.engine.sim import make_run


def jitter_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     compute_jitter=0.5, same_init=False)
    return base.replace(**changes)




# DivShare with delivery "arrival_tick" and local-only run with jitter in tests/test_churn.py
@pytest.mark.parametrize("algorithm,delivery", [("divshare", "receiver_iteration"),
                                                ("swift", "receiver_iteration"),
                                                ("adpsgd", "arrival_tick")])
def test_jitter__engine_equals_reference_simulator(algorithm, delivery):
    cfg = jitter_config(algorithm=algorithm, delivery=delivery)
    hp = uneven_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    per = 1 if algorithm == "divshare" else run.engine.layout.K
    assert int(state.counters.replaced.sum()) == per * ref.replaced
    # the iterations really are uneven: node 3 (27 ticks) would finish 5 without jitter
    ends = compute_schedule.host_end_ticks(run.engine.cfg, np.array([5, 10, 13, 27, 7]),
                                           jax.random.split(jax.random.key(1))[1])
    lengths = np.diff(ends, axis=1)
    assert len(np.unique(lengths[3])) > 3
    np.testing.assert_array_equal(np.asarray(state.iterations),
                                  np.sum(ends < run.engine.cfg.num_ticks, axis=1))


def test_jitter__a_jitter_that_moves_no_end_changes_no_bit():
    """sigma 1e-7 runs every jitter code path (the end table, its searches, the bounds' sizes)
    with ends k c_i exactly: parameters and counters are those of no jitter, bit for bit
    (Swift here; DivShare's table paths: the same test in tests/test_churn.py).
    (Jitter sizes the training capacity to every node and ends iterations a chunk at a time;
    both runs are given the same chunks: another chunking sums the same messages in another
    order, equal to float rounding only.)"""
    cfg = jitter_config(compute_jitter=0.0, algorithm="swift", iteration_chunk=2,
                        train_capacity=5)
    hp = uneven_hparams(cfg)
    _, base, m_base = run_checked(cfg, hp)
    run, tiny, m_tiny = run_checked(cfg.replace(compute_jitter=1e-7), hp)
    assert run.engine.cfg.iteration_slots > 0
    np.testing.assert_array_equal(np.asarray(tiny.params), np.asarray(base.params))
    for name in ("sent", "delivered", "dropped", "replaced"):
        np.testing.assert_array_equal(np.asarray(getattr(tiny.counters, name)),
                                      np.asarray(getattr(base.counters, name)))
    np.testing.assert_array_equal(np.asarray(tiny.iterations), np.asarray(base.iterations))
    np.testing.assert_array_equal(m_tiny["loss_mean"], m_base["loss_mean"])


def test_jitter__end_table_is_seeded_per_node_and_iteration_and_log_normal():
    cfg = SimConfig(n_nodes=400, compute_jitter=0.3, tick_s=0.01, duration_s=2.0,
                    eval_every_s=1.0, iteration_slots=60)
    c = jnp.full((400,), 50, jnp.int32)
    key = jax.random.key(3)
    ends = np.asarray(compute_schedule.iteration_ends(cfg, c, key))
    assert ends.shape == (400, 60) and ends.dtype == np.int32
    np.testing.assert_array_equal(ends, compute_schedule.iteration_ends(cfg, c, key))
    other = np.asarray(compute_schedule.iteration_ends(cfg, c, jax.random.key(4)))
    assert not np.array_equal(other, ends)
    # an entry depends on (key, node, iteration) only, never on the table's length
    short = compute_schedule.iteration_ends(cfg.replace(iteration_slots=7), c, key)
    np.testing.assert_array_equal(np.asarray(short), ends[:, :7])
    d = np.diff(ends, axis=1, prepend=0)
    assert d.min() >= compute_schedule.shortest_ticks(cfg, np.array([50]))[0]
    assert d.max() <= compute_schedule.longest_ticks(cfg, np.array([50]))[0]
    assert abs(d.mean() / 50 - 1) < 0.02                             # mean 1 (clip: ~0)
    assert 0.27 < np.std(np.log(d)) < 0.33
    # sigma 0 has no table; a tiny sigma gives k c exactly
    tiny = compute_schedule.iteration_ends(cfg.replace(compute_jitter=1e-7), c, key)
    np.testing.assert_array_equal(np.asarray(tiny),
                                  np.broadcast_to(np.arange(1, 61) * 50, ends.shape))


def test_jitter__bad_values_synchronous_algorithms_and_short_tables_are_refused():
    for value in (-0.1, float("nan"), float("inf"), 2.5):
        with pytest.raises(ConfigError, match="compute_jitter"):
            jitter_config(compute_jitter=value)
    for algorithm in ("dpsgd", "epidemic"):
        with pytest.raises(ConfigError, match="--compute-jitter 0"):
            jitter_config(algorithm=algorithm)
    with pytest.raises(ConfigError, match="iteration_slots"):
        jitter_config(iteration_slots=-1)
    with pytest.raises(ConfigError, match="--iteration-slots"):
        make_run(jitter_config(iteration_slots=3))
