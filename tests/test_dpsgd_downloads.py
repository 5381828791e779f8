"""D-PSGD's rounds with download limits against an independent reference
(`divjax.reference.dpsgd`): round lengths derived there from the HParams' bandwidths, latencies
and download limits, by a node-by-node, message-by-message play of one round's exchange, with
none of the engine's timing code (`reference_baselines` times D-PSGD with the algorithm's own
`adjust_timing`, so it cannot catch a wrong round). Counters exact, parameters to float
tolerance, the round length itself too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_equals_reference, assert_same_run, run_checked
from test_downloads import congested_hparams, download_config

from divjax.reference import dpsgd as reference_dpsgd
from divjax.algorithms.dpsgd import make_dpsgd
from divjax.network.links import concrete_link_table, link_table
from divjax.tasks.registry import make_task
from divjax.engine.sizing import model_layout
from divjax.network.topology import adjacency


def engine_round_ticks(run, hp) -> int:
    """The engine's round length (D-PSGD's `adjust_timing` of the run's link table)."""
    cfg = run.engine.cfg
    table = concrete_link_table(cfg, hp, run.engine.layout.fragment_bytes)
    ticks = np.asarray(make_dpsgd(cfg).adjust_timing(cfg, table).compute_ticks)
    assert np.all(ticks == ticks[0])
    return int(ticks[0])


def assert_engine_equals_independent_reference(cfg, hp):
    """Run the engine and the reference; compare the round, models and every counter."""
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_dpsgd.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1))
    assert engine_round_ticks(run, hp) == ref.round_ticks
    T, L = cfg.num_ticks, ref.round_ticks
    # the next round end is the first multiple of the round at or after the run's end
    np.testing.assert_array_equal(np.asarray(state.next_end), np.full(cfg.n_nodes,
                                                                      ((T - 1) // L + 1) * L))
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
    assert int(state.counters.dropped.sum()) == int(state.counters.replaced.sum()) == 0
    assert metrics["msgs_lost"][-1] == ref.lost.sum()
    assert int(ref.iterations.max()) >= 3          # several rounds were mixed
    return run, state, ref


@pytest.mark.parametrize("topology,loss,churn", [("ring", 0.0, 0.0), ("complete", 0.2, 0.2)])
def test_dpsgd_downloads__engine_equals_the_independent_reference(topology, loss, churn):
    """Congested download links: the last model received sets the round, longer than the
    upload rule; with loss and churn too (a round's length does not change with them)."""
    cfg = download_config(algorithm="dpsgd", topology=topology, loss_rate=loss,
                          churn_rate=churn, churn_mean_s=0.2, duration_s=3.0)
    down = (4e4, 1e4, 3e3, 6e4, 1.5e3) if topology == "ring" else (4e4, 2e4, 1e4, 6e4, 8e3)
    hp = congested_hparams(cfg, download=down)
    _, _, ref = assert_engine_equals_independent_reference(cfg, hp)
    assert ref.download_subticks > ref.upload_subticks      # the download links set the round
    if loss or churn:
        assert ref.lost.sum() > 0


def test_dpsgd_downloads__regions_and_ample_downloads_the_upload_rule_sets_the_round():
    """Two latency regions, download links faster than the uploads and the largest latency on
    a fast link: the round is the slowest upload plus the largest latency (node 0's, to the
    other region), longer than any model takes to arrive, as the reference derives it."""
    cfg = download_config(algorithm="dpsgd", topology="ring", latency_regions=2,
                          inter_region_ms=37.0, duration_s=2.0)
    hp = congested_hparams(cfg, download=(1e6,) * 5)
    hp = hp.replace(latency_s=hp.latency_s.at[0].set(0.05))
    _, _, ref = assert_engine_equals_independent_reference(cfg, hp)
    assert 0 < ref.download_subticks < ref.upload_subticks


def test_dpsgd_downloads__longer_rounds_and_unlimited_gives_the_bits():
    """Download limits only lengthen rounds; downloads so fast that every model takes 0
    sub-ticks give the run without the download model, bit for bit."""
    cfg = download_config(algorithm="dpsgd", topology="ring")
    hp = congested_hparams(cfg)
    _, state, _ = run_checked(cfg, hp)
    _, free, _ = run_checked(cfg.replace(download_mbps=0.0), hp)
    assert int(state.iterations[0]) < int(free.iterations[0])   # longer rounds
    fast = cfg.replace(download_mbps=1e9)
    _, fast_state, _ = run_checked(fast, congested_hparams(fast, download=(1e15,) * 5))
    assert_same_run(fast_state, free)


def test_dpsgd_rounds__random_networks_engine_round_equals_the_reference():
    """Twelve random networks (bandwidths, latencies and download limits drawn off round
    numbers, ring and complete graphs, two regions): the engine's link table in sub-ticks and
    its round length equal the reference's, derived from seconds and bytes/s."""
    rng = np.random.default_rng(0)
    task = make_task(download_config(algorithm="dpsgd"))
    for draw in range(12):
        topology = ("ring", "complete")[draw % 2]
        cfg = download_config(algorithm="dpsgd", topology=topology, latency_regions=1 + draw % 3
                              // 2, inter_region_ms=int(rng.integers(0, 4000)) / 100)
        hp = congested_hparams(cfg, download=tuple(10 ** rng.uniform(3, 5, 5))).replace(
            upload_bps=jnp.asarray(10 ** rng.uniform(3.3, 5, 5), jnp.float32),
            latency_s=jnp.asarray(rng.integers(0, 4000, 5) * 1e-5, jnp.float32))   # whole sub-ticks
        if draw % 5 == 4:   # a node with unlimited download
            hp = hp.replace(download_bps=hp.download_bps.at[draw % 5].set(jnp.inf))
        fragment_bytes = model_layout(cfg, task).fragment_bytes
        table = jax.tree.map(np.asarray, link_table(cfg, hp, fragment_bytes))
        q = reference_dpsgd.link_quantities(cfg, hp, fragment_bytes)
        np.testing.assert_array_equal(table.msg_units.sum(1), q["up"])
        np.testing.assert_array_equal(table.down_units.sum(1), q["down"])
        np.testing.assert_array_equal(table.compute_ticks, q["compute"])
        upload, last = reference_dpsgd.exchange_subticks(np.asarray(adjacency(cfg), bool), q)
        want = max(q["compute"]) + -(-max(upload, last) // cfg.link_resolution)
        got = np.asarray(make_dpsgd(cfg).adjust_timing(cfg, table).compute_ticks)
        np.testing.assert_array_equal(got, np.full(cfg.n_nodes, want), err_msg=f"draw {draw}")
