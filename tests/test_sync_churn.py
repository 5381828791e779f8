"""Churn for the synchronous rounds of D-PSGD and Epidemic Learning (issue 18).

Rounds keep their one length (churn never pauses them); a node offline at a round end skips
that round (no training, sending or mixing; its model, optimizer state and iteration count
stay), and a model sent to an offline node is sent and lost. The engine equals the reference
simulator (parameters and counters: sent, delivered, lost, iterations), with and without
message loss, in one call or in chunks; a churn rate that takes no node offline gives the bits
of no churn."""

import jax
import numpy as np
import pytest
from conftest import assert_equals_reference, assert_same_run, run_checked

import divjax
from divjax.reference import baselines as reference_baselines
from divjax.config import ConfigError, SimConfig, default_hparams


def sync_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.0, eval_every_s=0.5, compute_s=0.1,
                     churn_rate=0.3, churn_mean_s=0.15, same_init=False, momentum=0.5)
    return base.replace(**changes)


def run_equals_reference(cfg: SimConfig, hp, seed: int):
    """The engine's run equals the reference simulator's (models, sent, delivered, iterations,
    lost). Returns (run, state, metrics, reference result)."""
    run, state, metrics = run_checked(cfg, hp, seed=seed)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp,
                                       jax.random.key(seed))
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
    return run, state, metrics, ref


@pytest.mark.parametrize("algorithm,topology,loss,chunk,seed", [
    ("dpsgd", "ring", 0.0, 0, 1),          # a sparse W: only neighbours mix
    ("dpsgd", "complete", 0.2, 2, 2),
    ("epidemic", "complete", 0.0, 2, 1),
    ("epidemic", "ring", 0.2, 0, 3)])
def test_sync_churn__engine_equals_reference_simulator(algorithm, topology, loss, chunk, seed):
    cfg = sync_config(algorithm=algorithm, topology=topology, loss_rate=loss,
                      iteration_chunk=chunk)
    hp = default_hparams(cfg)
    run, state, metrics, ref = run_equals_reference(cfg, hp, seed)
    assert metrics["msgs_lost"][-1] == ref.lost.sum()
    # rounds are never paused: every node's next round end is the one of a run without churn
    _, calm, _ = run_checked(cfg.replace(churn_rate=0.0), hp, seed=seed)
    np.testing.assert_array_equal(np.asarray(state.next_end), np.asarray(calm.next_end))
    rounds = int(calm.iterations[0])
    # the feature is exercised: some node skipped rounds, none skipped them all, and what
    # reached an offline node was lost (without message loss, the only way to lose one)
    assert ref.iterations.min() < rounds and ref.iterations.min() > 0
    assert int(np.max(calm.iterations)) == rounds == int(np.min(calm.iterations))
    assert ref.lost.sum() > 0 and ref.delivered.sum() > 0
    assert int(state.counters.dropped.sum()) == 0


@pytest.mark.parametrize("algorithm", ["dpsgd", "epidemic"])
def test_sync_churn__a_rate_that_takes_no_node_offline_changes_no_bit(algorithm):
    """churn_rate 1e-6 (the offline searches, the lossy mixing, nothing offline): the bits and
    counters of no churn, and every node takes every round."""
    cfg = sync_config(algorithm=algorithm, churn_rate=0.0, loss_rate=0.0, iteration_chunk=2)
    hp = default_hparams(cfg)
    _, base, _ = run_checked(cfg, hp)
    _, tiny, _ = run_checked(cfg.replace(churn_rate=1e-6), hp)
    assert_same_run(tiny, base)
    np.testing.assert_array_equal(np.asarray(tiny.iterations), np.asarray(base.iterations))
    np.testing.assert_array_equal(np.asarray(tiny.next_end), np.asarray(base.next_end))


@pytest.mark.parametrize("algorithm", ["dpsgd", "epidemic"])
def test_sync_churn__churn_is_taken_but_jitter_and_traces_are_still_refused(algorithm,
                                                                            tmp_path):
    assert sync_config(algorithm=algorithm).churn_rate == 0.3
    with pytest.raises(ConfigError, match="--compute-jitter 0"):
        sync_config(algorithm=algorithm, compute_jitter=0.3)
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,node,compute_s,online\n"
                     + "".join(f"0,{i},0.1,1\n" for i in range(5)))
    with pytest.raises(ConfigError, match="trace_file"):
        sync_config(algorithm=algorithm, churn_rate=0.0, trace_file=str(trace))


@pytest.mark.parametrize("algorithm,seed", [("dpsgd", 2), ("epidemic", 1)])
def test_sync_churn__nodes_offline_at_most_round_ends(algorithm, seed):
    """Churn 90%: at most 4 of the 9 rounds find a node online (the others change nothing),
    and one node is offline at every round end: it never trains, sends nothing and ends with
    its initial model, while the models sent to it are lost."""
    cfg = sync_config(algorithm=algorithm, churn_rate=0.9, churn_mean_s=0.6)
    hp = default_hparams(cfg)
    run, state, _, ref = run_equals_reference(cfg, hp, seed)
    never = np.flatnonzero(ref.iterations == 0)
    assert never.size > 0 and 0 < ref.iterations.sum() <= 4 and int(state.next_end[0]) == 110
    initial = divjax.jit(run.engine.init)(jax.random.key(seed), hp).params
    np.testing.assert_array_equal(np.asarray(state.params)[never], np.asarray(initial)[never])
    assert np.all(ref.sent[never] == 0) and np.all(ref.lost[never] > 0)
