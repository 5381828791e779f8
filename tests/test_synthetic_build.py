"""The synthetic task's data is generated chunk by chunk (issue 33: the build, not the engine,
was what stopped a million nodes): it must be bit for bit what the original all-at-once float64
generation gave, which is kept here as the independent reference."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from divjax.tasks.base import make_synthetic_task, synthetic_data


def old_moments(x, y, chunk=1 << 16):
    """The original `moments`, verbatim."""
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    d, o = x.shape[1], y.shape[1]
    G, C, y2 = np.zeros((d + 1, d + 1)), np.zeros((d + 1, o)), 0.0
    for s in range(0, len(x), chunk):
        xs, ys = x[s:s + chunk], y[s:s + chunk]
        G[:d, :d] += xs.T @ xs
        G[:d, d] += xs.sum(0)
        C[:d] += xs.T @ ys
        C[d] += ys.sum(0)
        y2 += float(np.sum(ys * ys))
    G[d, :d] = G[:d, d]
    G[d, d] = len(x)
    return G / len(x), C / len(x), y2 / len(x)


def old_data(seed, n, dim, outputs, samples_per_node, heterogeneity, noise, chunk=1 << 16):
    """The original generation of `make_synthetic_task`, verbatim: float64 x, y and moments."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=(dim, outputs))
    b_true = rng.normal(size=(outputs,))
    w_node = w_true + heterogeneity * rng.normal(size=(n, dim, outputs)) / np.sqrt(dim)
    b_node = b_true + heterogeneity * rng.normal(size=(n, outputs))
    x = rng.normal(size=(n, samples_per_node, dim))
    y = np.einsum("nmd,ndo->nmo", x, w_node) + b_node[:, None, :]
    y += noise * rng.normal(size=y.shape)
    train = old_moments(x, y, chunk)
    xt = rng.normal(size=(n, 16, dim))
    test = old_moments(xt, np.einsum("nmd,ndo->nmo", xt, w_node) + b_node[:, None, :], chunk)
    return x, y, train, test


def old_task_arrays(seed, n, dim=16, outputs=4, samples_per_node=64, heterogeneity=1.0,
                    noise=0.1):
    """What the original `make_synthetic_task` closed over, computed its way."""
    x, y, train, test = old_data(seed, n, dim, outputs, samples_per_node, heterogeneity, noise)
    sol = np.linalg.solve(train[0], train[1])
    opt_loss = max(0.0, 0.5 * float(train[2] - np.sum(sol * train[1])))
    sol_test = np.linalg.solve(test[0], test[1])
    test_loss = max(0.0, 0.5 * float(test[2] - np.sum(sol_test * test[1])))
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return {"x": f32(x), "y": f32(y), "opt": {"b": f32(sol[-1]), "w": f32(sol[:-1])},
            "G": f32(train[0]), "Gt": f32(test[0]), "sol": f32(sol), "sol_t": f32(sol_test),
            "test_loss": test_loss, "optimal_loss": opt_loss}


def captured(fn):
    """The variables a closure captured, by name."""
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))


def assert_bits_equal(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), f"{what}: {np.sum(a != b)} elements differ"


def assert_moments_equal(new, old, what):
    for name, a, b in zip(("G", "C", "y2"), new, old):
        assert_bits_equal(a, b, f"{what} {name}")


@pytest.mark.parametrize("n, dim, outputs, spn, chunk, node_chunk", [
    (8, 16, 4, 64, 1 << 16, None),        # the defaults, one block
    (1025, 16, 4, 64, 1 << 16, None),     # one node past the first 65,536-example block
    (1025, 16, 4, 64, 256, 7),            # node chunks that straddle the moment blocks
    (5000, 16, 4, 64, 1000, 33),
    (700, 5, 3, 100, 1 << 16, None),      # 65,536 is not a whole number of nodes' examples
    (301, 3, 2, 10, 96, 1),               # one node at a time; the test set's blocks too
])
def test_chunked_generation__bit_for_bit_the_all_at_once_generation(
        n, dim, outputs, spn, chunk, node_chunk):
    args = (11, n, dim, outputs, spn, 0.7, 0.3)
    x, y, train, test = synthetic_data(*args, chunk=chunk, node_chunk=node_chunk)
    x64, y64, train_old, test_old = old_data(*args, chunk=chunk)
    assert_bits_equal(x, x64.astype(np.float32), "x")
    assert_bits_equal(y, y64.astype(np.float32), "y")
    assert_moments_equal(train, train_old, "train")
    assert_moments_equal(test, test_old, "test")


@pytest.mark.parametrize("n", [8, 1025])
def test_make_synthetic_task__closes_over_the_original_arrays(n):
    cfg = tiny_config(n_nodes=n, data_seed=3)
    task = make_synthetic_task(cfg)
    got = {**captured(task.evaluate), **captured(task.sample_batch)}
    want = old_task_arrays(3, n)
    for name in ("x", "y", "G", "Gt", "sol", "sol_t"):
        assert_bits_equal(got[name], want[name], name)
    for k in ("b", "w"):
        assert_bits_equal(got["opt"][k], want["opt"][k], f"opt[{k}]")
    assert got["test_loss"] == want["test_loss"]
    assert task.info["optimal_loss"] == want["optimal_loss"]


def test_cpu_backend_takes_the_float32_data_without_a_copy():
    """x and y are allocated 64-byte aligned, so on the CPU `jnp.asarray` aliases them instead
    of holding a second copy during the build (the peak halves)."""
    import jax
    x, y, _, _ = synthetic_data(0, 1025, 16, 4, 64, 1.0, 0.1)
    for a in (x, y):
        assert a.ctypes.data % 64 == 0
        if jax.default_backend() == "cpu":
            assert jnp.asarray(a, jnp.float32).unsafe_buffer_pointer() == a.ctypes.data
