"""The MovieLens task: matrix factorisation (20 factors), users dealt to nodes in blocks.

Also `synthetic_ratings`, MovieLens-shaped ratings from a planted low-rank model, for scaling
runs past MovieLens' 610 users (task `movielens-synthetic`).

Evaluation (`evaluate(params, node)`), in fixed-size chunks so memory per call is bounded:
node >= 0 on the test ratings of the node's own users; node = -1 on every test rating. `loss` =
test MSE over the ratings of the view, `rmse` = sqrt(loss) (primary: the paper reports the square
root of the mean batch MSE, which equals this when batches are equal). With
`cfg.validation_share > 0`, held-out training ratings take the test ratings' place: node >= 0 on
the node's own held-out ratings, node = -1 on all of them; the test ratings are then never read
(their values are NaN on device, and the views are checked to hold training ratings only).
Local training updates only the rows a mini-batch touches (`models.make_mf_sparse_train`),
unless a momentum buffer needs the generic dense update.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.tasks import models
from divjax.config import ConfigError, SimConfig
from divjax.data.movielens_files import Ratings
from divjax.data.partitions import (
    MovieLensSplit,
    evaluated_on,
    hold_out,
    padded_table,
    split_movielens,
    summarize,
    validation_union,
)
from divjax.data.sources import load_movielens
from divjax.engine.local import make_train_one
from divjax.tasks.base import Task


def synthetic_ratings(n_users: int, n_params: int = 206_680, rank: int = 5,
                      per_user: int = 40, seed: int = 0) -> Ratings:
    """MovieLens-shaped ratings from a planted low-rank model, for scaling runs past 610 users.

    n_items is chosen so that the 20-factor model has `n_params` parameters (MovieLens
    latest-small's 206,680 by default): n_items = n_params / 20 - n_users. Each user rates
    `per_user` distinct random items and every item is rated at least once; a rating is
    3.5 + <u, v> + noise, rounded to half stars in [0.5, 5].
    """
    n_items = n_params // models.MF_FACTORS - n_users
    if n_items < per_user:
        raise ConfigError(f"{n_users} users leave {n_items} items in a {n_params}-parameter "
                          f"model: use fewer nodes (at most "
                          f"{n_params // models.MF_FACTORS - per_user})")
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_users, rank))
    v = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_items, rank))
    item = np.stack([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    user = np.repeat(np.arange(n_users), per_user)
    item = item.reshape(-1)
    unrated = np.setdiff1d(np.arange(n_items), item)    # every item is rated at least once
    user = np.concatenate([user, rng.integers(0, n_users, unrated.size)])
    item = np.concatenate([item, unrated])
    raw = 3.5 + np.sum(u[user] * v[item], axis=1) + rng.normal(0.0, 0.3, user.size)
    stars = np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
    return Ratings(user.astype(np.int64), item.astype(np.int64), stars)


class MovieLensViews(NamedTuple):
    """Each node's training ratings and the n + 1 evaluation views (indices into the ratings)."""

    node_idx: np.ndarray     # (n, m_max) int32: node i's training ratings, padded
    node_size: np.ndarray    # (n,) int32
    flat: np.ndarray         # (sum(size) + eval_batch,) int32: the views back to back, padded
    start: np.ndarray        # (n + 1,) int32: where view v starts in `flat`
    size: np.ndarray         # (n + 1,) int32: view v's length (row n: every node's together)


def movielens_views(sp: MovieLensSplit, n: int, share: float, seed: int,
                    eval_batch: int) -> MovieLensViews:
    """Node i trains on its users' training ratings and is evaluated on their test ratings
    (row n: every test rating); with share > 0, on the ratings `hold_out` takes out of its
    training ratings (row n: all of them), and no view holds a test rating."""
    tr, te = np.flatnonzero(sp.train), np.flatnonzero(~sp.train)
    node_of_user = np.searchsorted(sp.node_users, np.arange(sp.n_users), side="right") - 1
    train_parts = [tr[node_of_user[sp.user[tr]] == i] for i in range(n)]
    if share > 0:
        train_parts, held = hold_out(train_parts, share, seed)
        alone = [i for i, h in enumerate(held) if h.size == 0]
        if alone:
            raise ConfigError(f"validation_share={share:g}: node {alone[0]} holds 1 training "
                              f"rating, so none is held out to validate its model on: use "
                              f"fewer nodes, or validation_share 0")
        views, pad = held + [validation_union(held, "MovieLens")], tr[0]
    else:
        views, pad = [te[node_of_user[sp.user[te]] == i] for i in range(n)] + [te], 0
    node_idx, node_size = padded_table(train_parts)
    # views back to back (row n = the global set): a padded (n + 1, m) table would be as wide
    # as the global set, n * |view| entries
    size = np.array([len(p) for p in views], np.int32)
    start = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int32)
    flat = np.concatenate(views + [np.full(eval_batch, pad, np.int64)]).astype(np.int32)
    if share > 0:   # the test set is not read at all, not even by a padded chunk
        assert sp.train[flat].all(), "a validation view holds a test rating"
    return MovieLensViews(node_idx, node_size, flat, start, size)


def _ratings(cfg: SimConfig, variant: str) -> tuple[Ratings, str]:
    if variant == "synthetic":
        ratings = synthetic_ratings(max(cfg.n_nodes, 610), seed=cfg.data_seed)
        return ratings, (f"synthetic ratings, planted rank 5 ({len(ratings.rating)} ratings, "
                         f"seed {cfg.data_seed})")
    return load_movielens(cfg.data_dir, variant)


def _make_evaluate(predict_fn, views: MovieLensViews, user_d, item_d, rating_d,
                   eval_batch: int):
    """evaluate(params, node) from predict_fn(params, user (B,), item (B,)) -> (B,)."""
    n = len(views.node_size)
    flat_d, start_d, size_d = (jnp.asarray(x) for x in (views.flat, views.start, views.size))
    # mean = sum * (1 / count), the float32 reciprocal rounded once on the host: what XLA made
    # of `sum / count` where it could fold the count from the embedded tables (its algebraic
    # simplifier turns a division by a constant into this product: the default run's bits).
    # Written out, the bits no longer depend on whether the tables reach the program as
    # constants or as arguments (`divjax.engine.hoist`); nodes evaluated in a loop (n at least
    # twice eval_chunk), whose counts XLA could not fold, get the product too (was: a division).
    inv_d = jnp.asarray(np.float32(1) / np.maximum(views.size, 1).astype(np.float32))

    def evaluate(params, node):
        row = jnp.where(node < 0, n, node)
        size = size_d[row]

        def body(c, se):
            start = c * eval_batch
            idx = jax.lax.dynamic_slice(flat_d, (start_d[row] + start,), (eval_batch,))
            mask = start + jnp.arange(eval_batch) < size
            err = predict_fn(params, user_d[idx], item_d[idx]) - rating_d[idx]
            return se + jnp.sum(jnp.where(mask, err**2, 0.0))

        se = jax.lax.fori_loop(0, (size + eval_batch - 1) // eval_batch, body, jnp.float32(0))
        mse = se * inv_d[row]
        return {"rmse": jnp.sqrt(mse), "loss": mse}

    return evaluate


def _info(cfg: SimConfig, sp: MovieLensSplit, views: MovieLensViews, variant: str,
          source: str) -> dict:
    n, share = cfg.n_nodes, cfg.validation_share
    users_per_node = np.diff(sp.node_users)
    node_size = views.node_size
    info = {
        "kind": f"MovieLens {variant} rating prediction, matrix factorisation "
                f"({models.MF_FACTORS} factors)", "source": source,
        "n_ratings": int(len(sp.rating)), "n_users": sp.n_users, "n_items": sp.n_items,
        "n_train": int(node_size.sum()), "n_test": int(np.sum(~sp.train)),
        "params": models.mf_param_count(sp.n_users, sp.n_items),
        "users_per_node": users_per_node.tolist(), "samples_per_node": node_size.tolist(),
        "test_per_node": views.size[:n].tolist(),
        "local_update": "dense (momentum buffer)" if cfg.momentum_buffer else "sparse rows",
        "summary": f"{summarize(users_per_node, 'users')}; {summarize(node_size, 'train ratings')}",
    }
    if share > 0:
        del info["test_per_node"]
        info.update(n_validation=int(views.size[n]), validation_per_node=views.size[:n].tolist(),
                    evaluated_on=evaluated_on(share),
                    source=f"{source}; evaluated on: {evaluated_on(share)}")
    else:
        info["evaluated_on"] = evaluated_on(share)
    return info


def make_movielens_task(cfg: SimConfig, variant: str = "latest-small", eval_batch: int = 1024,
                        name: str = "movielens") -> Task:
    """MovieLens with matrix factorisation (20 factors), users dealt to nodes in blocks.

    variant "synthetic": `synthetic_ratings` with one user per node (at least 610), a model of
    MovieLens latest-small's size; for scaling to thousands of nodes. `cfg.validation_share`
    > 0: evaluated on held-out training ratings instead (`movielens_views`).
    """
    ratings, source = _ratings(cfg, variant)
    sp = split_movielens(ratings, cfg.n_nodes, cfg.data_seed)
    views = movielens_views(sp, cfg.n_nodes, cfg.validation_share, cfg.data_seed, eval_batch)
    rating = sp.rating.astype(np.float32)
    if cfg.validation_share > 0:   # a test rating read anywhere would make its metric NaN
        rating = np.where(sp.train, rating, np.float32(np.nan))
    user_d, item_d, rating_d = jnp.asarray(sp.user), jnp.asarray(sp.item), jnp.asarray(rating)
    node_idx_d, node_size_d = jnp.asarray(views.node_idx), jnp.asarray(views.node_size)
    init, predict = models.mf_functions(sp.n_users, sp.n_items)
    B = cfg.batch_size

    def loss(params, batch):
        return jnp.mean((predict(params, batch["user"], batch["item"]) - batch["rating"]) ** 2)

    def sample_batch(key, node):
        j = jax.random.randint(key, (B,), 0, node_size_d[node])
        idx = node_idx_d[node, j]
        return {"user": user_d[idx], "item": item_d[idx], "rating": rating_d[idx]}

    def row_positions(layout):
        """(n_users, f), (n_items, f): where each factor of each row sits in the (K, F) array."""
        template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                jax.eval_shape(init, jax.random.key(0)))
        return models.mf_row_positions(layout, template, sp.n_users, sp.n_items)

    def make_local_train(cfg_, layout, tx):
        if cfg_.momentum_buffer:   # stateful optimizer: the generic dense update (documented)
            return make_train_one(cfg_, dense_task, layout, tx)
        upos, ipos = row_positions(layout)
        return models.make_mf_sparse_train(cfg_, layout, tx, sample_batch, upos, ipos)

    def make_flat_evaluate(layout):
        # the rows a rating needs, read straight from the (K, F) fragment array: no unflatten
        # (a gather of the whole model) per node and evaluation
        upos, ipos = (jnp.asarray(x) for x in row_positions(layout))

        def predict_flat(params, user, item):
            q = params.reshape(-1)
            return models.mf_predict_rows(q[upos[user]], q[ipos[item]])

        return _make_evaluate(predict_flat, views, user_d, item_d, rating_d, eval_batch)

    evaluate = _make_evaluate(predict, views, user_d, item_d, rating_d, eval_batch)
    dense_task = Task(name=name, init=init, loss=loss, sample_batch=sample_batch,
                      evaluate=evaluate, metric_names=("rmse", "loss"), primary="rmse",
                      higher_is_better=False, info=_info(cfg, sp, views, variant, source))
    return dense_task._replace(make_local_train=make_local_train,
                               make_flat_evaluate=make_flat_evaluate)
