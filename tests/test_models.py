"""Models: parameter counts, and the sparse matrix-factorisation update equals the dense one."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divjax
from divjax import data
from divjax.tasks import models
from divjax.config import SimConfig, default_hparams
from divjax.engine.local import make_optimizer, make_train_one
from divjax.engine.sizing import model_layout


def n_params(init):
    shapes = jax.eval_shape(init, jax.random.key(0))
    return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))


def test_gnlenet__parameter_count_and_shapes():
    init, logits = models.cnn_functions()
    assert n_params(init) == models.GNLENET_PARAMS == 89_834          # paper.md: ~89.8k
    params = jax.eval_shape(init, jax.random.key(0))
    out = jax.eval_shape(logits, params, jax.ShapeDtypeStruct((7, 32, 32, 3), jnp.float32))
    assert out.shape == (7, 10)
    assert not any("batch_stats" in str(p) for p, _ in
                   jax.tree_util.tree_flatten_with_path(params)[0])  # GroupNorm: no state


def test_mf__parameter_count_and_init_range():
    init, predict = models.mf_functions(610, 9724)
    assert n_params(init) == models.mf_param_count(610, 9724) == 206_680   # paper's count
    p = init(jax.random.key(0))
    leaves = jax.tree.leaves(p)
    assert all(float(jnp.max(jnp.abs(x))) <= 0.05 for x in leaves)
    assert float(jnp.std(leaves[0])) > 0.02                               # uniform, not zeros
    pred = predict(p, jnp.array([0, 609]), jnp.array([9723, 0]))
    want = jnp.array([jnp.dot(p["user"]["embedding"][0], p["item"]["embedding"][9723]),
                      jnp.dot(p["user"]["embedding"][609], p["item"]["embedding"][0])])
    chex.assert_trees_all_close(pred, want, atol=1e-7)


def write_small_ratings(folder, users=40, items=60, per_user=25, seed=0):
    """A MovieLens-format ratings.csv with low-rank structure (tests stay small and fast)."""
    rng = np.random.default_rng(seed)
    uf, vf = rng.normal(size=(users, 2)), rng.normal(size=(items, 2))
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(users):
        for m in rng.choice(items, per_user, replace=False):
            r = np.clip(np.round(2 * (3.5 + 0.6 * uf[u] @ vf[m])) / 2, 0.5, 5.0)
            lines.append(f"{u + 1},{10 * m + 7},{r:g},964982703")
    (folder / "ratings.csv").write_text("\r\n".join(lines) + "\r\n")
    return str(folder)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_small_ratings(tmp_path_factory.mktemp("ml"))


@pytest.fixture(scope="module")
def ml_task(small_dir):
    cfg = SimConfig(task="movielens", n_nodes=6, n_fragments=3, batch_size=8, local_steps=5,
                    data_dir=small_dir)
    return cfg, data.make_movielens_task(cfg)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_mf__sparse_update_equals_dense(ml_task, weight_decay):
    cfg, task = ml_task
    cfg = cfg.replace(weight_decay=weight_decay, lr=0.5)
    layout = model_layout(cfg, task)
    hp = default_hparams(cfg)
    tx = make_optimizer(cfg, hp)
    params = layout.flatten(task.init(jax.random.key(0)))             # (K, F)
    params = params * 20.0                                            # away from the saddle
    opt = tx.init(params)
    sparse = jax.jit(make_train_one(cfg, task, layout, tx))
    dense = jax.jit(make_train_one(cfg, task._replace(make_local_train=None), layout, tx))
    for node in (0, 5):
        key = jax.random.key(node + 1)
        ps, _ = sparse(params, opt, key, jnp.int32(node))
        pd, _ = dense(params, opt, key, jnp.int32(node))
        assert float(jnp.max(jnp.abs(pd - params))) > 1e-3           # it did learn
        chex.assert_trees_all_close(ps, pd, atol=2e-6, rtol=1e-5)
        if weight_decay == 0.0:                                        # untouched rows unchanged
            moved = np.asarray(ps != params)
            assert 0 < moved.sum() <= 2 * cfg.batch_size * cfg.local_steps * 20
            assert moved.sum() < layout.D // 2


def test_mf__sparse_update_under_vmap_and_traced_lr(ml_task):
    cfg, task = ml_task
    layout = model_layout(cfg, task)
    params = layout.flatten(task.init(jax.random.key(0))) * 20.0

    def run(lr, dense_path):
        hp = default_hparams(cfg).replace(lr=lr)
        tx = make_optimizer(cfg, hp)
        t = task._replace(make_local_train=None) if dense_path else task
        train = make_train_one(cfg, t, layout, tx)
        p = jnp.broadcast_to(params, (2,) + params.shape)
        keys = jax.random.split(jax.random.key(3), 2)
        return jax.vmap(train, (0, None, 0, 0))(p, tx.init(params), keys,
                                                jnp.array([1, 4], jnp.int32))[0]

    lrs = jnp.array([0.1, 0.3])
    got = jax.jit(jax.vmap(lambda lr: run(lr, False)))(lrs)
    want = jax.jit(jax.vmap(lambda lr: run(lr, True)))(lrs)
    chex.assert_trees_all_close(got, want, atol=2e-6, rtol=1e-5)


def test_mf__momentum_buffer_falls_back_to_dense(ml_task):
    cfg, task = ml_task
    cfg = cfg.replace(momentum_buffer=True, momentum=0.9, lr=0.3)
    layout = model_layout(cfg, task)
    tx = make_optimizer(cfg, default_hparams(cfg))
    params = layout.flatten(task.init(jax.random.key(0))) * 20.0
    opt = tx.init(params)
    a = jax.jit(make_train_one(cfg, task, layout, tx))(params, opt, jax.random.key(2), jnp.int32(1))
    b = jax.jit(make_train_one(cfg, task._replace(make_local_train=None), layout, tx))(
        params, opt, jax.random.key(2), jnp.int32(1))
    chex.assert_trees_all_equal(a, b)
    with pytest.raises(Exception, match="stateless optimizer"):
        models.make_mf_sparse_train(cfg, layout, tx, task.sample_batch, np.zeros((1, 20), int),
                                    np.zeros((1, 20), int))


def test_movielens_engine__test_loss_falls(small_dir):
    from divjax.engine.sim import make_run

    cfg = SimConfig(task="movielens", data_dir=small_dir, n_nodes=4, n_fragments=2, fanout=2, local_steps=16,
                    batch_size=8, lr=0.3, compute_s=0.1, tick_s=0.1, duration_s=2.0,
                    eval_every_s=1.0, fast_mbps=60.0)
    run = divjax.jit(make_run(cfg))
    state, m = run(jax.random.key(0), default_hparams(cfg))
    assert int(state.errors) == 0
    rmse = np.asarray(m["rmse_mean"])
    assert rmse.shape == (2,) and rmse[-1] < rmse[0] < 4.0


def _sgd_inputs(seeds=2, lrs=3, D=50, T=4, B=3, f=2, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(seeds, lrs, D)), jnp.float32)
    a = -jnp.asarray(rng.uniform(0.05, 0.5, size=(lrs,)), jnp.float32)      # -lr per config
    decay = 1.0 + 0.01 * a                                                   # wd = 0.01
    pu = jnp.asarray(rng.integers(0, D // 2, size=(seeds, T, B, f)), jnp.int32)
    pi = jnp.asarray(rng.integers(D // 2, D, size=(seeds, T, B, f)), jnp.int32)
    rating = jnp.asarray(rng.uniform(0.5, 5, size=(seeds, T, B)), jnp.float32)
    return q, a, decay, pu, pi, rating


def _one_model(q, a, decay, pu, pi, rating):
    one = jnp.ones((1, 1), jnp.float32)
    out, s = models.mf_sgd_steps(q[None, :, None], one, a.reshape(1, 1), decay.reshape(1, 1),
                                 pu[None], pi[None], rating[None])
    return out[0, :, 0] * s[0, 0]


def test_mf_sgd_steps__shared_batches_share_rows_and_equal_one_model_at_a_time():
    q, a, decay, pu, pi, rating = _sgd_inputs()
    # seeds (own batches) outside, learning rates (the seed's batches) inside, as in a sweep
    per_lr = jax.vmap(_one_model, in_axes=(0, 0, 0, None, None, None))
    nested = jax.jit(jax.vmap(per_lr, in_axes=(0, None, None, 0, 0, 0)))
    got = nested(q, a, decay, pu, pi, rating)
    want = np.stack([np.stack([np.asarray(jax.jit(_one_model)(q[s, h], a[h], decay[h], pu[s],
                                                                pi[s], rating[s]))
                               for h in range(q.shape[1])]) for s in range(q.shape[0])])
    assert float(np.max(np.abs(want - np.asarray(q)))) > 1e-3                 # it did learn
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)
    # the learning rates ride on the minor axis: each row access gathers all 3 of them
    text = str(jax.make_jaxpr(nested)(q, a, decay, pu, pi, rating))
    assert re.search(r"f32\[2,\d+,2,3\] = gather", text), "shared batches are not shared"
    alone = str(jax.make_jaxpr(jax.vmap(_one_model))(q[0], a, decay, pu[:1].repeat(3, 0),
                                                       pi[:1].repeat(3, 0),
                                                       rating[:1].repeat(3, 0)))
    assert not re.search(r"f32\[\d+,\d+,2,3\] = gather", alone)               # own batches: N axis


def test_mf__flat_evaluate_equals_evaluate_of_the_unflattened_model(ml_task):
    cfg, task = ml_task
    layout = model_layout(cfg, task)
    params = layout.flatten(task.init(jax.random.key(4))) * 30.0        # (K, F), shuffled coords
    flat = jax.jit(task.make_flat_evaluate(layout))
    tree = jax.jit(lambda p, node: task.evaluate(layout.unflatten(p), node))
    for node in (-1, 0, 5):
        got, want = flat(params, jnp.int32(node)), tree(params, jnp.int32(node))
        assert float(want["rmse"]) > 0.5
        chex.assert_trees_all_close(got, want, rtol=1e-6)
