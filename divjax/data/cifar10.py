"""The CIFAR-10 task: GN-LeNet on a partition of the training images (kshard, iid, Dirichlet).

Evaluation (`evaluate(params, node)`), in fixed-size chunks so memory per call is bounded: node
>= 0 evaluates on a fixed, class-balanced subset of the test set (default 1000 images; every node
the same subset, as the authors test every node on the global test set); node = -1 (the average
model) on `eval_global` images (default all 10,000). With `cfg.validation_share > 0`, the
held-out training images (`hold_out`: a share of every node's own images) take the test set's
place in both views, in the same class-balanced order; the test arrays are then dropped before
anything is built, so they cannot be read. Metrics `acc` (fraction correct, primary)
and `loss` (mean cross-entropy). The variants registered by name (`cifar10-iid`,
`cifar10-dirichlet0.5`, `cifar10-quick`, ...) are listed in `divjax.tasks.registry.TASKS`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from divjax.tasks import models
from divjax.config import SimConfig
from divjax.data.cifar10_files import CifarArrays
from divjax.data.partitions import (
    chunked_sums,
    evaluated_on,
    hold_out,
    padded_table,
    partition_labels,
    summarize,
    validation_union,
)
from divjax.data.sources import load_cifar10
from divjax.tasks.base import Task


def balanced_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """(len(labels),) int32 positions in a fixed, class-balanced order: rank within class
    (random, from SeedSequence([seed, 1])), then class; its prefixes are the evaluation views."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = rng.permutation(where.size)
    return np.lexsort((labels, rank)).astype(np.int32)


def _eval_source(arrays: CifarArrays, parts: list[np.ndarray], share: float,
                 seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """(training parts, x, y, order): the images evaluated on and their class-balanced order:
    the test set, or with share > 0 the held-out training images (`hold_out`)."""
    if share == 0:
        return parts, arrays.x_test, arrays.y_test, balanced_order(arrays.y_test, seed)
    parts, held = hold_out(parts, share, seed)
    union = validation_union(held, "CIFAR-10")
    order = union[balanced_order(arrays.y_train[union], seed)].astype(np.int32)
    return parts, arrays.x_train, arrays.y_train, order


def make_cifar10_task(cfg: SimConfig, partition: str = "kshard", shards: int = 5,
                      alpha: float = 0.5, eval_node: int = 1000, eval_global: int = 10000,
                      eval_batch: int = 100, name: str = "cifar10") -> Task:
    """CIFAR-10 with GN-LeNet; `partition` in kshard (paper, shards=5) / iid / dirichlet(alpha).

    eval_node: test images each node's model is evaluated on (a fixed class-balanced subset);
    eval_global: test images of the average model (node = -1); eval_batch: images per evaluation
    step (bounds memory: the engine vmaps `cfg.eval_chunk` nodes, so peak activations are about
    eval_chunk * eval_batch * 128 KiB). `cfg.validation_share` > 0: held-out training images
    instead of test images (`_eval_source`).
    """
    arrays, source = load_cifar10(cfg.data_dir)
    share = cfg.validation_share
    if share > 0:   # the test set is not read at all
        arrays = arrays._replace(x_test=None, y_test=None)
    parts = partition_labels(arrays.y_train, cfg.n_nodes, partition, cfg.data_seed, shards,
                             alpha)
    parts, x_eval, y_eval, order = _eval_source(arrays, parts, share, cfg.data_seed)
    node_idx, node_size = padded_table(parts)
    hist = np.stack([np.bincount(arrays.y_train[p], minlength=models.NUM_CLASSES) for p in parts])
    T = len(order)
    eval_node, eval_global = min(eval_node, T), min(eval_global, T)
    views, view_size = padded_table([order[:eval_node], order[:eval_global]],
                                    multiple=eval_batch)

    x_train, y_train = jnp.asarray(arrays.x_train), jnp.asarray(arrays.y_train)
    x_eval_d, y_eval_d = jnp.asarray(x_eval), jnp.asarray(y_eval)
    node_idx_d, node_size_d = jnp.asarray(node_idx), jnp.asarray(node_size)
    views_d, view_size_d = jnp.asarray(views), jnp.asarray(view_size)
    init, logits = models.cnn_functions()
    B = cfg.batch_size

    def normalize(x):                         # uint8 HWC -> float32 in [-1, 1] (authors' 0.5/0.5)
        return (x.astype(jnp.float32) / 255.0 - 0.5) / 0.5

    def loss(params, batch):
        return jnp.mean(models.cross_entropy(logits(params, normalize(batch["x"])), batch["y"]))

    def sample_batch(key, node):
        j = jax.random.randint(key, (B,), 0, node_size_d[node])
        idx = node_idx_d[node, j]
        return {"x": x_train[idx], "y": y_train[idx]}

    def evaluate(params, node):
        row = jnp.where(node < 0, 1, 0)

        def sums(idx, mask):
            out = logits(params, normalize(x_eval_d[idx]))
            y = y_eval_d[idx]
            correct = (jnp.argmax(out, -1) == y) & mask
            ce = jnp.where(mask, models.cross_entropy(out, y), 0.0)
            return {"correct": jnp.sum(correct.astype(jnp.float32)), "ce": jnp.sum(ce)}

        tot = chunked_sums(sums, views_d, view_size_d, row, eval_batch,
                           {"correct": jnp.float32(0), "ce": jnp.float32(0)})
        count = view_size_d[row].astype(jnp.float32)
        return {"acc": tot["correct"] / count, "loss": tot["ce"] / count}

    classes = (hist > 0).sum(1)
    info = {
        "kind": "CIFAR-10 image classification, GN-LeNet", "source": source,
        "partition": partition, "shards": shards if partition == "kshard" else None,
        "alpha": alpha if partition == "dirichlet" else None,
        "params": models.GNLENET_PARAMS, "n_train": int(node_size.sum()),
        "n_test": int(T), "eval_node_images": int(eval_node),
        "eval_global_images": int(eval_global),
        "samples_per_node": node_size.tolist(), "classes_per_node": classes.tolist(),
        "class_histogram": hist.tolist(), "evaluated_on": evaluated_on(share),
        "summary": f"{summarize(node_size, 'samples')}; {summarize(classes, 'classes')}",
    }
    if share > 0:
        info.update(n_validation=info.pop("n_test"),
                    source=f"{source}; evaluated on: {evaluated_on(share)}")
    return Task(name=name, init=init, loss=loss, sample_batch=sample_batch, evaluate=evaluate,
                metric_names=("acc", "loss"), primary="acc", higher_is_better=True, info=info)
