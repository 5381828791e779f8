"""Churn and message loss for the baselines (issue 18).

Swift with churn: going offline drops the appended queue (counted in `dropped`); what reaches an
offline node is lost. AD-PSGD with loss and churn: a lost ping is never answered, a lost pong is
lost, both counted at their receiver; going offline drops the pings and pongs queued. D-PSGD and
Epidemic Learning with loss: a receiver mixes what arrived. The engine equals the reference
simulator (parameters and counters: sent, delivered, lost, dropped, replaced); a rate that takes
no node offline or loses nothing gives the bits of none. D-PSGD and Epidemic Learning with
churn: tests/test_sync_churn.py."""

from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import (
    assert_equals_reference,
    assert_lost_and_replaced_equal,
    assert_same_run,
    run_checked,
    uneven_hparams,
)

from divjax.reference import baselines as reference_baselines
from divjax.network import trace_checks
from divjax.algorithms.swift import queue_length
from divjax.config import SimConfig, default_hparams


def base_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     same_init=False)
    return base.replace(**changes)




def assert_counters_equal(run, state, ref, metrics=None):
    """Engine counters equal the reference's; a full model counts once per fragment."""
    assert_equals_reference(state, ref)
    assert_lost_and_replaced_equal(state, ref, per=run.engine.layout.K)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    if metrics is not None:
        assert metrics["msgs_lost"][-1] == ref.lost.sum()


def appended_run_equals_reference(cfg, seed: int, inbox: str, driver: bool):
    """Run Swift or AD-PSGD and its reference simulator on the uneven network; check the
    counters and the queued models equal. Returns (run, state, reference result)."""
    hp = uneven_hparams(cfg, 5e3)
    run, state, metrics = run_checked(cfg, hp, seed=seed, driver=driver)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp,
                                       jax.random.key(seed), inbox_policy=inbox)
    assert_counters_equal(run, state, ref, metrics)
    np.testing.assert_array_equal(np.asarray(state.algo_state.queue.enqueued), ref.enqueued)
    return run, state, ref


@pytest.mark.parametrize("delivery,inbox,jitter,loss,rate,seed", [
    # seed 3: a newer model that would replace an older one in its receiver's inbox is
    # dropped first, when its sender goes offline (the look-ahead must know), and node 4's
    # backlog outlasts an offline interval (back online, it starts on an empty link)
    ("receiver_iteration", "latest", 0.0, 0.0, 0.3, 3),
    ("arrival_tick", "latest", 0.3, 0.2, 0.3, 1),
    ("receiver_iteration", "sum", 0.0, 0.2, 0.5, 2)])
def test_swift_churn__engine_equals_reference_simulator(delivery, inbox, jitter, loss, rate,
                                                        seed):
    cfg = base_config(algorithm="swift", delivery=delivery, inbox=inbox, compute_jitter=jitter,
                      loss_rate=loss, churn_rate=rate, churn_mean_s=0.15)
    run, state, ref = appended_run_equals_reference(cfg, seed, inbox, driver=jitter > 0)
    K = run.engine.layout.K     # what is still queued at the end: neither sent nor dropped
    np.testing.assert_array_equal(np.asarray(queue_length(state)),
                                  ref.enqueued - ref.sent[:, 0] - ref.dropped // K)
    # the features are exercised: arrivals at offline nodes lost, queues dropped going offline
    assert ref.lost.sum() > 0 and ref.dropped.sum() > 0
    if inbox == "latest":
        assert ref.replaced > 0


def test_swift_churn__a_rate_that_takes_no_node_offline_changes_no_bit():
    """churn_rate 1e-6: the churn code paths (stop ticks, offline searches, end table) with
    nothing offline give the bits and counters of no churn."""
    cfg = base_config(algorithm="swift", iteration_chunk=2, train_capacity=5)
    hp = uneven_hparams(cfg, 5e3)
    _, base, _ = run_checked(cfg, hp)
    run, tiny, _ = run_checked(cfg.replace(churn_rate=1e-6), hp)
    assert run.engine.cfg.iteration_slots > 0
    assert_same_run(tiny, base)
    assert int(tiny.counters.dropped.sum()) == 0


# (loss with jitter, with the "sum" rule and with receiver_iteration delivery: the churn cases
# below, which draw losses too)
@pytest.mark.parametrize("delivery,inbox,jitter", [("arrival_tick", "latest", 0.0)])
def test_adpsgd_loss__engine_equals_reference_simulator(delivery, inbox, jitter):
    cfg = base_config(algorithm="adpsgd", fanout=4, delivery=delivery, inbox=inbox,
                      compute_jitter=jitter, loss_rate=0.3)
    hp = uneven_hparams(cfg, 5e3)
    run, state, metrics = run_checked(cfg, hp, driver=jitter > 0)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1),
                                       inbox_policy=inbox)
    assert_counters_equal(run, state, ref, metrics)
    np.testing.assert_array_equal(np.asarray(state.algo_state.queue.enqueued), ref.enqueued)
    assert ref.lost.sum() > 0
    # pings and pongs both get lost: fewer pongs than pings sent (lost pings are unanswered)
    pings = int(np.asarray(state.algo_state.ping_tail).sum())
    assert 0 < ref.pongs < pings
    assert 0.15 < ref.lost.sum() / ref.sent.sum() < 0.45       # about loss_rate of what left


def test_adpsgd_loss__a_rate_that_loses_nothing_changes_no_bit():
    """loss_rate 1e-9 (the lossy code paths, pings and pongs, nothing lost): the bits and
    counters of loss_rate 0."""
    cfg = base_config(algorithm="adpsgd", fanout=4, delivery="arrival_tick")
    hp = uneven_hparams(cfg, 5e3)
    _, base, _ = run_checked(cfg, hp)
    _, tiny, _ = run_checked(cfg.replace(loss_rate=1e-9), hp)
    np.testing.assert_array_equal(np.asarray(tiny.params), np.asarray(base.params))
    for name in ("sent", "delivered", "replaced", "lost"):
        np.testing.assert_array_equal(np.asarray(getattr(tiny.counters, name)),
                                      np.asarray(getattr(base.counters, name)))
    assert int(tiny.counters.lost.sum()) == 0


# (D-PSGD in chunks and Epidemic in one call, with loss: tests/test_sync_churn.py)
@pytest.mark.parametrize("algorithm,chunk", [("dpsgd", 0), ("epidemic", 2)])
def test_sync_loss__engine_equals_reference_simulator(algorithm, chunk):
    """Synchronous rounds with loss, in one call or in chunks of 2 nodes (the round's loss is
    drawn once, by the chunk that closes it)."""
    cfg = base_config(algorithm=algorithm, fanout=2, topology="complete", loss_rate=0.3,
                      iteration_chunk=chunk, duration_s=1.0)
    hp = default_hparams(cfg)                  # rounds of one length: 9 rounds in the run
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1))
    assert_counters_equal(run, state, ref, metrics)
    assert ref.lost.sum() > 0 and ref.delivered.sum() > 0
    assert 0.15 < ref.lost.sum() / ref.sent.sum() < 0.45       # about loss_rate of what left


@pytest.mark.parametrize("algorithm", ["dpsgd", "epidemic"])
def test_sync_loss__a_rate_that_loses_nothing_changes_no_bit(algorithm):
    cfg = base_config(algorithm=algorithm, fanout=2, topology="complete", duration_s=1.0)
    hp = default_hparams(cfg)
    _, base, _ = run_checked(cfg, hp)
    _, tiny, _ = run_checked(cfg.replace(loss_rate=1e-9), hp)
    np.testing.assert_array_equal(np.asarray(tiny.params), np.asarray(base.params))
    for name in ("sent", "delivered", "lost"):
        np.testing.assert_array_equal(np.asarray(getattr(tiny.counters, name)),
                                      np.asarray(getattr(base.counters, name)))


@pytest.mark.parametrize("delivery,inbox,jitter,loss,seed", [
    # seed 8: a node's backlog of pongs outlasts an offline interval (back online, its link
    # starts empty)
    ("arrival_tick", "latest", 0.0, 0.0, 8),
    ("receiver_iteration", "latest", 0.3, 0.2, 2),
    ("arrival_tick", "sum", 0.0, 0.2, 3)])
def test_adpsgd_churn__engine_equals_reference_simulator(delivery, inbox, jitter, loss, seed):
    """Going offline drops pings and pongs not yet sent; what reaches an offline node is lost
    (a ping then goes unanswered)."""
    cfg = base_config(algorithm="adpsgd", fanout=4, delivery=delivery, inbox=inbox,
                      compute_jitter=jitter, loss_rate=loss, churn_rate=0.3, churn_mean_s=0.15)
    run, state, ref = appended_run_equals_reference(cfg, seed, inbox, driver=jitter > 0)
    assert ref.lost.sum() > 0 and ref.dropped.sum() > 0 and ref.pongs > 0


def test_adpsgd_churn__a_rate_that_takes_no_node_offline_changes_no_bit():
    cfg = base_config(algorithm="adpsgd", fanout=4, delivery="arrival_tick")
    hp = uneven_hparams(cfg, 5e3)
    _, base, _ = run_checked(cfg, hp)
    _, tiny, _ = run_checked(cfg.replace(churn_rate=1e-6), hp)
    assert_same_run(tiny, base)


@pytest.mark.filterwarnings("ignore:.*download_mbps column is not used")
@pytest.mark.parametrize("algorithm", ["swift", "adpsgd"])
def test_trace_offline__swift_and_adpsgd_equal_reference_simulator(algorithm):
    """A trace's offline rows act as churn does (the engine keys on `has_offline`)."""
    path = Path(__file__).parent / "data" / "trace_tiny.csv"
    cfg = base_config(algorithm=algorithm, fanout=4 if algorithm == "adpsgd" else 2,
                      trace_file=str(path))
    hp = trace_checks.trace_hparams(cfg, default_hparams(cfg))
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1),
                                       inbox_policy="latest")
    assert_counters_equal(run, state, ref, metrics)
    assert ref.lost.sum() > 0 and ref.dropped.sum() > 0


@pytest.mark.parametrize("algorithm", ["swift", "adpsgd", "dpsgd", "epidemic"])
def test_loss_file__baselines_equal_reference_simulator(tmp_path, algorithm):
    """Per-link loss (`--loss-file`): every baseline passes each message's receiver to
    `message_lost`."""
    p = np.zeros((5, 5))
    p[1, :], p[:, 0] = 0.7, 0.4        # from node 1, and to node 0
    np.fill_diagonal(p, 0.0)
    path = tmp_path / "loss.csv"
    path.write_text("\n".join(",".join(f"{v:g}" for v in row) for row in p) + "\n")
    sync = algorithm in ("dpsgd", "epidemic")
    cfg = base_config(algorithm=algorithm, fanout=4 if algorithm == "adpsgd" else 2,
                      loss_file=str(path), **(dict(topology="complete", duration_s=1.0)
                                              if sync else {}))
    hp = default_hparams(cfg) if sync else uneven_hparams(cfg, 5e3)
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1),
                                       inbox_policy="latest")
    assert_counters_equal(run, state, ref, metrics)
    assert ref.lost[0] > 0 and ref.lost[1] == 0 and ref.lost.sum() > ref.lost[0]
