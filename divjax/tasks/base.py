"""Learning problems as bundles of pure functions (`Task`), and the synthetic task.

A task is what the engine needs to train and evaluate node models: `init`, `loss`,
`sample_batch` and `evaluate`, each pure and jittable. The real data sets' tasks (CIFAR-10,
MovieLens) are built in `divjax.data`; every task name is listed in `divjax.tasks.registry.TASKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import SimConfig


class Task(NamedTuple):
    """A learning problem as pure functions over device-resident data.

    init(key) -> params pytree of one model
    loss(params, batch) -> () float32, the training objective of one mini-batch
    sample_batch(key, node) -> batch of `cfg.batch_size` examples of node `node` (int32 scalar)
    evaluate(params, node) -> dict of () float32 metrics; node = -1 evaluates on the global
        test set (used for the average model), node >= 0 on that node's test view
    """

    name: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any], jax.Array]
    sample_batch: Callable[[jax.Array, jax.Array], Any]
    evaluate: Callable[[Any, jax.Array], dict]
    metric_names: tuple          # keys of evaluate's dict, in display order
    primary: str                 # the metric a run is judged by ("acc", "loss", "rmse", ...)
    higher_is_better: bool       # for `primary`
    info: dict                   # host-side description (sizes, partition summary, source)
    # Optional: make_local_train(cfg, layout, tx) -> train_one(params (K, F), opt_state, key,
    # node) -> (params, opt_state), replacing the generic dense-gradient steps (e.g. sparse
    # row updates for matrix factorisation). It must compute the same result.
    make_local_train: Callable | None = None
    # Optional: make_flat_evaluate(layout) -> evaluate(params (K, F), node), equal to
    # evaluate(layout.unflatten(params), node) without unflattening the whole model (e.g.
    # matrix factorisation reads only the rows of the test ratings).
    make_flat_evaluate: Callable | None = None
    # Optional: compile this task's runs with XLA's default options instead of divjax's CPU
    # options (`divjax.engine.xla_options`; they change float rounding only). For small dense
    # models whose steps XLA's library fusions do faster: the least-squares task runs ~30%
    # faster with them (benchmarks/results/xla-options-ab-cpu-2026-12-05.md).
    xla_defaults: bool = False


def make_synthetic_task(cfg: SimConfig, dim: int = 16, outputs: int = 4,
                        samples_per_node: int = 64, heterogeneity: float = 1.0,
                        noise: float = 0.1) -> Task:
    """Least squares with per-node heterogeneity and a known optimum.

    Node i has inputs x ~ N(0, I_dim) and targets y = x W_i + b_i + noise, where
    (W_i, b_i) = (W, b) + heterogeneity * (its own offset); it holds `samples_per_node` training
    examples, and 16 test examples (no noise) enter the global test set. The global objective
    is the average of the node objectives on their training data; its exact minimiser gives the
    metrics `dist_opt` (squared distance of a model to the optimum) and `gap` (global training
    objective minus its minimum); `loss` is the objective on the global test set.

    The metrics are quadratic forms in the model: the second moments of all the data are summed
    once on the host (float64, O(n) work), so an evaluation is O(D^2) per node whatever n, and
    only the training examples (x, y) stay on the device, (n, samples_per_node, dim + outputs)
    float32, one copy. (Drawing examples from a key in every step instead would store nothing,
    but the generated bits then depend on how XLA compiles the surrounding program, and runs
    that should be bit-identical are not: tests/test_baseline_churn_loss.py.)
    """
    x, y, train, test = synthetic_data(cfg.data_seed, cfg.n_nodes, dim, outputs,
                                       samples_per_node, heterogeneity, noise)
    sol, opt_loss = _fit(*train)
    sol_test, test_loss = _fit(*test)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    x, y = f32(x), f32(y)
    opt = {"b": f32(sol[-1]), "w": f32(sol[:-1])}
    G, Gt, sol, sol_t = f32(train[0]), f32(test[0]), f32(sol), f32(sol_test)
    B = cfg.batch_size

    def init(key):
        k_w, k_b = jax.random.split(key)
        return {"b": 0.1 * jax.random.normal(k_b, (outputs,)),
                "w": 0.1 * jax.random.normal(k_w, (dim, outputs))}

    def predict(params, inputs):
        return inputs @ params["w"] + params["b"]

    def loss(params, batch):
        return 0.5 * jnp.mean(jnp.sum((predict(params, batch["x"]) - batch["y"]) ** 2, axis=-1))

    def sample_batch(key, node):
        idx = jax.random.randint(key, (B,), 0, samples_per_node)
        return {"x": x[node, idx], "y": y[node, idx]}

    def evaluate(params, node):
        del node  # one global test set
        T = jnp.concatenate([params["w"], params["b"][None]])        # (dim + 1, outputs)
        dist = sum(jnp.sum((params[k] - opt[k]) ** 2) for k in opt)
        d, dt = T - sol, T - sol_t
        return {"loss": test_loss + 0.5 * jnp.sum(dt * (Gt @ dt)),
                "gap": 0.5 * jnp.sum(d * (G @ d)), "dist_opt": dist}

    return Task(
        name="synthetic", init=init, loss=loss, sample_batch=sample_batch, evaluate=evaluate,
        metric_names=("loss", "gap", "dist_opt"), primary="loss", higher_is_better=False,
        info={"kind": "least squares", "dim": dim, "outputs": outputs,
              "samples_per_node": samples_per_node, "heterogeneity": heterogeneity,
              "noise": noise, "optimal_loss": float(opt_loss)},
        xla_defaults=True,
    )


def synthetic_data(seed: int, n: int, dim: int, outputs: int, samples_per_node: int,
                   heterogeneity: float, noise: float, chunk: int = 1 << 16,
                   node_chunk: int | None = None) -> tuple:
    """The synthetic task's data: (x (n, samples_per_node, dim) float32, y (n, samples_per_node,
    outputs) float32, train moments, test moments), host numpy.

    Bit for bit what drawing everything at once in float64 gives (`np.random.default_rng(seed)`:
    W, b, the node offsets, x, the noise, the test inputs, in that order), with the moments
    summed in blocks of `chunk` examples as `moments` does; but only `node_chunk` nodes' float64
    examples exist at a time (default: about `chunk` examples' worth), so the peak host memory is
    the float32 x and y plus O(dim * outputs) per node. The noise is drawn after all of x, so y
    redraws x chunk by chunk from a second generator restored to the state before x.
    """
    rng = np.random.default_rng(seed)
    spans = _spans(n, node_chunk or max(1, chunk // samples_per_node))
    w_true = rng.normal(size=(dim, outputs))
    b_true = rng.normal(size=(outputs,))
    w_node = np.empty((n, dim, outputs))
    for s, e in spans:
        w_node[s:e] = w_true + heterogeneity * rng.normal(size=(e - s, dim, outputs)) / np.sqrt(dim)
    b_node = b_true + heterogeneity * rng.normal(size=(n, outputs))
    redraw = np.random.Generator(type(rng.bit_generator)())
    redraw.bit_generator.state = rng.bit_generator.state
    x = _aligned_empty((n, samples_per_node, dim))
    for s, e in spans:
        x[s:e] = rng.normal(size=(e - s, samples_per_node, dim))
    y = _aligned_empty((n, samples_per_node, outputs))

    def train_examples():
        for s, e in spans:
            xs = redraw.normal(size=(e - s, samples_per_node, dim))
            ys = np.einsum("nmd,ndo->nmo", xs, w_node[s:e]) + b_node[s:e, None, :]
            ys += noise * rng.normal(size=ys.shape)
            y[s:e] = ys
            yield xs.reshape(-1, dim), ys.reshape(-1, outputs)

    def test_examples():
        for s, e in _spans(n, node_chunk or max(1, chunk // 16)):
            xs = rng.normal(size=(e - s, 16, dim))
            ys = np.einsum("nmd,ndo->nmo", xs, w_node[s:e]) + b_node[s:e, None, :]
            yield xs.reshape(-1, dim), ys.reshape(-1, outputs)

    train = _moment_sums(_rebatch(train_examples(), chunk), dim, outputs)
    test = _moment_sums(_rebatch(test_examples(), chunk), dim, outputs)
    return x, y, train, test


def _aligned_empty(shape: tuple, align: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an `align`-byte boundary: the CPU
    backend then takes it as a device array without a copy (`jnp.asarray` aliases it), which
    halves the build's peak host memory; other backends copy it to the device as usual."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + size].view(np.float32).reshape(shape)


def _spans(n: int, size: int) -> list:
    """[(start, end)] of consecutive ranges of at most `size` covering range(n)."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _rebatch(pieces, chunk: int):
    """The rows of consecutive (x (k, dim), y (k, outputs)) pieces regrouped into consecutive
    C-contiguous blocks of `chunk` rows (the last one shorter), as `moments` slices them; a piece
    that starts a block is sliced, not copied."""
    xs, ys, held = [], [], 0
    for x, y in pieces:
        xs.append(x)
        ys.append(y)
        held += len(x)
        if held >= chunk:
            X, Y = (xs[0], ys[0]) if len(xs) == 1 else (np.concatenate(xs), np.concatenate(ys))
            k = held - held % chunk
            for s in range(0, k, chunk):
                yield X[s:s + chunk], Y[s:s + chunk]
            xs, ys, held = [X[k:]], [Y[k:]], held - k
    if held:
        yield np.concatenate(xs), np.concatenate(ys)


def moments(x: np.ndarray, y: np.ndarray, chunk: int = 1 << 16) -> tuple:
    """(G (dim+1, dim+1) = mean xa^T xa with xa = [x, 1], C (dim+1, outputs) = mean xa^T y,
    y2 = mean |y|^2) of examples x (..., dim), y (..., outputs), float64, summed in chunks of
    examples (no copy of the whole data)."""
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    blocks = ((x[s:s + chunk], y[s:s + chunk]) for s in range(0, len(x), chunk))
    return _moment_sums(blocks, x.shape[1], y.shape[1])


def _moment_sums(blocks, d: int, o: int) -> tuple:
    """`moments` of the examples in consecutive blocks (xs (k, d), ys (k, o)), float64, summed
    block by block in order."""
    G, C, y2, count = np.zeros((d + 1, d + 1)), np.zeros((d + 1, o)), 0.0, 0
    for xs, ys in blocks:
        G[:d, :d] += xs.T @ xs
        G[:d, d] += xs.sum(0)
        C[:d] += xs.T @ ys
        C[d] += ys.sum(0)
        y2 += float(np.sum(ys * ys))
        count += len(xs)
    G[d, :d] = G[:d, d]
    G[d, d] = count
    return G / count, C / count, y2 / count


def _fit(G: np.ndarray, C: np.ndarray, y2: float) -> tuple[np.ndarray, float]:
    """(T (dim+1, outputs), its value): the minimiser of 0.5 mean |xa T - y|^2 from the
    moments, and the minimum (host float64)."""
    sol = np.linalg.solve(G, C)
    return sol, max(0.0, 0.5 * float(y2 - np.sum(sol * C)))


def classification_task(name: str, module: Any, x_train: np.ndarray, y_train: np.ndarray,
                        x_test: np.ndarray, y_test: np.ndarray, cfg: SimConfig,
                        seed: int = 0) -> Task:
    """A classification task from a user's Flax module and numpy arrays (an IID partition).

    module: a flax.linen Module mapping a batch of inputs (B, ...) to logits (B, classes);
    x_train (N, ...), y_train (N,) int labels in [0, classes); x_test, y_test the same for
    testing. The training examples are shuffled once with `seed` and dealt to the n nodes in
    equal contiguous shards (the first N mod n nodes get one more). Loss: softmax cross-
    entropy; metrics: "acc" (primary) and "loss" on the whole test set, for every node model
    and the average model. Example: examples/own_model_task.py.
    """
    import optax

    x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train)
    x_test, y_test = np.asarray(x_test, np.float32), np.asarray(y_test)
    n, N = cfg.n_nodes, len(x_train)
    if len(y_train) != N or len(x_test) != len(y_test) or len(x_test) == 0:
        raise ValueError(f"task {name!r}: x_train/y_train have {N}/{len(y_train)} rows and "
                         f"x_test/y_test {len(x_test)}/{len(y_test)}: they must match, and the "
                         f"test set must not be empty")
    if N < n:
        raise ValueError(f"task {name!r}: {N} training examples cannot give each of "
                         f"n_nodes={n} nodes one; use fewer nodes or more data")
    if np.issubdtype(y_train.dtype, np.floating) or y_train.min() < 0:
        raise ValueError(f"task {name!r}: y_train must hold integer class labels >= 0")
    order = np.random.default_rng(seed).permutation(N)
    shards = np.array_split(order, n)
    size = np.array([len(s) for s in shards], np.int32)
    table = np.zeros((n, size.max()), np.int32)
    for i, s in enumerate(shards):      # host side, once
        table[i, :len(s)] = s
    xs, ys = jnp.asarray(x_train), jnp.asarray(y_train, jnp.int32)
    xt, yt = jnp.asarray(x_test), jnp.asarray(y_test, jnp.int32)
    node_idx, node_size = jnp.asarray(table), jnp.asarray(size)
    B = cfg.batch_size

    def init(key):
        return module.init(key, xs[:1])

    def xent(params, x, y):
        logits = module.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def loss(params, batch):
        return xent(params, batch["x"], batch["y"])[0]

    def sample_batch(key, node):
        j = jax.random.randint(key, (B,), 0, node_size[node])
        idx = node_idx[node, j]
        return {"x": xs[idx], "y": ys[idx]}

    def evaluate(params, node):
        del node    # one test set for every node and for the average model
        value, logits = xent(params, xt, yt)
        return {"acc": jnp.mean(jnp.argmax(logits, -1) == yt), "loss": value}

    return Task(name=name, init=init, loss=loss, sample_batch=sample_batch, evaluate=evaluate,
                metric_names=("acc", "loss"), primary="acc", higher_is_better=True,
                info={"kind": "classification (user arrays)", "n_train": int(N),
                      "n_test": int(len(x_test)), "samples_per_node": size.tolist()})
