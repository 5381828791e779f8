"""Checkpoints: a run interrupted midway and resumed is bit-identical to an uninterrupted one."""

import chex
import jax
import numpy as np
import pytest
from conftest import straggler_hparams, tiny_config

from divjax import checkpoint
from divjax.sim import make_engine, simulate


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_config(duration_s=2.0, eval_every_s=0.25, momentum_buffer=True, momentum=0.9,
                      reset_optimizer=False)
    hp = straggler_hparams(cfg)
    engine = make_engine(cfg, hp=hp)
    full_state, full_metrics = simulate(engine, jax.random.key(3), hp)   # uninterrupted
    return engine, hp, full_state, full_metrics


def _assert_same(m1, m2):
    assert set(m1) == set(m2)
    for k in m1:
        chex.assert_trees_all_equal(m1[k], m2[k])


def test_checkpoint__kill_and_resume_is_bit_identical(setup, tmp_path):
    engine, hp, full_state, full_metrics = setup
    key = jax.random.key(3)

    checkpoint.save_run_spec(tmp_path, engine.cfg, hp, seed=3)

    def killer(c, C, m):
        if c == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.drive(engine, key, hp, run_dir=tmp_path, every_s=0.5, progress=killer)
    assert checkpoint.latest_step(tmp_path) == 5 * engine.cfg.eval_every
    _, _, seed, state, metrics = checkpoint.resume(tmp_path)
    assert seed == 3
    chex.assert_trees_all_equal(jax.random.key_data(state.k_sim),
                                jax.random.key_data(full_state.k_sim))
    state, full_state = (s.replace(k_sim=jax.random.key_data(s.k_sim)) for s in (state, full_state))
    chex.assert_trees_all_equal(state, full_state)        # params, optimizer, ring, clock, counters
    _assert_same(metrics, full_metrics)


def test_checkpoint__periodic_save_restores_the_state_at_that_tick(setup, tmp_path):
    engine, hp, full_state, full_metrics = setup
    key = jax.random.key(3)
    checkpoint.drive(engine, key, hp, run_dir=tmp_path, every_s=0.5, stop_chunk=4)
    assert checkpoint.latest_step(tmp_path) == 4 * engine.cfg.eval_every
    state, history = checkpoint.restore(tmp_path, engine, hp)
    assert int(state.t) == 4 * engine.cfg.eval_every and len(history) == 4
    np.testing.assert_array_equal(history[3]["loss_mean"], full_metrics["loss_mean"][3])
    # continuing from the restored state (same engine, no rebuild) reaches the same end
    state, metrics = checkpoint.drive(engine, key, hp, state=state, history=history)
    np.testing.assert_array_equal(np.asarray(state.params), np.asarray(full_state.params))
    chex.assert_trees_all_equal(state.opt_state, full_state.opt_state)
    _assert_same(metrics, full_metrics)
