"""`SimConfig.iteration_chunk` never changes a result: for every registered algorithm, finishing
nodes handled in chunks of 2 give the models and every counter (`assert_counters_identical`:
sent, dropped, delivered, replaced, lost and their tick rings) of handling them all at once.
With message loss, so that `lost` is counted; under the "latest" inbox rule, so that `replaced`
is where an algorithm replaces.

The synchronous algorithms (D-PSGD, Epidemic Learning) end every node's round at the same tick,
so their mixing spans every chunk: each chunk must still mix with the post-training models of
the whole round (issue 16: each chunk used to mix its nodes with zeros in place of the others).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import divjax
from divjax.algorithms import ALGORITHMS
from divjax.config import ConfigError, default_hparams
from divjax.engine.sim import check_state, make_engine

N = 6


def hparams(cfg):
    """Compute and link stragglers; 4 to 6 nodes finish at the same tick (sync rounds: all 6)."""
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.1, 0.1, 0.1, 0.1, 0.2, 0.15], jnp.float32)[:N],
        upload_bps=jnp.array([4e4, 4e4, 4e4, 4e4, 1e4, 8e3], jnp.float32)[:N],
        latency_s=jnp.array([0.02, 0.0, 0.01, 0.03, 0.02, 0.0], jnp.float32)[:N])


def final_state(cfg, hp):
    """The state after the whole run (one eval interval; no evaluation compiled)."""
    engine = make_engine(cfg, hp=hp)
    assert engine.cfg.num_chunks == 1
    state = divjax.jit(engine.run_ticks)(engine.init(jax.random.key(3), hp), hp)
    check_state(state, engine.cfg)
    return engine, state


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_iteration_chunk__equals_every_finishing_node_at_once(algorithm):
    cfg = tiny_config(algorithm=algorithm, n_nodes=N, n_fragments=3, fanout=2, duration_s=1.0,
                      eval_every_s=1.0, same_init=False, local_steps=1,
                      loss_rate=0.0 if algorithm == "local" else 0.2)
    hp = hparams(cfg)
    try:
        engine, chunked = final_state(cfg.replace(iteration_chunk=2), hp)
    except ConfigError as e:  # an algorithm may refuse chunks, but must say how to fix it
        assert "iteration_chunk=0" in str(e)
        return
    _, whole = final_state(cfg, hp)
    assert engine.cfg.train_capacity > 2  # the finishers of a tick span several chunks
    np.testing.assert_allclose(np.asarray(chunked.params), np.asarray(whole.params),
                               rtol=1e-5, atol=1e-5)
    assert_counters_identical(chunked, whole)
    np.testing.assert_array_equal(np.asarray(chunked.iterations), np.asarray(whole.iterations))
    assert int(chunked.errors) == int(whole.errors) == 0
    assert int(np.min(whole.iterations)) >= 2  # every node ended several iterations (rounds)
    if algorithm != "local":   # the counters compared are not all zeros
        assert int(np.sum(whole.counters.delivered)) > 0
        assert int(np.sum(whole.counters.lost)) > 0
    if algorithm in ("divshare", "swift", "adpsgd"):   # appended/replaced queues, "latest"
        assert int(np.sum(whole.counters.replaced)) > 0


def assert_counters_identical(state, base) -> None:
    """Every field of `state.counters` (totals and tick rings) equals `base`'s exactly."""
    fields = state.counters._fields
    assert {"sent", "dropped", "delivered", "replaced", "lost"} <= set(fields)
    for name in fields:
        np.testing.assert_array_equal(np.asarray(getattr(state.counters, name)),
                                      np.asarray(getattr(base.counters, name)), err_msg=name)
