"""Churn (issue 18): nodes go offline for exponential intervals drawn from the run's key. An
offline node neither trains (its iteration is paused) nor sends (going offline drops its
DivShare queue); what reaches it is lost and counted. The engine equals the reference
simulators (parameters and counters, lost and dropped included); a churn rate that takes no
node offline within the run gives the bits of no churn; bad values are refused (D-PSGD and
Epidemic Learning: tests/test_sync_churn.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    assert_equals_reference,
    assert_same_run,
    reference_of,
    run_checked,
    uneven_hparams,
)

from divjax.network import compute_schedule
from divjax.config import ConfigError, SimConfig


def churn_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     churn_rate=0.3, churn_mean_s=0.15, same_init=False)
    return base.replace(**changes)




@pytest.mark.parametrize("algorithm,delivery,jitter", [("divshare", "receiver_iteration", 0.0),
                                                       ("divshare", "arrival_tick", 0.4),
                                                       ("local", "receiver_iteration", 0.3)])
def test_churn__engine_equals_reference_simulator(algorithm, delivery, jitter):
    cfg = churn_config(algorithm=algorithm, delivery=delivery, compute_jitter=jitter)
    hp = uneven_hparams(cfg)
    run, state, metrics = run_checked(cfg, hp, driver=jitter > 0)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    if algorithm == "divshare":
        np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
        np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
        assert int(state.counters.replaced.sum()) == ref.replaced
        assert ref.lost.sum() > 0 and metrics["msgs_lost"][-1] == ref.lost.sum()
    if jitter == 0:   # nodes really went offline: fewer iterations than without churn
        base = np.floor(1.5 / np.asarray(hp.compute_s, np.float64) + 1e-6)
        assert np.all(np.asarray(state.iterations) <= base)
        assert state.iterations.sum() < base.sum()


def test_churn__a_rate_that_takes_no_node_offline_changes_no_bit():
    """churn_rate 1e-6: online intervals longer than the run, the churn code paths (end table,
    offline searches) with nothing offline: the bits of no churn (same iteration chunks)."""
    cfg = churn_config(churn_rate=0.0, iteration_chunk=2, train_capacity=5)
    hp = uneven_hparams(cfg)
    _, base, _ = run_checked(cfg, hp)
    run, tiny, _ = run_checked(cfg.replace(churn_rate=1e-6), hp)
    assert run.engine.cfg.iteration_slots > 0
    assert_same_run(tiny, base)


def test_churn__offline_intervals_are_seeded_and_pause_iterations():
    cfg = SimConfig(n_nodes=300, tick_s=0.01, duration_s=4.0, eval_every_s=1.0,
                    churn_rate=0.25, churn_mean_s=0.2, iteration_slots=60)
    key = jax.random.key(5)
    start, end = (np.asarray(x) for x in compute_schedule.offline_intervals(cfg, key))
    again = compute_schedule.offline_intervals(cfg, key)
    np.testing.assert_array_equal(np.asarray(again[0]), start)
    assert np.all(start[:, 0] >= 1) and np.all(end > start) and np.all(start[:, 1:] > end[:, :-1])
    T = cfg.num_ticks
    offline = np.clip(np.minimum(end, T) - np.minimum(start, T), 0, None).sum(1)
    assert abs(offline.mean() / T - 0.25) < 0.03                    # the offline fraction
    assert abs((end - start)[start < T].mean() * cfg.tick_s / 0.2 - 1) < 0.1
    c = jnp.full((300,), 7, jnp.int32)
    ends = np.asarray(compute_schedule.iteration_ends(cfg, c, key))
    unpaused = np.arange(1, 61) * 7
    assert np.all(ends >= unpaused) and np.any(ends[:, 10] > unpaused[10])
    # no iteration ends while its node is offline
    down = (start[:, None, :] <= ends[:, :, None]) & (ends[:, :, None] < end[:, None, :])
    assert not down.any()


def test_churn__bad_values_are_refused():
    for value in (-0.1, 0.95, float("nan")):
        with pytest.raises(ConfigError, match="churn_rate"):
            churn_config(churn_rate=value)
    for value in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="churn_mean_s"):
            churn_config(churn_mean_s=value)


def offline_share(cfg, key) -> tuple[float, float]:
    """(share of the run's node-ticks offline, mean offline interval length in ticks)."""
    start, end = (np.asarray(x) for x in jax.jit(
        lambda k: compute_schedule.offline_intervals(cfg, k))(key))
    T = cfg.num_ticks
    assert np.all(np.diff(start, axis=1) > 0) and np.all(end > start) and start.min() >= 1
    offline = np.clip(np.minimum(end, T) - np.minimum(start, T), 0, None).sum(1)
    return offline.mean() / T, (end - start)[start < T].mean()


def test_churn__short_offline_means_keep_the_offline_share():
    """A one-tick mean offline interval: rounding an exponential to at least one tick drew 13%
    offline for 10% asked (old code); the geometric draw keeps 10%, in one-tick intervals."""
    cfg = SimConfig(n_nodes=400, tick_s=0.01, duration_s=4.0, eval_every_s=1.0,
                    churn_rate=0.1, churn_mean_s=0.01)
    share, mean_len = offline_share(cfg, jax.random.key(0))
    assert abs(share - 0.1) < 0.006 and mean_len == 1.0
    share, mean_len = offline_share(cfg.replace(churn_mean_s=0.05), jax.random.key(1))
    assert abs(share - 0.1) < 0.01 and abs(mean_len - 5) < 0.25
    assert compute_schedule.effective_churn(cfg) == (0.1, 0.01)


def test_churn__a_mean_below_one_tick_warns_with_the_share_drawn():
    cfg = SimConfig(n_nodes=400, tick_s=0.01, duration_s=4.0, eval_every_s=1.0,
                    churn_rate=0.6, churn_mean_s=0.003)
    share, mean_s = compute_schedule.effective_churn(cfg)
    assert (share, mean_s) == (0.5, 0.01)
    with pytest.warns(UserWarning, match="offline share of 0.5 and offline intervals of 0.01 s"):
        got, _ = offline_share(cfg, jax.random.key(0))
    assert abs(got - 0.5) < 0.01


def test_churn__the_papers_800_s_run_fits_the_offline_table():
    """800 s at 10 ms ticks: the old guard ((T + 2)^2 >= 2^31, in sizing only) refused churn
    beyond 463 s, and the unguarded sums overflowed into negative ticks. The sums now
    saturate past the run: the table is sorted, the share right, the ends reach the run's end."""
    from divjax.engine.sim import make_run

    cfg = churn_config(n_nodes=3, duration_s=800.0, eval_every_s=100.0, churn_rate=0.2,
                       churn_mean_s=0.5)
    run = make_run(cfg)                                     # sized (refused before)
    share, mean_len = offline_share(cfg.replace(n_nodes=40), jax.random.key(3))
    assert abs(share - 0.2) < 0.01 and abs(mean_len - 50) < 2
    S = run.engine.cfg.iteration_slots
    ends = np.asarray(jax.jit(lambda k: compute_schedule.iteration_ends(
        run.engine.cfg, jnp.full((3,), 10, jnp.int32), k))(jax.random.key(3)))
    assert ends.shape == (3, S) and np.all(np.diff(ends, axis=1) > 0)
    assert np.all(ends[:, -1] >= cfg.num_ticks) and ends.min() > 0
    with pytest.raises(ConfigError, match="too long for the int32 offline table"):
        compute_schedule.offline_intervals(cfg.replace(duration_s=2e6, eval_every_s=1e5,
                                                       tick_s=0.01), jax.random.key(0))
