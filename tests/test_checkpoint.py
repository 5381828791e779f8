"""Checkpoints: a run interrupted midway and resumed is bit-identical to an uninterrupted one."""

import json

import chex
import jax
import numpy as np
import pytest

from divjax.engine import checkpoint
from divjax.frontends import cli, presets
from divjax.config import default_hparams
from divjax.engine.sim import make_engine, simulate

# the CLI flags that turn the synthetic preset into CFG (momentum buffer: optimizer state to save)
FLAGS = ["--preset", "synthetic-small", "--n-nodes", "6", "--n-stragglers", "2", "--duration-s", "2", "--eval-every-s", "0.25",
         "--momentum-buffer", "--momentum", "0.9", "--no-reset-optimizer", "--seed", "3"]
CFG = presets.get_preset("synthetic-small").replace(
    n_nodes=6, n_stragglers=2, duration_s=2.0, eval_every_s=0.25, momentum_buffer=True,
    momentum=0.9, reset_optimizer=False)


@pytest.fixture(scope="module")
def setup():
    hp = default_hparams(CFG)
    engine = make_engine(CFG, hp=hp)
    full_state, full_metrics = simulate(engine, jax.random.key(3), hp)   # uninterrupted
    return engine, hp, full_state, full_metrics


def _assert_same(m1, m2):
    assert set(m1) == set(m2)
    for k in m1:
        chex.assert_trees_all_equal(m1[k], m2[k])


def test_checkpoint__kill_and_resume_is_bit_identical(setup, tmp_path, monkeypatch):
    """`divjax run --checkpoint-every` killed (Ctrl-C) midway, then `divjax run --resume`."""
    engine, hp, full_state, full_metrics = setup
    real_drive = checkpoint.drive

    def interrupted_drive(*args, progress=None, **kw):
        def killer(c, C, m):
            progress(c, C, m)
            if c == 5:
                raise KeyboardInterrupt   # what Ctrl-C raises in the host loop
        return real_drive(*args, progress=killer, **kw)

    monkeypatch.setattr(checkpoint, "drive", interrupted_drive)
    assert cli.main(["run", *FLAGS, "--checkpoint-every", "0.5", "--quiet", "--out",
                     str(tmp_path)]) == 130
    assert checkpoint.latest_step(tmp_path) == 5 * engine.cfg.eval_every
    monkeypatch.setattr(checkpoint, "drive", real_drive)
    assert cli.main(["run", "--resume", str(tmp_path), "--quiet"]) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    from divjax.engine.xla_options import program_options
    assert json.loads((tmp_path / "config.json").read_text())["xla_compiler_options"] == \
        program_options(engine.advance)           # the options that decide the float rounding
    for k, v in full_metrics.items():
        if k != "node":
            np.testing.assert_array_equal(np.asarray(saved[k], np.float32), v)
    assert checkpoint.latest_step(tmp_path) == engine.cfg.num_ticks

    # the final checkpoint of the resumed run holds the uninterrupted run's final state
    state, history = checkpoint.restore(tmp_path, engine, hp)
    metrics = jax.tree.map(lambda *xs: np.stack(xs), *history)
    chex.assert_trees_all_equal(jax.random.key_data(state.k_sim),
                                jax.random.key_data(full_state.k_sim))
    state, full_state = (s.replace(k_sim=jax.random.key_data(s.k_sim)) for s in (state, full_state))
    chex.assert_trees_all_equal(state, full_state)        # params, optimizer, ring, clock, counters
    _assert_same(metrics, full_metrics)
    # `divjax plot` overlays run directories
    assert cli.main(["plot", str(tmp_path), str(tmp_path), "--labels", "a,b", "--out",
                     str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").stat().st_size > 0


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


def test_checkpoint__other_xla_options_refuse_to_resume(setup, tmp_path, monkeypatch):
    """The options decide the float rounding: a run resumed under others would not continue
    bit-identically, so restore names them (DIVJAX_XLA_DEFAULTS flipped between the two)."""
    from divjax.tasks.registry import make_task

    _, hp, _, _ = setup   # a task compiled with divjax's options (the least-squares task asks
    #                       for XLA's defaults, which the variable does not change)
    engine = make_engine(CFG, task=make_task(CFG)._replace(xla_defaults=False), hp=hp)
    key = jax.random.key(3)
    checkpoint.drive(engine, key, hp, run_dir=tmp_path, every_s=0.5, stop_chunk=2)
    from divjax import compiler_options
    if not compiler_options():
        pytest.skip("divjax passes no XLA option here (not a CPU, or an older jaxlib)")
    monkeypatch.setenv("DIVJAX_XLA_DEFAULTS", "1")
    with pytest.raises(checkpoint.ConfigError, match="XLA options.*DIVJAX_XLA_DEFAULTS"):
        checkpoint.restore(tmp_path, engine, hp, key=key)
    monkeypatch.delenv("DIVJAX_XLA_DEFAULTS")
    state, history = checkpoint.restore(tmp_path, engine, hp, key=key)
    assert len(history) == 2
