"""The node axis sharded over 4 host CPU devices (conftest sets the XLA flag) gives the same
results as one device."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from jax.sharding import PartitionSpec

import divjax
from divjax.config import default_hparams
from divjax.engine.sharding import make_sharded_advance, make_sharded_run, node_mesh
from divjax.engine.sim import make_run


def straggler_hparams8(cfg):
    hp = default_hparams(cfg)
    return hp.replace(
        compute_s=jnp.array([0.1, 0.1, 0.13, 0.17, 0.1, 0.1, 0.12, 0.1], jnp.float32),
        upload_bps=jnp.array([1e4, 1e4, 1e4, 2e3, 5e2, 1e4, 1e4, 3e3], jnp.float32),
        latency_s=jnp.array([0.02, 0.0, 0.01, 0.03, 0.02, 0.0, 0.01, 0.0], jnp.float32))


@pytest.fixture(scope="module")
def setup():
    assert len(jax.devices()) == 4, "conftest must set --xla_force_host_platform_device_count=4"
    cfg = tiny_config(n_nodes=8, n_fragments=3, fanout=2)
    hp = straggler_hparams8(cfg)
    run = make_run(cfg, hp=hp)
    return cfg, hp, run, divjax.jit(run)  # one compiled one-device run, shared by the tests


def test_sharding__same_key_same_state_and_metrics(setup):
    cfg, hp, _, single = setup
    s1, m1 = single(jax.random.key(5), hp)
    run = make_sharded_run(cfg, hp=hp)
    s2, m2 = divjax.jit(run)(jax.random.key(5), hp)
    assert s2.params.sharding.spec == PartitionSpec("nodes")
    assert len(s2.params.sharding.device_set) == 4
    assert s2.inbox.total.sharding.spec == PartitionSpec(None, "nodes")
    assert int(s1.counters.dropped.sum()) > 0 and int(s1.counters.delivered.sum()) > 0
    chex.assert_trees_all_equal(jax.device_get(s1.params), jax.device_get(s2.params))
    chex.assert_trees_all_equal(jax.device_get(s1.counters), jax.device_get(s2.counters))
    chex.assert_trees_all_equal(jax.device_get(m1), jax.device_get(m2))


def test_sharding__seed_sweep_row_equals_single_sharded_run(setup):
    cfg, hp, _, single = setup
    run = make_sharded_run(cfg, hp=hp)
    keys = jax.random.split(jax.random.key(0), 2)
    _, m = divjax.jit(jax.vmap(run, (0, None)))(keys, hp)
    _, m1 = single(keys[1], hp)
    chex.assert_trees_all_close(jax.device_get(m["loss_mean"][1]), jax.device_get(m1["loss_mean"]),
                                rtol=1e-6)


def test_sharding__chunked_driver_with_donated_sharded_state(setup):
    cfg, hp, run, single = setup
    s1, _ = single(jax.random.key(2), hp)  # == simulate(...), tests/test_engine.py
    advance = make_sharded_advance(run.engine, hp)
    state = divjax.jit(run.engine.init)(jax.random.key(2), hp)
    for _ in range(cfg.num_chunks):
        state, _ = advance(state, hp)
    assert state.params.sharding.spec == PartitionSpec("nodes")
    np.testing.assert_array_equal(jax.device_get(s1.params), jax.device_get(state.params))


def test_sharding__node_count_not_divisible_is_replicated_and_correct():
    cfg = tiny_config()  # n = 5 on 4 devices
    hp = default_hparams(cfg)
    run = make_sharded_run(cfg, hp=hp, mesh=node_mesh())
    s2, m2 = divjax.jit(run)(jax.random.key(1), hp)
    s1, m1 = divjax.jit(make_run(cfg, hp=hp))(jax.random.key(1), hp)
    np.testing.assert_array_equal(jax.device_get(s1.params), jax.device_get(s2.params))
    assert s2.params.sharding.spec == PartitionSpec()
