"""Every invalid configuration raises a clear error naming the field, the value and the fix."""

import jax
import jax.numpy as jnp
import pytest
from conftest import tiny_config

from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.engine.sim import SimulationError, check_state, make_run, simulate
from divjax.tasks.base import Task


def test_config__omega_below_one():
    with pytest.raises(ConfigError, match="n_fragments=0"):
        SimConfig(n_fragments=0)


def test_config__omega_larger_than_parameter_count():
    with pytest.raises(ConfigError, match=r"n_fragments=1000.*parameter count D=68"):
        make_run(tiny_config(n_fragments=1000))


def test_config__fanout_larger_than_n_minus_one():
    with pytest.raises(ConfigError, match=r"fanout=5.*n_nodes - 1 = 4"):
        SimConfig(n_nodes=5, fanout=5)


@pytest.mark.parametrize("bps", [0.0, -1.0, float("nan")])
def test_config__non_positive_bandwidth(bps):
    cfg = tiny_config()
    hp = default_hparams(cfg).replace(upload_bps=jnp.array([1e4, bps, 1e4, 1e4, 1e4]))
    with pytest.raises(ConfigError, match=r"upload_bps\[\(1,\)\]"):
        make_run(cfg, hp=hp)


def test_config__non_positive_bandwidth_flag():
    with pytest.raises(ConfigError, match="fast_mbps=0"):
        SimConfig(fast_mbps=0)


def test_config__ring_that_cannot_hold_the_longest_delay():
    with pytest.raises(ConfigError, match=r"ring_ticks=2 cannot hold.*--ring-ticks"):
        make_run(tiny_config(delivery="arrival_tick", ring_ticks=2))


def test_config__state_that_does_not_fit_in_memory():
    huge = Task(name="huge", init=lambda k: {"w": jnp.zeros((50_000_000,))},
                loss=None, sample_batch=None, evaluate=None, metric_names=("loss",),
                primary="loss", higher_is_better=False, info={})
    with pytest.raises(ConfigError, match=r"n_nodes=4000 models.*GiB.*lower --n-nodes"):
        make_run(SimConfig(n_nodes=4000, fanout=1), task=huge)


def test_run__nan_in_training_is_a_clear_error():
    cfg = tiny_config(lr=50.0, duration_s=2.0)
    run = make_run(cfg)
    with pytest.raises(SimulationError, match=r"NaN/inf.*lower --lr"):
        simulate(run.engine, jax.random.key(0), default_hparams(cfg))


def test_run__hparams_that_outgrow_the_ring_are_flagged_not_silently_dropped():
    cfg = tiny_config()
    run = make_run(cfg)  # ring sized for default_hparams: compute_s = 0.1
    slow = default_hparams(cfg).replace(compute_s=jnp.full(5, 0.5))
    with pytest.raises(ConfigError, match="delay_ticks=.*--delay-ticks"):   # on the host
        simulate(run.engine, jax.random.key(0), slow)
    state = jax.jit(run.engine.init)(jax.random.key(0), slow)   # no host check: the flag
    with pytest.raises(SimulationError, match="delay ring is shorter"):
        check_state(state, cfg)


def test_presets__every_preset_is_a_valid_config_and_realworld_turns_the_features_on():
    from divjax.frontends.presets import PRESETS

    for name, make in PRESETS.items():
        assert isinstance(make(), SimConfig), name
    rw = PRESETS["movielens-realworld"]()
    assert rw.algorithm == "divshare" and rw.n_nodes == 60 and rw.latency_regions > 1
    assert rw.compute_spread and rw.compute_jitter and rw.loss_rate and rw.churn_rate
    assert rw.download_mbps > 0
    tb = PRESETS["movielens-testbed"]()   # the paper's setting, both directions shaped
    assert tb.download_mbps == tb.fast_mbps and tb.straggler_download_mbps == tb.straggler_mbps
