"""Heterogeneous compute (issue 18): per-node compute times from a seeded log-normal draw."""

import jax
import numpy as np
import pytest
from conftest import assert_equals_reference

import divjax
from divjax.reference import divshare as reference
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.engine.sim import make_run


def test_compute_spread__zero_changes_nothing_and_draws_are_whole_ticks_and_seeded():
    cfg = SimConfig(n_nodes=2000, compute_s=0.5, tick_s=0.01, n_stragglers=100,
                    straggler_mbps=(10.0,), straggler_compute_factor=2.0)
    base = np.asarray(default_hparams(cfg).compute_s)
    np.testing.assert_array_equal(np.asarray(default_hparams(cfg.replace(
        compute_spread=0.0, compute_seed=7)).compute_s), base)
    spread = np.asarray(default_hparams(cfg.replace(compute_spread=0.5)).compute_s, np.float64)
    ticks = spread / cfg.tick_s
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-3)   # whole ticks
    fast = spread[:-100]
    assert abs(fast.mean() / 0.5 - 1) < 0.05                         # log-normal of mean 1
    assert 0.4 < np.std(np.log(fast)) < 0.6
    assert abs(spread[-100:].mean() / 1.0 - 1) < 0.2                 # stragglers: 2x, spread
    again = np.asarray(default_hparams(cfg.replace(compute_spread=0.5)).compute_s)
    other = np.asarray(default_hparams(cfg.replace(compute_spread=0.5, compute_seed=1)).compute_s)
    np.testing.assert_array_equal(again, spread.astype(np.float32))
    assert not np.array_equal(other, again)


def test_compute_spread__engine_equals_reference_simulator():
    cfg = SimConfig(n_nodes=6, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                    tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                    compute_spread=0.6, compute_seed=3)
    hp = default_hparams(cfg)
    assert len(set(np.round(np.asarray(hp.compute_s), 3))) > 2       # really uneven
    run = make_run(cfg, hp=hp)
    state, _ = divjax.jit(run)(jax.random.key(0), hp)
    ref = reference.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(0),
                             inbox_policy="latest")
    assert_equals_reference(state, ref)


@pytest.mark.parametrize("value", [-0.1, float("nan"), 5.0])
def test_compute_spread__bad_values_are_refused(value):
    with pytest.raises(ConfigError, match="compute_spread"):
        SimConfig(compute_spread=value)


def test_iteration_chunk__auto_follows_how_nodes_finish():
    """-1 (the default) picks all-at-once when nodes finish together and a small power of two
    when compute spread makes them finish apart (padding to the capacity would train mostly
    empty rows); the rule itself, and that an explicit value is kept."""
    from divjax.engine.sizing import auto_iteration_chunk

    assert auto_iteration_chunk(60, 60.0) == 0 and auto_iteration_chunk(2, 1.0) == 0
    assert auto_iteration_chunk(32, 1.4) == 2 and auto_iteration_chunk(32, 1.0) == 1
    assert auto_iteration_chunk(200, 60.0) == 64 and auto_iteration_chunk(200, 120.0) == 0
    cfg = SimConfig(n_nodes=12, n_fragments=2, fanout=2, local_steps=1, batch_size=4,
                    tick_s=0.01, duration_s=1.0, eval_every_s=0.5, compute_s=0.1)
    assert make_run(cfg).engine.cfg.iteration_chunk == 0
    spread = make_run(cfg.replace(compute_spread=1.0)).engine.cfg
    assert 0 < spread.iteration_chunk < spread.train_capacity
    assert make_run(cfg.replace(compute_spread=1.0, iteration_chunk=0)).engine.cfg \
        .iteration_chunk == 0
