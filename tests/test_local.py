"""Local training (`divjax.engine.local.make_train_one`) against a per-step reference on the flat model.

The engine runs a node's local steps on the model's pytree, converting from and to the (K, F)
fragment array once per iteration. The reference here applies SGD step by step to the (K, F)
array itself, written out by hand (weight decay, momentum buffer, learning rate), so any
coordinate or momentum entry put back in the wrong place, any step's state dropped, or any
padding coordinate touched shows up.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from conftest import tiny_config

from divjax.config import default_hparams
from divjax.engine.local import make_optimizer, make_train_one
from divjax.tasks.registry import make_task
from divjax.engine.sizing import model_layout

LR, MOMENTUM, DECAY = 0.05, 0.9, 0.01


def reference_train(cfg, task, layout, params, trace, key, node):
    """Plain SGD with weight decay and momentum, one step at a time on the (K, F) array."""
    p, t = np.asarray(params, np.float64), np.asarray(trace, np.float64)
    for k in jax.random.split(key, cfg.local_steps):
        batch = task.sample_batch(k, node)
        g = layout.flatten(jax.grad(task.loss)(layout.unflatten(jnp.asarray(p, jnp.float32)),
                                               batch))
        d = np.asarray(g, np.float64) + DECAY * p
        t = MOMENTUM * t + d
        p = p - LR * t
    return p, t


def setup(**changes):
    cfg = tiny_config(n_fragments=5, local_steps=4, momentum_buffer=True, momentum=MOMENTUM,
                      weight_decay=DECAY, lr=LR, reset_optimizer=False, **changes)
    task = make_task(cfg)
    layout = model_layout(cfg, task)
    assert not layout.real_mask().all()                     # the layout has padding
    tx = make_optimizer(cfg, default_hparams(cfg))
    return cfg, task, layout, tx


def test_train_one__equals_per_step_sgd_on_the_flat_model_with_momentum():
    cfg, task, layout, tx = setup()
    params = layout.flatten(task.init(jax.random.key(0)))
    opt = tx.init(params)
    (trace,) = [x for x in jax.tree.leaves(opt) if x.shape == params.shape]
    trace = trace + 0.1 * layout.flatten(task.init(jax.random.key(9)))   # a buffer in flight
    opt = jax.tree.map(lambda x: trace if x.shape == params.shape else x, opt)
    train = jax.jit(make_train_one(cfg, task, layout, tx))
    for node in (0, 3):
        key = jax.random.key(node + 1)
        got, got_opt = train(params, opt, key, jnp.int32(node))
        want, want_trace = reference_train(cfg, task, layout, params, trace, key, node)
        (got_trace,) = [x for x in jax.tree.leaves(got_opt) if x.shape == params.shape]
        assert jax.tree.structure(got_opt) == jax.tree.structure(opt)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_trace, want_trace, rtol=1e-5, atol=1e-6)
        pad = ~layout.real_mask()
        assert np.all(np.asarray(got)[pad] == 0) and np.all(np.asarray(got_trace)[pad] == 0)
        assert float(jnp.max(jnp.abs(got - params))) > 1e-3                # it did learn


def test_train_one__vmap_over_nodes_equals_one_node_at_a_time():
    cfg, task, layout, tx = setup()
    inits = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(lambda k: layout.flatten(task.init(k)))(inits)
    opt = jax.vmap(tx.init)(params)
    keys = jax.random.split(jax.random.key(5), 3)
    nodes = jnp.array([0, 2, 4], jnp.int32)
    train = make_train_one(cfg, task, layout, tx)
    got = jax.jit(jax.vmap(train))(params, opt, keys, nodes)
    for i in range(3):
        one = jax.jit(train)(params[i], jax.tree.map(lambda x: x[i], opt), keys[i], nodes[i])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], got), one, rtol=1e-6,
                                    atol=1e-7)
