"""Flax models of the real-data tasks, and the sparse local update of matrix factorisation.

This is the only module of divjax that knows Flax. Everything it exports is a pure function or a
Flax module whose parameters are a plain pytree (the `"params"` collection; no batch statistics,
no mutable collections), so the engine can ravel them into its `(K, F)` fragment array.

- `GNLeNet`: the CIFAR-10 model of the DivShare authors (decentralizepy `LeNet`): three 5x5
  convolutions (32, 32, 64 channels, "same" padding), each followed by GroupNorm (2 groups), ReLU
  and 2x2 max-pooling, then one dense layer to 10 classes. 89,834 parameters
  (`GNLENET_PARAMS`; paper.md: "about 89.8k"). Initialised as PyTorch initialises these layers
  (weights and biases uniform in +-1/sqrt(fan_in); GroupNorm scale 1, bias 0), eps = 1e-5.
  Its convolutions and max-pooling carry `divjax.tasks.conv`'s custom backward passes (fast inside
  the engine's loops on CPU; same parameters, values and gradients; `fast_grad=False` for the
  plain Flax layers).
- `MatrixFactorization`: 20 factors per user and per item, no biases, embeddings uniform in
  +-0.05, prediction = <user row, item row>. 610 users and 9,724 items give 206,680 parameters
  (`mf_param_count`), the paper's figure; the authors' code has no +1 rows.
- `make_mf_sparse_train`: local SGD steps of matrix factorisation that touch only the rows in
  the mini-batch (2 * B * factors coordinates per step instead of the whole model), equal to the
  dense update to float tolerance (tests/test_models.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from divjax.tasks import conv
from divjax.config import ConfigError

NUM_CLASSES = 10
GNLENET_PARAMS = 89_834   # 2,432 + 64 + 25,632 + 64 + 51,264 + 128 + 10,250
MF_FACTORS = 20
MF_INIT_SCALE = 0.05


def _torch_uniform(fan_in: int) -> Callable:
    """PyTorch's default init of conv/linear weights and biases: U(-1/sqrt(fan_in), +)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class GNLeNet(nn.Module):
    """GN-LeNet for 32x32x3 images: (B, 32, 32, 3) float32 -> (B, 10) logits.

    fast_grad: the convolutions and max-pooling use `divjax.tasks.conv`'s custom backward passes
    (forward convolutions and a mask instead of XLA's convolution gradients and
    select-and-scatter, which are 10-50x slower inside the engine's `lax.scan` on CPU). Same
    parameters, same values and gradients to float rounding (tests/test_conv.py); False gives
    the plain Flax layers (a reference, and the benchmark's baseline).
    """

    num_classes: int = NUM_CLASSES
    channels: tuple = (32, 32, 64)
    fast_grad: bool = True

    @nn.compact
    def __call__(self, x):                                  # (B, H, W, C)
        conv_fn = conv.flax_conv_general_dilated if self.fast_grad else None
        for ch in self.channels:
            fan_in = x.shape[-1] * 5 * 5
            x = nn.Conv(ch, (5, 5), padding="SAME", kernel_init=_torch_uniform(fan_in),
                        bias_init=_torch_uniform(fan_in), conv_general_dilated=conv_fn)(x)
            x = nn.GroupNorm(num_groups=2, epsilon=1e-5)(x)
            x = nn.relu(x)
            # 32 -> 16 -> 8 -> 4
            x = conv.max_pool_2x2(x) if self.fast_grad else nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)                       # (B, 4 * 4 * 64)
        fan_in = x.shape[-1]
        return nn.Dense(self.num_classes, kernel_init=_torch_uniform(fan_in),
                        bias_init=_torch_uniform(fan_in))(x)


def _uniform_pm(scale: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def mf_predict_rows(user_rows: jax.Array, item_rows: jax.Array) -> jax.Array:
    """(B, f), (B, f) -> (B,) predicted ratings."""
    return jnp.sum(user_rows * item_rows, axis=-1)


def mf_loss_rows(user_rows: jax.Array, item_rows: jax.Array, rating: jax.Array) -> jax.Array:
    """Mean squared error of one mini-batch from its gathered rows: () float32."""
    return jnp.mean((mf_predict_rows(user_rows, item_rows) - rating) ** 2)


class MatrixFactorization(nn.Module):
    """Rating of (user, item) = <user factors, item factors>; ids are dense, 0-based."""

    n_users: int
    n_items: int
    n_factors: int = MF_FACTORS

    def setup(self):
        self.user = nn.Embed(self.n_users, self.n_factors,
                             embedding_init=_uniform_pm(MF_INIT_SCALE))
        self.item = nn.Embed(self.n_items, self.n_factors,
                             embedding_init=_uniform_pm(MF_INIT_SCALE))

    def __call__(self, user, item):                         # (B,) int32, (B,) int32 -> (B,)
        return mf_predict_rows(self.user(user), self.item(item))


def mf_param_count(n_users: int, n_items: int, n_factors: int = MF_FACTORS) -> int:
    return (n_users + n_items) * n_factors


# ----------------------------------------------------------------------------- pure wrappers


def cnn_functions(model: nn.Module | None = None):
    """(init(key) -> params, logits(params, images (B,32,32,3) float32) -> (B, 10))."""
    model = model if model is not None else GNLeNet()

    def init(key):
        return model.init(key, jnp.zeros((1, 32, 32, 3), jnp.float32))["params"]

    def logits(params, images):
        return model.apply({"params": params}, images)

    return init, logits


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """(B, C) float, (B,) int -> (B,) per-example cross-entropy."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def mf_functions(n_users: int, n_items: int, n_factors: int = MF_FACTORS):
    """(init(key) -> params, predict(params, user (B,), item (B,)) -> (B,))."""
    model = MatrixFactorization(n_users, n_items, n_factors)

    def init(key):
        one = jnp.zeros((1,), jnp.int32)
        return model.init(key, one, one)["params"]

    def predict(params, user, item):
        return model.apply({"params": params}, user, item)

    return init, predict


def mf_table_offsets(template: Any) -> dict:
    """Raveled offset of the first coordinate of the "user" and "item" tables of MF params.

    `ravel_pytree` concatenates the leaves in `tree_flatten` order; the tables are row-major, so
    row r, factor j of a table starting at `o` is coordinate o + r * n_factors + j.
    """
    offsets, offset = {}, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        names = [getattr(p, "key", getattr(p, "name", None)) for p in path]
        for table in ("user", "item"):
            if table in names:
                offsets[table] = offset
        offset += int(np.size(leaf))
    if set(offsets) != {"user", "item"}:
        raise ValueError(f"not a MatrixFactorization parameter tree: {offsets}")
    return offsets


def mf_row_positions(layout, template: Any, n_users: int, n_items: int,
                     n_factors: int = MF_FACTORS) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, f), (n_items, f) int32: where each factor of each row sits in the flat K*F."""
    flat, _ = ravel_pytree(template)
    if int(flat.size) != layout.D:
        raise ValueError(f"layout has D={layout.D} but the model has {int(flat.size)} params")
    off = mf_table_offsets(template)
    pos = np.asarray(layout.position)
    user = pos[off["user"] + np.arange(n_users * n_factors)].reshape(n_users, n_factors)
    item = pos[off["item"] + np.arange(n_items * n_factors)].reshape(n_items, n_factors)
    return user.astype(np.int32), item.astype(np.int32)


def make_mf_sparse_train(cfg, layout, tx, sample_batch: Callable, user_pos: np.ndarray,
                         item_pos: np.ndarray) -> Callable:
    """train_one(params (K, F), opt_state, key, node) -> (params, opt_state), sparse rows.

    The optimizer must be stateless and linear in (gradient, params), which is what
    `divjax.engine.local.make_optimizer` builds without a momentum buffer: update = -lr (g + wd p).
    Its two coefficients are read off `tx` itself (a = update of g=1, p=0 = -lr;
    b = update of g=0, p=1 = -lr wd), so traced or vmapped learning rates work. A step is
        p <- (1 + b) p + a G,   G = the mini-batch gradient (non-zero only on touched rows).
    Weight decay shrinks every coordinate, touched or not; to keep the step sparse the model is
    kept as p = s * q with a scalar s: s <- (1 + b) s, and q changes only on the touched rows
    (q[c] += a G[c] / s). p is materialised once, at the end of the iteration. With wd = 0,
    s stays exactly 1. Keys and batches are the dense path's (`local.make_train_one`): same
    `split(key, local_steps)`, same `sample_batch`, so the two agree to float rounding.
    The steps themselves run in `mf_sgd_steps`, whose batching rule lets models that draw the
    same mini-batches (a learning-rate sweep under one seed) share every row access.
    """
    if jax.tree.leaves(tx.init(jnp.zeros((1,), jnp.float32))):
        raise ConfigError("the sparse matrix-factorisation update needs a stateless optimizer "
                          "(plain SGD, optional weight decay); use momentum_buffer=False or "
                          "the dense path")
    K, F = layout.K, layout.F
    upos, ipos = jnp.asarray(user_pos), jnp.asarray(item_pos)

    def train_one(params, opt_state, key, node):
        one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
        a = tx.update(one, opt_state, zero)[0]              # -lr
        decay = 1.0 + tx.update(zero, opt_state, one)[0]     # 1 - lr * wd
        keys = jax.random.split(key, cfg.local_steps)
        batch = jax.vmap(sample_batch, (0, None))(keys, node)        # leaves (T, B)
        pu, pi = upos[batch["user"]], ipos[batch["item"]]          # (T, B, f) flat positions
        q, s = mf_sgd_steps(params.reshape(1, K * F, 1), one.reshape(1, 1), a.reshape(1, 1),
                            decay.reshape(1, 1), pu[None], pi[None], batch["rating"][None])
        return (q[0, :, 0] * s[0, 0]).reshape(K, F), opt_state

    return train_one


_grad_rows = jax.grad(mf_loss_rows, argnums=(0, 1))
# W models at once, W the minor axis: rows (B, f, W), one rating vector for all of them
_grad_rows_w = jax.vmap(_grad_rows, in_axes=(-1, -1, None), out_axes=-1)


def _mf_sgd_steps_impl(q, s, a, decay, pu, pi, rating):
    """T sparse SGD steps for N groups of W models; the W models of a group share their batches.

    q (N, D, W) flat models (model w of group g is q[g, :, w]); s, a, decay (N, W) (scale,
    -lr, 1 - lr wd); pu, pi (N, T, B, f) positions of the touched coordinates; rating (N, T, B).
    Returns (q, s). A row access moves W contiguous floats, so W models cost about one. With
    W = 1 the loop carries (D,) models: a (D, 1) carry made XLA copy every model into the loop
    for a layout change (benchmarks/profile_ops.py).
    """

    one = q.shape[-1] == 1       # one model per group: no W axis in the loop's carry
    grad = _grad_rows if one else _grad_rows_w

    def one_group(q, s, a, decay, pu, pi, rating):
        def step(carry, batch):
            q, s = carry                                        # (D, W), (W,); W = 1: (D,), ()
            pu_t, pi_t, r_t = batch
            gu, gi = grad(q[pu_t] * s, q[pi_t] * s, r_t)        # (B, f, W); W = 1: (B, f)
            s = s * decay
            q = q.at[pu_t].add(a * gu / s).at[pi_t].add(a * gi / s)
            return (q, s), None

        return jax.lax.scan(step, (q, s), (pu, pi, rating))[0]

    if one:
        q1, s1 = jax.vmap(one_group)(q[..., 0], s[:, 0], a[:, 0], decay[:, 0], pu, pi, rating)
        return q1[..., None], s1[:, None]
    return jax.vmap(one_group)(q, s, a, decay, pu, pi, rating)


mf_sgd_steps = jax.custom_batching.custom_vmap(_mf_sgd_steps_impl)


@mf_sgd_steps.def_vmap
def _mf_sgd_steps_vmap(axis_size, in_batched, q, s, a, decay, pu, pi, rating):
    """vmap of `mf_sgd_steps` over P: P more groups, or P times wider groups.

    If the batches (pu, pi, rating) are not batched, the P copies draw the same mini-batches (a
    sweep of learning rates under one seed): they join the W axis, so each row access serves
    all of them. Otherwise they become P * N separate groups (nodes, seeds). Either way the
    result is `mf_sgd_steps` once, so nested vmaps (points of nodes) apply this rule again.
    """
    P = axis_size
    models = (q, s, a, decay)

    def lead(x, batched):                       # a leading P axis, broadcast if not batched
        return x if batched else jnp.broadcast_to(x, (P,) + x.shape)

    models = [lead(x, b) for x, b in zip(models, in_batched[:4])]
    if not any(in_batched[4:]):
        def to_w(x):                            # (P, N, ..., W) -> (N, ..., P * W)
            x = jnp.moveaxis(x, 0, -2)
            return x.reshape(x.shape[:-2] + (P * x.shape[-1],))

        q, s = mf_sgd_steps(*(to_w(x) for x in models), pu, pi, rating)

        def from_w(x):                          # (N, ..., P * W) -> (P, N, ..., W)
            return jnp.moveaxis(x.reshape(x.shape[:-1] + (P, x.shape[-1] // P)), -2, 0)

        return (from_w(q), from_w(s)), (True, True)
    batches = [lead(x, b) for x, b in zip((pu, pi, rating), in_batched[4:])]

    def to_n(x):                                # (P, N, ...) -> (P * N, ...)
        return x.reshape((P * x.shape[1],) + x.shape[2:])

    q, s = mf_sgd_steps(*(to_n(x) for x in models + batches))
    return (q.reshape((P, -1) + q.shape[1:]), s.reshape((P, -1) + s.shape[1:])), (True, True)
