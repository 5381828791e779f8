"""AD-PSGD with download links (issue 18): pings and pongs queue on their receivers' download
links, first come first served by the time they reach them, and a ping is answered when it is
delivered. Every delivery comes from a replay of the network at init
(`adpsgd_network.download_table`); the engine equals the event-driven reference simulator,
parameters and counters, and unlimited downloads give the bits of a run without the model."""

import jax
import jax.numpy as jnp
import pytest
from conftest import (
    assert_equals_reference,
    assert_lost_and_replaced_equal,
    assert_same_run,
    run_checked,
)
from test_downloads import (
    appended_downloads_equal_reference,
    congested_hparams,
    download_config,
)

import divjax
from divjax.reference import baselines as reference_baselines
from divjax.config import ConfigError, default_hparams
from divjax.engine.sim import make_run
from divjax.engine.state import ERR_SCHEDULE


def adpsgd_config(**changes):
    return download_config(**{"algorithm": "adpsgd", "fanout": 4, **changes})


@pytest.mark.parametrize("delivery,inbox,loss,jitter,churn", [
    ("receiver_iteration", "latest", 0.0, 0.0, 0.0),
    ("arrival_tick", "latest", 0.0, 0.0, 0.0),    # the "latest" look-ahead by arrival tick
    ("receiver_iteration", "sum", 0.0, 0.0, 0.0),
    ("arrival_tick", "latest", 0.2, 0.0, 0.0),
    ("arrival_tick", "sum", 0.2, 0.3, 0.0),
    ("receiver_iteration", "latest", 0.0, 0.0, 0.2)])
def test_adpsgd_downloads__engine_equals_reference_simulator(delivery, inbox, loss, jitter,
                                                             churn):
    """Pings and pongs wait on the download links; pongs leave when the ping is delivered.
    With churn a message a going-offline receiver or sender cannot finish is lost."""
    _, _, ref = appended_downloads_equal_reference(adpsgd_config(
        delivery=delivery, inbox=inbox, loss_rate=loss, compute_jitter=jitter,
        churn_rate=churn, churn_mean_s=0.2))
    assert ref.pongs > 0


def test_adpsgd_downloads__unlimited_bandwidth_gives_the_bits_of_no_download_model():
    """Download links far faster than anything sent (every model 0 sub-ticks): each ping and
    pong is delivered at its upload arrival, so the run is the one without limits, bit for
    bit (with loss and churn: the same messages are lost on the way, at offline nodes, and
    dropped)."""
    extra = dict(loss_rate=0.2, churn_rate=0.2, churn_mean_s=0.2, duration_s=1.0)
    cfg = adpsgd_config(download_mbps=0.0, **extra)
    _, base, _ = run_checked(cfg, congested_hparams(cfg))
    fast = adpsgd_config(download_mbps=1e9, **extra)
    _, state, _ = run_checked(fast, congested_hparams(fast, download=(1e15,) * 5))
    assert_same_run(state, base)
    assert int(base.counters.lost.sum()) > 0 and int(base.counters.dropped.sum()) > 0


def test_adpsgd_downloads__hparams_beyond_the_sized_table_raise_not_mislead():
    """A run sized for one compute time, given HParams with iterations ten times as fast: the
    pre-pass cannot hold every ping and pong, and the run says so (ERR_SCHEDULE) under a
    plain jax.jit; divjax.jit refuses them on the host (sizing.check_sizes)."""
    cfg = adpsgd_config()
    hp = congested_hparams(cfg)
    run = make_run(cfg, hp=hp)
    fast = hp.replace(compute_s=hp.compute_s / 10)
    with pytest.raises(ConfigError):
        divjax.jit(run)(jax.random.key(1), fast)
    state, _ = jax.jit(run)(jax.random.key(1), fast)
    assert int(state.errors) & ERR_SCHEDULE


def test_adpsgd_downloads__equal_nodes_tie_at_a_download_link_smaller_sender_first():
    """Identical nodes (compute, upload, latency): pings of one tick reach a download link at
    the same sub-tick, and the smaller sender is served first; equals the reference."""
    cfg = adpsgd_config(fanout=2, download_mbps=0.05)
    hp = default_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1),
                                       inbox_policy="latest")
    assert_equals_reference(state, ref)
    assert_lost_and_replaced_equal(state, ref, per=run.engine.layout.K)
    assert ref.pongs > 0


def test_adpsgd_downloads__sweep_over_download_bandwidth_row_equals_single_run():
    """The pre-pass's loops under vmap: each row of a sweep over download bandwidths is the
    single run with those HParams, bit for bit."""
    cfg = adpsgd_config()
    slow = congested_hparams(cfg)
    fast = congested_hparams(cfg, download=(4e4,) * 5)
    run = make_run(cfg, hp=slow)
    grid = jax.tree.map(lambda a, b: jnp.stack([a, b]), slow, fast)
    states, _ = divjax.jit(jax.vmap(run, in_axes=(None, 0)))(jax.random.key(1), grid)
    for row, hp in enumerate((slow, fast)):
        one, _ = divjax.jit(run)(jax.random.key(1), hp)
        assert_same_run(jax.tree.map(lambda x: x[row], states), one)
    assert int(states.counters.delivered[0].sum()) != int(states.counters.delivered[1].sum())
