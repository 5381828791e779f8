"""Errors on the API path: a jitted run cannot raise, so it flags; the host checks refuse what
the int32 clock cannot represent (issue 16)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import divjax
from divjax.config import ConfigError, default_hparams
from divjax.engine.sim import SimulationError, check_state, make_run
from divjax.engine.state import ERR_CLOCK, ERR_NONFINITE


@pytest.fixture(scope="module")
def run():
    cfg = tiny_config(duration_s=1.0)
    return divjax.jit(make_run(cfg, hp=default_hparams(cfg))), make_run(cfg).engine.cfg


@pytest.fixture(scope="module")
def plain_run():
    """The same run under a plain jax.jit: no host check of a call's HParams."""
    cfg = tiny_config(duration_s=1.0)
    return jax.jit(make_run(cfg, hp=default_hparams(cfg)))


def test_make_run__divergence_shows_in_metrics_and_check_state(run):
    fn, cfg = run
    hp = default_hparams(cfg).replace(lr=jnp.float32(1e4))
    state, m = fn(jax.random.key(0), hp)
    assert int(state.errors) & ERR_NONFINITE
    assert m["errors"][-1] > 0 and m["errors"][0] >= 0
    with pytest.raises(SimulationError, match=r"node \d+'s model became NaN.*lower --lr"):
        check_state(state, cfg)
    assert 0 <= int(state.first_error_node) < cfg.n_nodes
    ok_state, ok = fn(jax.random.key(0), default_hparams(cfg))
    assert np.all(ok["errors"] == 0)
    check_state(ok_state, cfg)


@pytest.mark.parametrize("field,value", [("upload_bps", 1e-4), ("upload_bps", 0.0),
                                         ("compute_s", float("inf")), ("latency_s", -1.0)])
def test_make_run__hparams_that_overflow_the_link_clock_flag_an_error(run, plain_run, field,
                                                                     value):
    """HParams handed to an already built run: divjax.jit refuses them on the host
    (sizing.check_sizes); under a plain jax.jit (no host check) they must not overflow into
    negative times and count messages as sent."""
    fn, cfg = run
    hp = default_hparams(cfg)
    arr = np.asarray(getattr(hp, field)).copy()
    arr[-1] = value
    bad = hp.replace(**{field: jnp.asarray(arr, jnp.float32)})
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        fn(jax.random.key(0), bad)
    state, m = plain_run(jax.random.key(0), bad)
    assert int(state.errors) & ERR_CLOCK
    assert m["errors"][-1] > 0
    with pytest.raises(SimulationError, match="int32 link clock"):
        check_state(state, cfg)


def test_config__compute_time_that_is_not_whole_ticks_is_refused():
    cfg = tiny_config(tick_s=0.005, compute_s=0.001)        # would run 5x slower than asked
    with pytest.raises(ConfigError, match="whole number of ticks"):
        make_run(cfg)
    make_run(tiny_config(tick_s=0.005, compute_s=0.1))      # 20 ticks: fine


def test_config__latency_that_is_not_whole_link_subticks_is_refused():
    # tick 0.05 s with 10 sub-ticks: 5 ms per sub-tick; 1 ms would run as 0 ms
    with pytest.raises(ConfigError, match="link sub-ticks"):
        make_run(tiny_config(tick_s=0.05, compute_s=0.5, latency_ms=1.0, link_resolution=10))
    make_run(tiny_config(tick_s=0.05, compute_s=0.5, latency_ms=1.0))   # 20 sub-ticks: fine


def test_schedule__time_is_rounded_once_on_the_arrival():
    """A 14 ms fragment with 1 ms of latency at tick 50 ms arrives at the end of the tick it
    was sent in (15 ms <= 50 ms), not one tick later (latency rounded up on its own)."""
    from divjax.network import links as network
    from divjax.config import SimConfig

    cfg = SimConfig(n_nodes=2, fanout=1, tick_s=0.05, link_resolution=1000, latency_ms=1.0)
    hp = default_hparams(cfg).replace(upload_bps=jnp.full(2, 1000.0 / 0.014))
    table = network.link_table(cfg, hp, np.array([1000]))           # 1000 bytes: 14 ms
    assert int(table.latency_units[0]) == 20 and int(table.msg_units[0, 0]) == 280
    sched = network.schedule_replaced_queue(table, jnp.array([0]), jnp.array([True]),
                                            table.msg_units[:1], jnp.int32(3), 1000,
                                            jnp.array([[1]]))
    assert int(sched.leave_tick[0, 0]) == 4 and int(sched.arrival[0, 0]) == 4
    # 990 sub-ticks on the link + 20 of latency crosses the tick boundary: one tick later
    sched = network.schedule_replaced_queue(table, jnp.array([0]), jnp.array([True]),
                                            jnp.array([[990]]), jnp.int32(3), 1000,
                                            jnp.array([[1]]))
    assert int(sched.leave_tick[0, 0]) == 4 and int(sched.arrival[0, 0]) == 5


def test_memory_error__advice_fits_the_config():
    """The memory error names --iteration-chunk when training buffers weigh, and never
    suggests the delivery mode that is already on."""
    from divjax.engine.sizing import memory_advice

    est = {"training": 6.0, "ring": 1.0, "params": 1.0, "total": 8.0}
    tips = "; ".join(memory_advice(tiny_config(), est))
    assert "--iteration-chunk" in tips and "receiver_iteration" not in tips
    tips = "; ".join(memory_advice(tiny_config(delivery="arrival_tick", iteration_chunk=8), est))
    assert "--delivery receiver_iteration" in tips and "--iteration-chunk" not in tips


def test_adpsgd__a_ping_table_too_short_is_an_error_not_a_silent_drop():
    """ping_slots=1 with fanout 4 (2 pings per iteration end): the table cannot hold them."""
    from divjax.config import SimConfig
    from divjax.engine.sim import make_engine, simulate

    cfg = SimConfig(algorithm="adpsgd", n_nodes=5, fanout=4, duration_s=1.0, tick_s=0.01,
                    compute_s=0.1, ping_slots=1)
    engine = make_engine(cfg)
    assert engine.cfg.ping_slots == 1
    with pytest.raises(SimulationError, match="ping-slots"):
        simulate(engine, jax.random.key(0), default_hparams(engine.cfg))
    auto = make_engine(cfg.replace(ping_slots=0))
    assert auto.cfg.ping_slots >= 2
    state, _ = simulate(auto, jax.random.key(0), default_hparams(auto.cfg))
    check_state(state, auto.cfg)
