"""SimConfig.validation_share: each node holds out a share of its own training samples, and every
metric is computed on them instead of the test set (issue 31: tune without the test set).

The references here are independent of `hold_out`: which samples a node trains on is read back
from what `sample_batch` draws (every sample is drawn with probability ~1), the held-out ones
are the node's training samples never drawn, and the metrics are recomputed with numpy on them.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divjax import data
from divjax.tasks import models
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.data import cifar10 as cifar_module
from divjax.data import movielens as ml_module
from divjax.data.partitions import hold_out
from divjax.engine.fingerprint import fingerprint, fingerprint_mismatch
from divjax.tasks.registry import make_task

N_USERS, N_ITEMS = 12, 40


def tiny_ratings(seed=0) -> data.Ratings:
    """12 users with 10..17 distinct items each: (user, item) names a rating uniquely."""
    rng = np.random.default_rng(seed)
    user, item = [], []
    for u in range(N_USERS):
        its = rng.choice(N_ITEMS, rng.integers(10, 18), replace=False)
        user += [u + 1] * len(its)
        item += list(its + 100)
    rating = rng.integers(1, 11, len(user)).astype(np.float32) / 2
    return data.Ratings(np.array(user), np.array(item), rating)


@pytest.fixture
def tiny_movielens(monkeypatch):
    r = tiny_ratings()
    monkeypatch.setattr(ml_module, "load_movielens", lambda *a: (r, "tiny ratings"))
    return r


def ml_config(**changes):
    return SimConfig(task="movielens", n_nodes=3, fanout=1, batch_size=8, local_steps=2,
                     n_fragments=2, tick_s=0.1, duration_s=2.0, eval_every_s=1.0,
                     compute_s=0.5, lr=0.1).replace(**changes)


def drawn(task, node, draws=500):
    """Every sample `sample_batch` returns for `node` over `draws` batches (stacked)."""
    keys = jax.random.split(jax.random.key(node + 7), draws)
    return jax.jit(jax.vmap(task.sample_batch, (0, None)))(keys, jnp.int32(node))


# ----------------------------------------------------------------------------- hold_out

def test_hold_out__sizes_disjoint_and_fixed_by_the_seed():
    parts = [np.arange(s) + 100 * i for i, s in enumerate([1, 2, 3, 10, 37])]
    kept, held = hold_out(parts, 0.3, seed=4)
    # by hand: max(1, floor(0.3 m + 1/2)) for m >= 2, none for m = 1
    assert [len(h) for h in held] == [0, 1, 1, 3, 11]
    for p, k, h in zip(parts, kept, held, strict=True):
        assert len(k) >= 1 and not set(k) & set(h)
        assert sorted(np.concatenate([k, h])) == sorted(p)
    again = hold_out(parts, 0.3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(held, again[1], strict=True))
    other = hold_out(parts, 0.3, seed=5)[1]
    assert any(not np.array_equal(a, b) for a, b in zip(held, other, strict=True))


def test_hold_out__a_share_leaving_a_node_nothing_is_refused_with_the_fix():
    parts = [np.arange(2), np.arange(10), np.arange(2)]
    with pytest.raises(ConfigError, match=r"leaves 2 of the n_nodes=3 nodes no training "
                                          r"sample.*below 0\.75.*fewer nodes"):
        hold_out(parts, 0.8, seed=0)
    hold_out(parts, 0.7, seed=0)     # round(1.4) = 1 of 2: one kept


@pytest.mark.parametrize("share", [-0.1, 1.0, float("inf")])
def test_validation_share__range(share):
    with pytest.raises(ConfigError, match="validation_share=.* is invalid: use a fraction in "
                                          r"\[0, 1\)"):
        SimConfig(validation_share=share)


def test_validation_share__tasks_without_a_split_are_refused():
    with pytest.raises(ConfigError, match="task 'synthetic' has no validation split"):
        make_task(SimConfig(validation_share=0.2))
    from divjax.tasks.registry import check_validation_split
    task = make_task(SimConfig())           # a plug-in that ignores the share: the same refusal
    with pytest.raises(ConfigError, match="info\\['evaluated_on'\\]"):
        check_validation_split(SimConfig(validation_share=0.2), task)


# ----------------------------------------------------------------------------- MovieLens

def node_training_ratings(r, n, seed):
    """{node: set of (user, item)} of the 70% training ratings, users in contiguous blocks."""
    sp = data.split_movielens(r, n, seed)
    node_of = np.searchsorted(sp.node_users, sp.user, side="right") - 1
    return sp, {i: {(int(u), int(m)) for u, m in zip(sp.user[sp.train & (node_of == i)],
                                                      sp.item[sp.train & (node_of == i)],
                                                      strict=True)} for i in range(n)}


def test_movielens__trains_on_kept_evaluates_on_held_out_never_on_test(tiny_movielens):
    n, share = 3, 0.25
    task = make_task(ml_config(validation_share=share))
    sp, train = node_training_ratings(tiny_movielens, n, 0)
    _, predict = models.mf_functions(sp.n_users, sp.n_items)
    params = jax.tree.map(lambda x: x + 0.4, task.init(jax.random.key(1)))
    rating = {(int(u), int(m)): float(v) for u, m, v in zip(sp.user, sp.item, sp.rating,
                                                            strict=True)}
    union = []
    for i in range(n):
        b = drawn(task, i)
        got = set(zip(np.asarray(b["user"]).ravel().tolist(),
                      np.asarray(b["item"]).ravel().tolist(), strict=True))
        assert got < train[i]                      # trains on its own training ratings only
        held = sorted(train[i] - got)
        assert len(held) == max(1, int(np.floor(share * len(train[i]) + 0.5)))
        union += held
        u, m = (jnp.asarray([h[k] for h in held]) for k in (0, 1))
        want = np.sqrt(np.mean((np.asarray(predict(params, u, m))
                                - [rating[h] for h in held]) ** 2))
        np.testing.assert_allclose(float(task.evaluate(params, jnp.int32(i))["rmse"]), want,
                                   rtol=1e-5)
    u, m = (jnp.asarray([h[k] for h in union]) for k in (0, 1))
    want = np.sqrt(np.mean((np.asarray(predict(params, u, m)) - [rating[h] for h in union]) ** 2))
    np.testing.assert_allclose(float(task.evaluate(params, jnp.int32(-1))["rmse"]), want,
                               rtol=1e-5)
    assert task.info["n_validation"] == len(union)
    assert task.info["evaluated_on"].startswith("validation split (share 0.25")


def test_movielens__share_0_views_are_the_test_ratings_as_before(tiny_movielens):
    """Share 0: node i trains on its users' training ratings, is evaluated on their test
    ratings, and the average model on every test rating in rating order (as before)."""
    sp = data.split_movielens(tiny_movielens, 3, 0)
    v = ml_module.movielens_views(sp, 3, 0.0, 0, eval_batch=4)
    node_of = np.searchsorted(sp.node_users, sp.user, side="right") - 1
    te = np.flatnonzero(~sp.train)
    for i in range(3):
        mine = np.flatnonzero(sp.train & (node_of == i))
        np.testing.assert_array_equal(v.node_idx[i, :v.node_size[i]], mine)
        np.testing.assert_array_equal(v.flat[v.start[i]:v.start[i] + v.size[i]],
                                      te[node_of[te] == i])
    np.testing.assert_array_equal(v.flat[v.start[3]:v.start[3] + v.size[3]], te)
    np.testing.assert_array_equal(v.flat[-4:], 0)
    assert ml_module.make_movielens_task(ml_config()).info["evaluated_on"] == "test set"


def test_movielens__same_data_seed_same_split(tiny_movielens):
    sp = data.split_movielens(tiny_movielens, 3, 0)
    a, b = (ml_module.movielens_views(sp, 3, 0.3, 0, eval_batch=4) for _ in range(2))
    c = ml_module.movielens_views(sp, 3, 0.3, 1, eval_batch=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.flat, c.flat)
    assert sp.train[a.flat].all() and sp.train[c.flat].all()   # pads too: no test rating


def test_movielens__a_run_never_reads_a_test_rating_nor_resumes_with_another_share(
        tiny_movielens, monkeypatch, tmp_path):
    """Test ratings made NaN in the source: a run that read one (training or evaluation, on
    the flat or the tree path) would report NaN. Its checkpoint refuses another share."""
    from divjax.engine import checkpoint
    from divjax.engine.sim import make_engine

    r = tiny_movielens
    sp = data.split_movielens(r, 3, 0)
    poisoned = data.Ratings(r.user, r.item, np.where(sp.train, r.rating, np.nan))
    monkeypatch.setattr(ml_module, "load_movielens", lambda *a: (poisoned, "tiny, test NaN"))
    cfg, other = ml_config(validation_share=0.3), ml_config(validation_share=0.2)
    hp, key = default_hparams(cfg), jax.random.key(0)
    _, metrics = checkpoint.drive(make_engine(cfg), key, hp, run_dir=tmp_path, every_s=1.0)
    for k in ("rmse_mean", "rmse_avgmodel", "loss_max"):
        assert np.all(np.isfinite(np.asarray(metrics[k]))), k
    with pytest.raises(ConfigError, match="validation_share=0.3 there, 0.2 here"):
        checkpoint.restore(tmp_path, make_engine(other), hp, key=key)
    assert fingerprint_mismatch(fingerprint(cfg, hp), fingerprint(cfg, hp)) is None
    assert dataclasses.asdict(cfg)["validation_share"] == 0.3      # recorded in config.json


# ----------------------------------------------------------------------------- CIFAR-10

class Untouchable:
    """A test array that fails when anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the test set was read ({name})")

    def __len__(self):
        raise AssertionError("the test set was read (len)")

    def __array__(self, *a, **k):
        raise AssertionError("the test set was read (array)")


def test_cifar10__trains_on_kept_evaluates_on_held_out_never_on_test(monkeypatch):
    n, share, N = 4, 0.2, 200
    x = np.zeros((N, 32, 32, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(N) % 256, np.arange(N) // 256   # image id
    x[:, 1:] = np.random.default_rng(0).integers(0, 256, (N, 31, 32, 3), dtype=np.uint8)
    y = np.arange(N) % 10
    arrays = data.CifarArrays(x, y, Untouchable(), Untouchable())
    monkeypatch.setattr(cifar_module, "load_cifar10", lambda d: (arrays, "tiny"))
    cfg = SimConfig(task="cifar10", n_nodes=n, batch_size=4, validation_share=share)
    task = make_task(cfg)
    parts = data.partition_labels(y, n, "kshard", 0, shards=5)
    union = []
    for i in range(n):
        b = np.asarray(drawn(task, i)["x"])
        ids = b[..., 0, 0, 0].astype(int) + 256 * b[..., 0, 0, 1].astype(int)
        got = set(ids.ravel().tolist())
        assert got < set(parts[i].tolist())
        held = sorted(set(parts[i].tolist()) - got)
        assert len(held) == max(1, int(np.floor(share * len(parts[i]) + 0.5)))
        union += held
    init, logits = models.cnn_functions()
    params = init(jax.random.key(0))
    out = np.asarray(jax.jit(logits)(params, (jnp.asarray(x[union], jnp.float32) / 255 - 0.5)
                                     / 0.5))
    acc = np.mean(out.argmax(-1) == y[union])
    ce = np.mean(np.asarray(models.cross_entropy(jnp.asarray(out), jnp.asarray(y[union]))))
    evaluate = jax.jit(task.evaluate)
    for node in (-1, 2):          # both views hold the whole union here (< 1000 images)
        m = evaluate(params, jnp.int32(node))
        np.testing.assert_allclose([float(m["acc"]), float(m["loss"])], [acc, ce], rtol=1e-5)
    assert task.info["n_validation"] == len(union) == 40
    assert sum(task.info["samples_per_node"]) == N - 40
