"""Who holds which example: partitions of the training data, as padded per-node index tables.

Partitions are drawn with numpy, once, from `np.random.default_rng(cfg.data_seed)`:
- CIFAR-10 `kshard` (the authors' config, shards = 5): sort the training set by label (stable),
  cut it into n * shards contiguous shards of (almost) equal size, deal each node `shards` random
  shards. Every training image is in exactly one node. The authors' KShardDataPartitioner also
  takes contiguous runs of the label-sorted data at random positions, but its integer rounding
  leaves a few dozen images unused; here all are used. Also `iid` and `dirichlet` (per class,
  node shares ~ Dirichlet(alpha), redrawn until every node has at least one image).
- MovieLens: per user, a random 70% of that user's ratings (round(0.7 m), as pandas'
  `sample(frac=0.7)`) for training and the rest for testing; users dealt to nodes in contiguous
  blocks of 610 // n, the first 610 % n nodes taking one more (the authors' `_split_data`).
  Item ids are renumbered densely in the order of their raw ids (as the authors do).

On device, every node's training data is a padded index table `node_idx (n, m_max) int32` with
`node_size (n,)` (`padded_table`); a task's `sample_batch(key, node)` draws `batch_size` indices
with replacement inside jit (the authors' DataLoader shuffles without replacement; the
difference is documented here). With `cfg.validation_share > 0`, `hold_out` first takes a
fixed share of every node's samples out of its table: those held-out samples replace the test
set in every evaluation (`divjax.data.movielens`, `divjax.data.cifar10`). `chunked_sums` sums
a function over one row of such a table in fixed-size chunks, so evaluation memory per call is
bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import ConfigError
from divjax.data.movielens_files import Ratings


def partition_iid(n_samples: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n_samples), n)


def partition_kshard(labels: np.ndarray, n: int, shards: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Label-sorted data cut into n * shards contiguous shards; node i gets `shards` random ones."""
    if n * shards > len(labels):
        raise ConfigError(f"kshard: n_nodes * shards = {n * shards} exceeds the "
                          f"{len(labels)} training samples; use fewer nodes or shards")
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, n * shards)
    deal = rng.permutation(n * shards).reshape(n, shards)
    return [np.sort(np.concatenate([pieces[j] for j in row])) for row in deal]


def partition_dirichlet(labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator,
                        tries: int = 100) -> list[np.ndarray]:
    """Per class, node shares ~ Dirichlet(alpha * 1_n); redrawn until no node is empty."""
    if not alpha > 0:
        raise ConfigError(f"dirichlet alpha={alpha} is invalid: use alpha > 0")
    classes = np.unique(labels)
    for _ in range(tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= 1:
            return out
    raise ConfigError(f"dirichlet alpha={alpha}: some node got no data in {tries} draws; "
                      f"raise alpha or use fewer nodes")


def partition_labels(labels: np.ndarray, n: int, scheme: str, seed: int, shards: int = 5,
                     alpha: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return partition_iid(len(labels), n, rng)
    if scheme == "kshard":
        return partition_kshard(labels, n, shards, rng)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, n, alpha, rng)
    raise ConfigError(f"partition={scheme!r} is unknown: use 'kshard', 'iid' or 'dirichlet'")


def padded_table(parts: list[np.ndarray], multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(n, m_max) int32 index table (padded with 0, m_max rounded up to `multiple`), (n,) sizes."""
    size = np.array([len(p) for p in parts], np.int32)
    m = max(1, int(size.max()))
    m = -(-m // multiple) * multiple
    table = np.zeros((len(parts), m), np.int32)
    for i, p in enumerate(parts):
        table[i, :len(p)] = p
    return table, size


class MovieLensSplit(NamedTuple):
    """Ratings with dense 0-based ids, split per user 70/30, and each node's users."""

    user: np.ndarray         # (R,) int32 dense user index (users sorted by raw id)
    item: np.ndarray         # (R,) int32 dense item index (items sorted by raw id)
    rating: np.ndarray       # (R,) float32
    train: np.ndarray        # (R,) bool: in the training split
    node_users: np.ndarray   # (n + 1,) int64: node i owns users [node_users[i], node_users[i+1])
    n_users: int
    n_items: int


def split_movielens(r: Ratings, n: int, seed: int, train_frac: float = 0.7) -> MovieLensSplit:
    """Per-user random train/test split (round(0.7 m) training ratings) and user blocks."""
    users, user = np.unique(r.user, return_inverse=True)
    items, item = np.unique(r.item, return_inverse=True)
    U = users.size
    if n > U:
        raise ConfigError(f"n_nodes={n} exceeds the {U} MovieLens users: every node needs at "
                          f"least one user; use --n-nodes {U} or fewer")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(user.size), user))     # by user, random within a user
    counts = np.bincount(user, minlength=U)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(user.size, np.int64)
    rank[order] = np.arange(user.size) - np.repeat(starts, counts)
    n_train = np.array([round(train_frac * c) for c in counts])   # pandas sample(frac=) count
    train = rank < n_train[user]
    per, extra = divmod(U, n)
    sizes = np.full(n, per) + (np.arange(n) < extra)
    node_users = np.concatenate([[0], np.cumsum(sizes)])
    return MovieLensSplit(user.astype(np.int32), item.astype(np.int32), r.rating, train,
                          node_users, U, int(items.size))


# ------------------------------------------------------------------------ validation split

VALIDATION_STREAM = 2   # SeedSequence([data_seed, 2]): the held-out draw (1 = CIFAR test order)


def hold_out(parts: list[np.ndarray], share: float,
             seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each node's samples split into (kept for training, held out for validation).

    Node i holds out h_i = max(1, floor(share * m_i + 1/2)) of its m_i samples, or none when
    m_i = 1 (a node keeps at least one). Which ones: a uniform random subset, drawn from
    `default_rng(SeedSequence([seed, VALIDATION_STREAM]))`, one permutation per node in node
    order, so the same data_seed gives the same split. Both lists keep the samples' order in
    `parts`. A share that would leave some node no training sample is refused.
    """
    if not 0 < share < 1:
        raise ConfigError(f"validation_share={share!r} is invalid: use a fraction in (0, 1) "
                          f"(0 = no validation split: evaluate on the test set)")
    m = np.array([len(p) for p in parts])
    held = np.where(m >= 2, np.maximum(1, np.floor(share * m + 0.5)), 0).astype(np.int64)
    empty = np.flatnonzero((m >= 2) & (held >= m))
    if empty.size:
        i = int(empty[np.argmin(m[empty])])
        raise ConfigError(
            f"validation_share={share:g} leaves {empty.size} of the n_nodes={len(parts)} nodes "
            f"no training sample (node {i} holds {m[i]} and would hold out all of them): use "
            f"validation_share below {1 - 0.5 / m[i]:.4g} (1 - 1/(2m) for its m={m[i]}), or "
            f"fewer nodes (more samples each)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, VALIDATION_STREAM]))
    kept, out = [], []
    for p, h in zip(parts, held, strict=True):   # host side, once
        perm = rng.permutation(len(p))
        out.append(p[np.sort(perm[:h])])
        kept.append(p[np.sort(perm[h:])])
    return kept, out


def validation_union(held: list[np.ndarray], what: str) -> np.ndarray:
    """The held-out samples of every node, sorted; refused when there are none."""
    union = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    if union.size == 0:
        raise ConfigError(f"validation_share: no node of {what} holds 2 or more samples, so "
                          f"none is held out to validate on: use fewer nodes, or "
                          f"validation_share 0")
    return union


def evaluated_on(share: float) -> str:
    """What a task's metrics are computed on (its info["evaluated_on"])."""
    return (f"validation split (share {share:g} of each node's training samples; the test "
            f"set is not read)" if share > 0 else "test set")


# ------------------------------------------------------------------------ sums over a table

def chunked_sums(sums: Callable, view_idx: jax.Array, view_size: jax.Array, row: jax.Array,
                 chunk: int, init: dict) -> dict:
    """Sum `sums(idx (chunk,), mask (chunk,))` over the first view_size[row] entries of a view.

    view_idx: (V, m) int32 with m a multiple of `chunk`; the loop runs ceil(size / chunk) times
    (a while loop; under vmap it runs the longest view's count, masking the others).
    """
    size = view_size[row]
    n_chunks = (size + chunk - 1) // chunk

    def body(c, acc):
        start = c * chunk
        idx = jax.lax.dynamic_slice(view_idx, (row, start), (1, chunk))[0]
        mask = start + jnp.arange(chunk) < size
        return jax.tree.map(jnp.add, acc, sums(idx, mask))

    return jax.lax.fori_loop(0, n_chunks, body, init)


def summarize(counts: np.ndarray, what: str) -> str:
    return (f"{what} per node: min {counts.min()}, median {int(np.median(counts))}, "
            f"max {counts.max()}")
