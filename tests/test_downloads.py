"""Download links (issue 18): messages reaching a node queue on its download link, first come
first served by the time they reach it; one its receiver cannot take in full before the
sender's next iteration end (plus the latency) is lost (`divjax.network.downloads`). The engine equals
the event-driven reference simulators, parameters and counters, for DivShare and Swift;
unlimited downloads give the bits of a run without the download model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    assert_equals_reference,
    assert_lost_and_replaced_equal,
    assert_same_run,
    reference_of,
    run_checked,
)

import divjax
from divjax.reference import baselines as reference_baselines
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.network.downloads import decode, fifo_deliveries
from divjax.engine.sim import make_run


def download_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     same_init=False, download_mbps=1.0)
    return base.replace(**changes)


def congested_hparams(cfg, download=(4e4, 1e4, 3e3, 6e4, 1.5e3)):
    """Fast senders, uneven compute and download links from ample to far too slow: queues form
    on the slow links, some messages are lost there, and copies pile up in inbox windows."""
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.27, 0.07], jnp.float32),
        upload_bps=jnp.array([1e5, 3e4, 1e4, 4e3, 2e4], jnp.float32),
        latency_s=jnp.array([0.0234, 0.0, 0.0071, 0.0312, 0.0188], jnp.float32),
        download_bps=jnp.array(download, jnp.float32))


@pytest.mark.parametrize("delivery,loss,jitter,churn", [("receiver_iteration", 0.0, 0.0, 0.0),
                                                        ("arrival_tick", 0.0, 0.0, 0.0),
                                                        ("receiver_iteration", 0.2, 0.0, 0.0),
                                                        ("receiver_iteration", 0.0, 0.0, 0.2),
                                                        ("arrival_tick", 0.0, 0.2, 0.2)])
def test_downloads__engine_equals_reference_simulator(delivery, loss, jitter, churn):
    """With churn too: a receiver offline when a message reaches it never takes it, one that
    goes offline must have taken it before, and a sender going offline closes its links."""
    cfg = download_config(delivery=delivery, loss_rate=loss, compute_jitter=jitter,
                          churn_rate=churn, churn_mean_s=0.2)
    hp = congested_hparams(cfg)
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    assert_lost_and_replaced_equal(state, ref)
    assert ref.replaced > 0                       # the "latest" look-ahead is exercised
    # the slow links lose messages, the ample one never does (loss 0)
    if loss == 0 and churn == 0:
        assert ref.lost[4] > 0 and ref.lost[3] == 0
    assert metrics["msgs_lost"][-1] == ref.lost.sum()


@pytest.mark.parametrize("delivery,inbox,loss,jitter,churn", [
    ("receiver_iteration", "latest", 0.0, 0.0, 0.0),
    ("arrival_tick", "latest", 0.2, 0.0, 0.0),
    ("receiver_iteration", "latest", 0.0, 0.0, 0.2),
    ("arrival_tick", "sum", 0.0, 0.3, 0.0)])
def test_swift_downloads__engine_equals_reference_simulator(delivery, inbox, loss, jitter,
                                                            churn):
    """Swift's models queue on the download links as DivShare's fragments do; Swift drops
    nothing, so without churn a slow link delays models (up to the run's end) and loses none;
    with churn a model a going-offline receiver or sender cannot finish is lost."""
    appended_downloads_equal_reference(download_config(
        algorithm="swift", delivery=delivery, inbox=inbox, loss_rate=loss,
        compute_jitter=jitter, churn_rate=churn, churn_mean_s=0.2))


def appended_downloads_equal_reference(cfg: SimConfig):
    """Swift or AD-PSGD with download limits on the congested network: the engine equals the
    reference simulator (models, sent, delivered, lost, replaced, dropped, queued); without
    churn the slowest download link holds models back and loses none (but for loss on the
    way), with churn some are lost there. Returns (run, state, reference result)."""
    hp = congested_hparams(cfg)
    driver = cfg.compute_jitter > 0
    run, state, metrics = run_checked(cfg, hp, driver=driver)
    ref = reference_baselines.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(1),
                                       inbox_policy=cfg.inbox)
    assert_equals_reference(state, ref)
    assert_lost_and_replaced_equal(state, ref, per=run.engine.layout.K)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    np.testing.assert_array_equal(np.asarray(state.algo_state.queue.enqueued), ref.enqueued)
    assert metrics["msgs_lost"][-1] == ref.lost.sum()
    if cfg.inbox == "latest":
        assert ref.replaced > 0                   # the look-ahead reads the download table
    if cfg.churn_rate == 0:                       # the slowest download link holds models back
        _, free, _ = run_checked(cfg.replace(download_mbps=0.0), hp, driver=driver)
        assert int(state.counters.delivered[4]) < int(free.counters.delivered[4])
        if cfg.loss_rate == 0:
            assert int(state.counters.lost.sum()) == 0
    else:
        assert ref.lost.sum() > 0
    return run, state, ref


def test_downloads__unlimited_bandwidth_gives_the_bits_of_no_download_model():
    """Download links far faster than anything sent (every message 0 sub-ticks): the download
    code path delivers each message at its upload arrival, so the run is today's, bit for bit."""
    cfg = download_config(download_mbps=0.0)
    hp = congested_hparams(cfg)
    _, base, _ = run_checked(cfg, hp)
    fast = download_config(download_mbps=1e9)
    _, state, _ = run_checked(fast, congested_hparams(fast, download=(1e15,) * 5))
    assert_same_run(state, base)
    assert int(state.counters.lost.sum()) == 0
    swift, fast_swift = cfg.replace(algorithm="swift"), fast.replace(algorithm="swift")
    _, base, _ = run_checked(swift, congested_hparams(swift))
    _, state, _ = run_checked(fast_swift, congested_hparams(fast_swift, download=(1e15,) * 5))
    assert_same_run(state, base)


def test_downloads__slower_links_deliver_later_and_lose_more():
    cfg = download_config()
    lost = []
    for scale in (1.0, 0.25):
        hp = congested_hparams(cfg, download=tuple(scale * np.array(
            [4e4, 1e4, 3e3, 6e4, 1.5e3])))
        _, state, _ = run_checked(cfg, hp)
        lost.append(int(state.counters.lost.sum()))
    assert lost[1] > lost[0] > 0


def test_fifo_deliveries__first_come_first_served_never_before_arrival():
    """On one link: messages are served in arrival order (ties: smaller sender), each starts
    when it has arrived and the link is free, and one that cannot finish by its deadline is lost
    (the link busy with it until then if it had started)."""
    R = 10
    # receiver 0: arrivals 5 (sender 2), 5 (sender 1), 12, 40; receiver 1: one message
    receiver = jnp.array([0, 0, 0, 0, 1, 2], jnp.int32)       # 2 = n: not a message
    avail = jnp.array([5, 5, 12, 40, 3, 0], jnp.int32)
    deadline = jnp.array([100, 100, 30, 100, 4, 0], jnp.int32)
    units = jnp.array([10, 10, 10, 5, 9, 0], jnp.int32)
    sender = jnp.array([2, 1, 3, 4, 0, 0], jnp.int32)
    tick, lost = decode(fifo_deliveries(receiver, avail, deadline, units, sender, R, 2))
    # sender 1 first: 5..15 (tick 2), sender 2: 15..25 (tick 3), the third starts at 25 and
    # cannot end by 30: lost at tick 3, link busy until 30; the fourth: 40..45 (tick 5)
    np.testing.assert_array_equal(np.asarray(lost), [False, False, True, False, True, False])
    np.testing.assert_array_equal(np.asarray(tick)[:5], [3, 2, 3, 5, 1])
    # zero download time: delivered at the tick it arrives, whatever the order
    tick0, lost0 = decode(fifo_deliveries(receiver, avail, deadline + 100, units * 0, sender, R,
                                          2))
    np.testing.assert_array_equal(np.asarray(tick0)[:5], -(-np.asarray(avail)[:5] // R))
    assert not bool(jnp.any(lost0))


def test_downloads__same_seed_bit_identical_and_local_accepts_limits():
    cfg = download_config()
    hp = congested_hparams(cfg)
    _, a, _ = run_checked(cfg, hp, seed=3)
    _, b, _ = run_checked(cfg, hp, seed=3)
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a.counters,
                                     b.counters))
    run_checked(download_config(algorithm="local"), hp)   # nothing is sent: nothing to queue


def test_downloads__bad_values_and_unsupported_combinations_are_refused():
    for value in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="download_mbps"):
            download_config(download_mbps=value)
    with pytest.raises(ConfigError, match="straggler_download_mbps"):
        download_config(straggler_download_mbps=(-2.0,))
    with pytest.raises(ConfigError, match="straggler_download_mbps"):
        download_config(n_stragglers=3, straggler_download_mbps=(1.0, 2.0))
    with pytest.raises(ConfigError, match="modelled for every algorithm but epidemic"):
        download_config(algorithm="epidemic")
    cfg = download_config()
    bad = default_hparams(cfg).replace(download_bps=jnp.array([1e4, 0.0, 1e4, 1e4, 1e4]))
    with pytest.raises(ConfigError, match="download_bps"):
        make_run(cfg, hp=bad)


def test_downloads__sharded_over_four_devices_equals_one_device():
    """The download table is per node (n, S, s, K): split over the node axis, the run's bits
    do not change."""
    import chex

    from divjax.engine.sharding import make_sharded_run

    cfg = download_config(n_nodes=8)
    hp = default_hparams(cfg).replace(download_bps=jnp.array(
        [4e4, 1e4, 3e3, 6e4, 1.5e3, 2e4, 8e3, 5e3], jnp.float32))
    one, m1 = divjax.jit(make_run(cfg, hp=hp))(jax.random.key(2), hp)
    sharded, m2 = divjax.jit(make_sharded_run(cfg, hp=hp))(jax.random.key(2), hp)
    assert int(one.counters.lost.sum()) > 0
    chex.assert_trees_all_equal(jax.device_get(one.params), jax.device_get(sharded.params))
    chex.assert_trees_all_equal(jax.device_get(one.counters), jax.device_get(sharded.counters))


def test_download_rules_script__processor_sharing_by_hand():
    """The comparison script's fair-sharing link: two messages of 10 sub-ticks arriving
    together finish together at 20; a third arriving at 5 with 5 to do shares three ways; a
    message past its deadline leaves unfinished."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "download_rules.py"
    spec = importlib.util.spec_from_file_location("download_rules", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fin, lost = mod.processor_sharing(np.array([0, 0]), np.array([100, 100]), np.array([10, 10]))
    np.testing.assert_allclose(fin, [20, 20])
    # 0..5: two share (2.5 each done); 5..20: three share, the third's 5 done at 20; the first
    # two have 2.5 left, shared by two: done at 25
    fin, lost = mod.processor_sharing(np.array([0, 0, 5]), np.array([100, 100, 100]),
                                      np.array([10, 10, 5]))
    np.testing.assert_allclose(fin, [25, 25, 20])
    fin, lost = mod.processor_sharing(np.array([0, 0]), np.array([100, 12]), np.array([10, 10]))
    assert lost.tolist() == [False, True] and fin[0] == pytest.approx(16)


# (D-PSGD's rounds with download limits: tests/test_dpsgd_downloads.py, against an independent
# reference)


def test_downloads__a_sweep_over_download_bandwidth_equals_single_runs():
    """`download_mbps` is a SimConfig field, not an HParams one (HParams holds `download_bps`):
    `sweep` runs each value as its own group, compiled on its own, vmapped over seeds only.
    Each group's rows equal the single runs' (the vmap over HParams.download_bps itself:
    test_downloads__vmap_over_download_bps_equals_single_runs)."""
    from divjax.frontends.sweep import sweep

    cfg = download_config(algorithm="swift")
    res = sweep(cfg, {"download_mbps": [0.05, 0.2]}, seeds=2)
    g = res.summary["groups"][0]
    delivered = []
    for mbps in (0.05, 0.2):
        cfg_r = cfg.replace(download_mbps=mbps, **{k: g["resolved"][k] for k in (
            "ring_ticks", "delay_ticks", "train_capacity")})
        hp = default_hparams(cfg.replace(download_mbps=mbps))
        _, m = divjax.jit(make_run(cfg_r, hp=hp))(jax.random.split(jax.random.key(0), 2)[1], hp)
        cid = next(c["config"] for c in res.configs if c["download_mbps"] == mbps)
        rows = [r for r in res.rows if r["config"] == cid and r["seed"] == 1]
        for name in ("msgs_delivered", "msgs_lost", "msgs_sent"):
            np.testing.assert_array_equal(np.array([r[name] for r in rows], np.float32),
                                          np.asarray(m[name]))
        delivered.append(float(m["msgs_delivered"][-1]))
    assert delivered[0] < delivered[1]     # the slower links deliver less within the run


def test_downloads__vmap_over_download_bps_equals_single_runs():
    """One compiled Swift run, vmapped over HParams.download_bps (the download table, Swift's
    appended queues through the FIFO, built per row inside the vmapped init): each row is the
    single run built for and called with those HParams, models and every counter bit for bit."""
    from test_chunking import assert_counters_identical

    cfg = download_config(algorithm="swift", duration_s=1.0)
    slow = congested_hparams(cfg)
    fast = congested_hparams(cfg, download=(4e4,) * 5)
    run = make_run(cfg, hp=slow)
    grid = jax.tree.map(lambda a, b: jnp.stack([a, b]), slow, fast)
    states, _ = divjax.jit(jax.vmap(run, in_axes=(None, 0)))(jax.random.key(1), grid)
    assert int(jnp.max(states.errors)) == 0
    for row, hp in enumerate((slow, fast)):
        _, one, _ = run_checked(cfg, hp)     # built for these HParams (its own sizing)
        got = jax.tree.map(lambda x, r=row: x[r], states)
        np.testing.assert_array_equal(np.asarray(got.params), np.asarray(one.params))
        assert_counters_identical(got, one)
    # the rows differ: the slow links hold models back
    assert int(states.counters.delivered[0].sum()) < int(states.counters.delivered[1].sum())
