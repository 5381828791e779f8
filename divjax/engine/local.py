"""Local training: `local_steps` optax SGD steps of one node on its own mini-batches.

Per-node strategy. The engine trains the finishing nodes with `jax.vmap(train_one)` (or
`lax.map` over chunks of `cfg.train_chunk`, each chunk vmapped). A vmap over nodes with their own
convolution kernels turns every convolution into a grouped one, which XLA's CPU backend runs
~5x slower than one node after another (GN-LeNet, 60 nodes, 8 steps of batch 8 on 2 cores:
183 samples/s under vmap, 1006 under lax.map; benchmarks/cnn_training.py). So on CPU, for models
with convolution kernels (a 4-D parameter), `make_train_one` returns a function whose *batching
rule* is a `lax.map`: any vmap of it, the engine's or a sweep's, runs the nodes one at a time
(`per_node_loop`). Other backends (GPU, TPU) and models keep the plain vmap.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from divjax.config import HParams, SimConfig
from divjax.engine.flat import FragmentLayout
from divjax.tasks.base import Task


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

    grad = jax.grad(task.loss)

    def train_one(params, opt_state, key, node):
        # The steps run on the model's own pytree: (K, F) -> pytree once before them and back
        # once after, not a gather and a scatter of the whole model in every step (about 2.5% of
        # a GN-LeNet step: benchmarks/cnn_step_profile.py). Same values: the optimiser is
        # elementwise and padding coordinates stay zero.
        def step(carry, k):
            p, o = carry
            g = grad(p, task.sample_batch(k, node))
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        keys = jax.random.split(key, cfg.local_steps)
        carry = (layout.unflatten(params), opt_state_to_tree(layout, opt_state, params))
        (tree, o_tree), _ = jax.lax.scan(step, carry, keys)
        return layout.flatten(tree), opt_state_to_flat(layout, o_tree, opt_state, params)

    if loop_over_nodes(layout):
        return per_node_loop(train_one)
    return train_one


def opt_state_to_tree(layout: FragmentLayout, opt_state, params_kf):
    """The optimiser state of a (K, F) model as that of its pytree: each leaf shaped like the
    model (a momentum buffer) unflattened, the others (step counts) as they are."""
    return jax.tree.map(
        lambda x: layout.unflatten(x) if x.shape == params_kf.shape else x, opt_state)


def opt_state_to_flat(layout: FragmentLayout, opt_state_tree, opt_state, params_kf):
    """Inverse of `opt_state_to_tree(layout, opt_state, params_kf)`: the (K, F) state
    `opt_state` (its leaves) says which subtrees of `opt_state_tree` are models."""
    return jax.tree.map(
        lambda x, t: layout.flatten(t) if x.shape == params_kf.shape else t, opt_state,
        opt_state_tree)


def has_convolutions(layout: FragmentLayout) -> bool:
    """A model "has convolutions" when one of its parameters is 4-D (an HWIO kernel)."""
    shapes = jax.eval_shape(layout.unflatten,
                            jax.ShapeDtypeStruct((layout.K, layout.F), jnp.float32))
    return any(len(s.shape) == 4 for s in jax.tree.leaves(shapes))


def loop_over_nodes(layout: FragmentLayout, backend: str | None = None) -> bool:
    """True when vmapped local training should run node by node: a CPU and a conv model."""
    backend = backend if backend is not None else jax.default_backend()
    return backend == "cpu" and has_convolutions(layout)


def per_node_loop(fn: Callable) -> Callable:
    """`fn` whose vmap is a `lax.map` over the batched axis (same values, one node at a time).

    Only the batched arguments are sliced; unbatched ones (a sweep's shared hyperparameters, the
    task's data) are passed whole, never broadcast. Nested vmaps (nodes inside a sweep over
    seeds) apply the rule again, so each level becomes a loop. `fn`'s closure (traced
    hyperparameters, for instance) is made explicit first (`jax.make_jaxpr`): a
    `custom_vmap` function must not close over tracers. The result cannot be differentiated
    (`jax.custom_batching.custom_vmap` has no JVP rule); the engine never differentiates
    through local training.
    """

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        flat, _ = jax.tree.flatten(args)
        out_tree = jax.tree.structure(out_shape)
        n_consts = len(closed.consts)

        @jax.custom_batching.custom_vmap
        def looped(*leaves):            # leaves = closure constants, then fn's flat arguments
            return jax.core.eval_jaxpr(closed.jaxpr, leaves[:n_consts], *leaves[n_consts:])

        @looped.def_vmap
        def _rule(axis_size, in_batched, *leaves):
            where = [i for i, b in enumerate(in_batched) if b]

            def one(sliced):
                full = list(leaves)
                for i, x in zip(where, sliced):
                    full[i] = x
                return looped(*full)

            out = jax.lax.map(one, [leaves[i] for i in where])
            return out, [True] * len(out)

        return jax.tree.unflatten(out_tree, looped(*closed.consts, *flat))

    return wrapped


def node_batch_key(k_batch: jax.Array, node: jax.Array) -> jax.Array:
    """The mini-batch key of `node` at a tick: independent of which nodes train alongside it."""
    return jax.random.fold_in(k_batch, node)


def rows_finite(x: jax.Array, valid: jax.Array) -> jax.Array:
    """(C,) bool: row c of x (C, ...) holds only finite values (padding rows: True)."""
    axes = tuple(range(1, x.ndim))
    return jnp.where(valid, jnp.all(jnp.isfinite(x), axis=axes), True)
