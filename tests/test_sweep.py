"""Sweeps: grid split, one compiled vmapped program per shape group, rows equal single runs."""

import csv
import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

import divjax
from divjax.frontends import cli
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.engine.sim import make_run
from divjax.frontends.sweep import ci95, hparams_for, split_grid, stack_hparams, sweep
from divjax.frontends.sweep_cli import parse_grid_item


def test_sweep__grid_splits_into_vmapped_and_looped_fields():
    static, dynamic = split_grid({"lr": [0.1], "n_nodes": [4, 8], "straggler_share": [0.5],
                                  "latency_ms": [1, 5], "fanout": [1]})
    assert set(static) == {"n_nodes", "fanout"}
    assert set(dynamic) == {"lr", "straggler_share", "latency_ms"}
    with pytest.raises(ConfigError, match="not_a_field"):
        split_grid({"not_a_field": [1]})


def test_sweep__per_node_hparams_are_built_from_config_values():
    cfg = tiny_config(n_nodes=8, fast_mbps=10.0)
    hp = hparams_for(cfg, {"straggler_share": 0.25, "straggler_mbps": 1.0, "latency_ms": 20})
    np.testing.assert_allclose(np.asarray(hp.upload_bps) * 8 / 1e6, [10] * 6 + [1, 1])
    np.testing.assert_allclose(np.asarray(hp.latency_s), 0.02)
    stacked, axes = stack_hparams([hp, hp.replace(lr=hp.lr * 2)])
    assert axes.lr == 0 and axes.upload_bps is None and stacked.lr.shape == (2,)


def test_sweep__ci95_matches_student_t():
    m, hw = ci95([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and hw == pytest.approx(3.182 * np.std([1, 2, 3, 4], ddof=1) / 2)


def test_sweep__rows_equal_single_runs_and_outputs_are_written(tmp_path):
    cfg = tiny_config(n_stragglers=2, straggler_mbps=(0.005,), fast_mbps=0.05)
    grid = {"n_nodes": [4, 5], "lr": [0.01, 0.1], "latency_ms": [1.0, 30.0]}
    res = sweep(cfg, grid, seeds=2, chunk_size=3, out=tmp_path)   # 4 configs x 2 seeds per group
    C = cfg.num_chunks
    assert len(res.configs) == 8 and len(res.rows) == 8 * 2 * C
    assert [g["chunks"] for g in res.summary["groups"]] == [4, 4]   # 3 + 1(pad) configs x 2 seeds
    assert res.metrics[1]["loss_mean"].shape == (4, 2, C)
    # config (n=5, lr=0.1, latency 30 ms), seed 1 == the single run with that key and those values
    g = res.summary["groups"][1]
    cfg_r = cfg.replace(n_nodes=5, **{k: g["resolved"][k]
                                      for k in ("ring_ticks", "delay_ticks", "train_capacity")})
    hp = default_hparams(cfg.replace(n_nodes=5, lr=0.1, latency_ms=30.0))
    key = jax.random.split(jax.random.key(0), 2)[1]
    _, m = divjax.jit(make_run(cfg_r, hp=hp))(key, hp)
    cid = next(c["config"] for c in res.configs
               if c["n_nodes"] == 5 and c["lr"] == 0.1 and c["latency_ms"] == 30.0)
    row = [r for r in res.rows if r["config"] == cid and r["seed"] == 1]
    # counters are exact; floats agree to rounding (a vmapped program may pick other kernels)
    np.testing.assert_array_equal(np.array([r["msgs_delivered"] for r in row], np.float32),
                                  np.asarray(m["msgs_delivered"]))
    for name in ("loss_mean", "consensus"):
        np.testing.assert_allclose(np.array([r[name] for r in row], np.float32),
                                   np.asarray(m[name]), rtol=1e-5, atol=1e-7)
    # the files
    for f in ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "summary.md",
              "plot.png"):
        assert (tmp_path / f).stat().st_size > 0
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == len(res.rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    finals = [e["loss_mean"] for e in summary["final"]]
    assert summary["best"]["loss_mean"] == min(finals)   # loss: lower is better
    assert "best config" in (tmp_path / "summary.md").read_text()


def test_sweep__cli(tmp_path, capsys):
    assert parse_grid_item("lr=log:0.01:1:3") == ("lr", [0.01, 0.1, 1.0])
    assert parse_grid_item("n-nodes=4,8") == ("n_nodes", [4, 8])
    out = tmp_path / "sw"
    rc = cli.main(["sweep", "--preset", "synthetic-small", "--grid", "straggler_share=0,0.4", "--seeds", "2", "--n-nodes", "5",
                   "--fanout", "2", "--duration-s", "1", "--eval-every-s", "0.5", "--out",
                   str(out)])
    assert rc == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 and {r["straggler_share"] for r in rows} == {0.0, 0.4}
    assert "best config" in capsys.readouterr().out


def test_sweep__auto_chunk_caps_cpu_working_set_at_one_seed_of_configs():
    from divjax.engine.sim import make_engine
    from divjax.frontends.sweep import auto_chunk, grid_blocks

    engine = make_engine(tiny_config())
    assert auto_chunk(engine, 16, configs=4, platform="gpu") == 16          # memory is plenty
    assert auto_chunk(engine, 16, configs=4, platform="cpu") == 16          # tiny states
    assert auto_chunk(engine, 16, configs=4, platform="cpu", cpu_budget_bytes=1) == 4
    assert auto_chunk(engine, 16, configs=1, platform="cpu", cpu_budget_bytes=1) == 1
    assert grid_blocks(4, 4, 4) == (4, 1) and grid_blocks(4, 4, 16) == (4, 4)
    assert grid_blocks(4, 4, 3) == (3, 1) and grid_blocks(4, 6, 12, multiple=2) == (4, 2)


def test_sweep__movielens_rows_equal_single_runs(tmp_path):
    """The MF path under the sweep's nested vmap (a seed's learning rates share row accesses,
    seeds are separate groups, ring rows indexed by the batch) gives the single runs' metrics."""
    from test_models import write_small_ratings

    cfg = SimConfig(task="movielens", data_dir=write_small_ratings(tmp_path), n_nodes=4,
                    n_fragments=2, fanout=2, local_steps=8, batch_size=8, compute_s=0.1,
                    tick_s=0.1, duration_s=1.0, eval_every_s=0.5, fast_mbps=60.0,
                    n_stragglers=1, straggler_mbps=(0.5,))
    res = sweep(cfg, {"lr": [0.1, 0.3]}, seeds=2, chunk_size=4)
    g = res.summary["groups"][0]
    assert (g["chunk_configs"], g["chunk_seeds"]) == (2, 2)
    cfg_r = cfg.replace(**{k: g["resolved"][k] for k in ("ring_ticks", "delay_ticks",
                                                         "train_capacity")})
    keys = jax.random.split(jax.random.key(0), 2)
    for lr, seed in ((0.3, 1), (0.1, 0)):
        hp = default_hparams(cfg.replace(lr=lr))
        _, m = divjax.jit(make_run(cfg_r, hp=hp))(keys[seed], hp)
        cid = next(c["config"] for c in res.configs if c["lr"] == lr)
        row = [r for r in res.rows if r["config"] == cid and r["seed"] == seed]
        np.testing.assert_array_equal(np.array([r["msgs_delivered"] for r in row], np.float32),
                                      np.asarray(m["msgs_delivered"]))
        assert np.asarray(m["rmse_mean"])[-1] < np.asarray(m["rmse_mean"])[0]   # it learns
        for name in ("rmse_mean", "rmse_avgmodel", "consensus"):
            np.testing.assert_allclose(np.array([r[name] for r in row], np.float32),
                                       np.asarray(m[name]), rtol=1e-5, atol=1e-6)


def test_sweep__one_point_per_call_runs_unbatched_and_equals_the_single_run():
    """chunk_size=1 runs each point without vmap (the engine's conds stay branches): its rows
    are the single run's metrics, bit for bit."""
    from divjax.frontends.sweep import make_batched

    cfg = tiny_config(algorithm="adpsgd", fanout=4, duration_s=1.0)
    res = sweep(cfg, {"lr": [0.1]}, seeds=2, chunk_size=1)
    g = res.summary["groups"][0]
    cfg_r = cfg.replace(**{k: g["resolved"][k] for k in ("ring_ticks", "delay_ticks",
                                                          "train_capacity")})
    run = make_run(cfg_r, hp=default_hparams(cfg))
    hp = default_hparams(cfg.replace(lr=0.1))
    key = jax.random.split(jax.random.key(0), 2)[1]
    _, m = divjax.jit(run)(key, hp)
    row = [r for r in res.rows if r["seed"] == 1]
    for name in ("loss_mean", "consensus", "msgs_delivered"):
        np.testing.assert_array_equal(np.array([r[name] for r in row], np.float32),
                                      np.asarray(m[name]))
    # unbatched, the engine keeps its conds (vmap turns those with a batched predicate into
    # selects that run both branches)
    hp_axes = jax.tree.map(lambda _: None, hp)
    conds = [str(jax.make_jaxpr(make_batched(run, hp_axes, 1, seeds))(key[None], hp)).count(
        "cond[") for seeds in (1, None)]
    assert conds[0] > conds[1]
