"""divjax.tasks.conv: the custom-VJP convolution and pooling equal the plain XLA ones, in loops too.

Every reference here is built inline from `lax.conv_general_dilated` / `lax.reduce_window` and
differentiated by `jax.grad`, so a wrong flip, pad or axis order in `divjax.tasks.conv` shows up as a
value mismatch (test_wrong_flip_is_caught shows the check is sharp enough to see one).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import divjax
from divjax.tasks import conv, models

DN = ("NHWC", "HWIO", "NHWC")
# GN-LeNet's three convolutions: (H = W, Ci, Co), batch 8
LAYERS = [(32, 3, 32), (16, 32, 32), (8, 32, 64)]
B = 8


def plain_conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=DN)


def value_and_grads(f, x, kernel, dy):
    """f(x, kernel) and the cotangent dy pulled back to (dx, dkernel)."""
    y, pull = jax.vjp(f, x, kernel)
    return (y,) + pull(dy)


def jit_value_and_grads(f, *args):
    return jax.jit(lambda *a: value_and_grads(f, *a))(*args)


def layer_inputs(H, ci, co, nodes=None, seed=0):
    lead = () if nodes is None else (nodes,)
    rng = np.random.default_rng(seed)                 # numpy: no eager JAX op compiles
    x = rng.standard_normal(lead + (B, H, H, ci), np.float32)
    kernel = rng.standard_normal(lead + (5, 5, ci, co), np.float32) / np.sqrt(25 * ci)
    dy = rng.standard_normal(lead + (B, H, H, co), np.float32)
    return jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(dy)


def assert_close(got, want, rtol=2e-5):
    """Elementwise, relative to the largest entry (sums of 800 products: rounding ~1e-6)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))), 1e-30)
    np.testing.assert_allclose(got / scale, want / scale, rtol=0, atol=rtol)


@pytest.mark.parametrize("H,ci,co", LAYERS)
def test_conv2d_same__value_and_both_gradients_equal_lax_alone_and_under_vmap(H, ci, co):
    """One model, and 3 nodes with their own kernels under jax.vmap (the engine's layout)."""
    one = layer_inputs(H, ci, co)
    nodes = layer_inputs(H, ci, co, nodes=3, seed=1)

    def both(f, one, nodes):
        return (value_and_grads(f, *one),
                jax.vmap(lambda *a: value_and_grads(f, *a))(*nodes))

    # arrays go in as arguments: closed-over constants would be constant-folded by XLA (slow)
    got, want = jax.jit(lambda *a: (both(conv.conv2d_same, *a), both(plain_conv, *a)))(one, nodes)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(g, w)


@pytest.mark.parametrize("H,ci,co", LAYERS)
def test_conv2d_same__inside_a_scan_of_sgd_steps(H, ci, co):
    """4 steps of kernel <- kernel - lr * d/dkernel mean((conv(x_t) - target_t)^2), in a scan."""
    x, kernel, target = layer_inputs(H, ci, co, seed=2)
    xs = x[None] * (1 + 0.1 * jnp.arange(4.0))[:, None, None, None, None]
    targets = target[None] * (1 - 0.1 * jnp.arange(4.0))[:, None, None, None, None]

    def train(f, kernel, xs, targets):
        def step(k, batch):
            xb, tb = batch
            loss, g = jax.value_and_grad(lambda k: jnp.mean((f(xb, k) - tb) ** 2))(k)
            dx = jax.grad(lambda xb: jnp.sum(f(xb, k) * tb))(xb)
            return k - 0.1 * g, (loss, dx)

        return lax.scan(step, kernel, (xs, targets))

    got, want = jax.jit(lambda *a: (train(conv.conv2d_same, *a), train(plain_conv, *a)))(
        kernel, xs, targets)
    (k_got, (l_got, dx_got)), (k_want, (l_want, dx_want)) = got, want
    assert_close(k_got, k_want)
    assert_close(l_got, l_want)
    assert_close(dx_got, dx_want)
    assert not np.allclose(k_got, kernel)                    # the steps did move the kernel


def test_wrong_flip_is_caught():
    """The input-gradient formula without the spatial flip fails the comparison used above."""
    x, kernel, dy = layer_inputs(16, 32, 32)
    _, dx_want, _ = jit_value_and_grads(plain_conv, x, kernel, dy)
    no_flip = plain_conv(dy, jnp.swapaxes(kernel, 2, 3))
    with pytest.raises(AssertionError):
        assert_close(no_flip, dx_want)
    no_swap = plain_conv(dy, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))   # the right formula
    assert_close(no_swap, dx_want)


def test_flax_adapter__routes_same_convs_and_falls_back_otherwise():
    x, kernel, _ = layer_inputs(8, 32, 64)
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape, DN)
    jaxpr = jax.make_jaxpr(lambda x, k: conv.flax_conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=dn))(x, kernel)
    assert "custom_vjp_call" in str(jaxpr)
    strided = conv.flax_conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=dn)
    assert_close(strided, lax.conv_general_dilated(x, kernel, (2, 2), "SAME",
                                                   dimension_numbers=DN))
    jaxpr = jax.make_jaxpr(lambda x, k: conv.flax_conv_general_dilated(
        x, k, (2, 2), "SAME", dimension_numbers=dn))(x, kernel)
    assert "custom_vjp_call" not in str(jaxpr)


def flax_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


@pytest.mark.parametrize("H,C", [(32, 32), (16, 32), (8, 64)])
def test_max_pool_2x2__equals_flax_with_ties_after_relu(H, C):
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((B, H, H, C), np.float32), 0)   # all-zero windows: ties
    x[0, 0, 0, 0] = x[0, 1, 1, 0] = 1.0                              # a tie between positives
    x, dy = jnp.asarray(x), jnp.asarray(rng.standard_normal((B, H // 2, H // 2, C), np.float32))
    y, dx = jit_value_and_grads(lambda x, _: conv.max_pool_2x2(x), x, None, dy)[:2]
    y_want, dx_want = jit_value_and_grads(lambda x, _: flax_pool(x), x, None, dy)[:2]
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(dx, dx_want)
    pull_in_scan = jax.jit(lambda x, dy: lax.scan(
        lambda c, _: (c, jax.vjp(conv.max_pool_2x2, c)[1](dy)[0]), x, None, length=2)[1])
    in_scan = pull_in_scan(x, dy)
    np.testing.assert_array_equal(in_scan[1], dx_want)


# ----------------------------------------------------------------------------- whole GN-LeNet


def reference_gnlenet(params, x):
    """GN-LeNet written with lax.conv_general_dilated, reduce_window and an inline GroupNorm."""
    for i in range(3):
        c, g = params[f"Conv_{i}"], params[f"GroupNorm_{i}"]
        x = lax.conv_general_dilated(x, c["kernel"], (1, 1), "SAME", dimension_numbers=DN)
        x = x + c["bias"]
        n, h, w, ch = x.shape
        xg = x.reshape(n, h * w, 2, ch // 2)
        mean = xg.mean(axis=(1, 3), keepdims=True)
        var = ((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True)
        x = ((xg - mean) / jnp.sqrt(var + 1e-5)).reshape(x.shape) * g["scale"] + g["bias"]
        x = jax.nn.relu(x)
        x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    d = params["Dense_0"]
    return x.reshape(x.shape[0], -1) @ d["kernel"] + d["bias"]


def test_gnlenet__parameter_tree_unchanged_by_fast_grad():
    shapes = {}
    for fast in (True, False):
        init, _ = models.cnn_functions(models.GNLeNet(fast_grad=fast))
        shapes[fast] = jax.eval_shape(init, jax.random.key(0))
    assert jax.tree.structure(shapes[True]) == jax.tree.structure(shapes[False])
    assert jax.tree.leaves(shapes[True]) == jax.tree.leaves(shapes[False])
    assert sum(a.size for a in jax.tree.leaves(shapes[True])) == models.GNLENET_PARAMS
    # the default model runs the 3 convolutions and 3 poolings through divjax.tasks.conv's VJPs
    _, logits = models.cnn_functions()
    jaxpr = str(jax.make_jaxpr(logits)(shapes[True], jnp.zeros((2, 32, 32, 3))))
    assert jaxpr.count("custom_vjp_call") == 6


def test_gnlenet__same_init_logits_and_loss_gradient_as_the_plain_reference():
    init_fast, logits = models.cnn_functions()                 # fast_grad=True, the default
    init, _ = models.cnn_functions(models.GNLeNet(fast_grad=False))
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(-1.0, 1.0, (B, 32, 32, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, B).astype(np.int32))

    def loss(f):
        return lambda p, x, y: jnp.mean(models.cross_entropy(f(p, x), y))

    @jax.jit
    def everything(key, x, y):
        params = init(key)
        return (params, init_fast(key), logits(params, x), reference_gnlenet(params, x),
                jax.value_and_grad(loss(logits))(params, x, y),
                jax.value_and_grad(loss(reference_gnlenet))(params, x, y))

    params, params_fast, out, out_want, got, want = everything(jax.random.key(0), x, y)
    for a, b in zip(jax.tree.leaves(params_fast), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)                     # same init
    assert_close(out, out_want, rtol=1e-5)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for path, g in jax.tree_util.tree_flatten_with_path(got[1])[0]:
        w = want[1]
        for p in path:
            w = w[p.key]
        assert_close(g, w, rtol=1e-4)


# ----------------------------------------------------------------------------- per-node strategy


def tiny_conv_task(n_nodes=3):
    """A one-conv regression task: 8x8x2 images, a 3x3x2x2 kernel; each node its own data."""
    from divjax.tasks.base import Task

    rng = np.random.default_rng(5)
    xs = jnp.asarray(rng.standard_normal((n_nodes, 16, 8, 8, 2), np.float32))

    def init(key):
        return {"kernel": jax.random.normal(key, (3, 3, 2, 2)) * 0.3, "b": jnp.zeros((2,))}

    def loss(p, batch):
        y = conv.conv2d_same(batch, p["kernel"]) + p["b"]
        return jnp.mean((y - batch[..., ::-1]) ** 2)

    def sample_batch(key, node):
        return xs[node, jax.random.randint(key, (4,), 0, 16)]

    return Task("tiny-conv", init, loss, sample_batch, lambda p, n: {}, (), "loss", False, {})


def test_make_train_one__cpu_conv_models_vmap_as_a_loop_with_the_same_result():
    from divjax.config import SimConfig, default_hparams
    from divjax.engine.flat import make_layout
    from divjax.engine.local import loop_over_nodes, make_optimizer, make_train_one

    cfg = SimConfig(n_nodes=3, fanout=2, local_steps=3, batch_size=4)
    task = tiny_conv_task()
    layout = make_layout(task.init(jax.random.key(0)), 2, 0)
    assert loop_over_nodes(layout, "cpu") and not loop_over_nodes(layout, "gpu")
    tx = make_optimizer(cfg, default_hparams(cfg))
    train_one = make_train_one(cfg, task, layout, tx)
    p = jax.jit(jax.vmap(lambda k: layout.flatten(task.init(k))))(
        jax.random.split(jax.random.key(0), 3))
    o = jax.vmap(tx.init)(p)
    keys = jax.random.split(jax.random.key(1), 3)
    node = jnp.arange(3, dtype=jnp.int32)

    def plain(p, o, k, n):                      # the same steps, written without the wrapper
        def step(carry, kk):
            q, s = carry
            g = jax.grad(lambda q: task.loss(layout.unflatten(q), task.sample_batch(kk, n)))(q)
            u, s = tx.update(g, s, q)
            return (q + u, s), None
        return jax.lax.scan(step, (p, o), jax.random.split(k, cfg.local_steps))[0]

    got, jaxpr = jax.jit(jax.vmap(train_one))(p, o, keys, node), \
        str(jax.make_jaxpr(jax.vmap(train_one))(p, o, keys, node))
    want = jax.jit(jax.vmap(plain))(p, o, keys, node)
    assert_close(got[0], want[0], rtol=1e-6)
    assert ("custom_vmap" in jaxpr) == (jax.default_backend() == "cpu")
    # nested: 2 sweeps x 3 nodes, the first argument shared by the sweep (unbatched there)
    nested = divjax.jit(jax.vmap(jax.vmap(train_one), (None, None, 0, None)))(
        p, o, jnp.stack([keys, keys]), node)
    assert_close(nested[0][1], want[0], rtol=1e-6)
