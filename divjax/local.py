"""Local training: `local_steps` optax SGD steps of one node on its own mini-batches."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from divjax.config import HParams, SimConfig
from divjax.flat import FragmentLayout
from divjax.tasks import Task


def make_optimizer(cfg: SimConfig, hp: HParams) -> optax.GradientTransformation:
    """SGD with optional weight decay and momentum; hp values may be traced (vmapped sweeps)."""
    momentum = hp.momentum if cfg.momentum_buffer else None
    return optax.chain(optax.add_decayed_weights(hp.weight_decay),
                       optax.sgd(hp.lr, momentum=momentum))


def make_train_one(cfg: SimConfig, task: Task, layout: FragmentLayout,
                   tx: optax.GradientTransformation) -> Callable:
    """train_one(params (K, F), opt_state, key, node) -> (params, opt_state) of one node."""
    if task.make_local_train is not None:
        return task.make_local_train(cfg, layout, tx)

    def loss_flat(p, batch):
        return task.loss(layout.unflatten(p), batch)

    grad = jax.grad(loss_flat)

    def train_one(params, opt_state, key, node):
        def step(carry, k):
            p, o = carry
            g = grad(p, task.sample_batch(k, node))
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        keys = jax.random.split(key, cfg.local_steps)
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), keys)
        return params, opt_state

    return train_one


def node_batch_key(k_batch: jax.Array, node: jax.Array) -> jax.Array:
    """The mini-batch key of `node` at a tick: independent of which nodes train alongside it."""
    return jax.random.fold_in(k_batch, node)


def all_finite(x: jax.Array, valid: jax.Array) -> jax.Array:
    axes = tuple(range(1, x.ndim))
    return jnp.all(jnp.where(valid, jnp.all(jnp.isfinite(x), axis=axes), True))
