"""Static neighbour graphs as padded arrays: complete, ring, torus, random d-regular, edge list."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from divjax.config import ConfigError, SimConfig


def adjacency(cfg: SimConfig) -> np.ndarray:
    """(n, n) bool symmetric adjacency without self-loops, for cfg.topology.

    Names: "complete", "ring", "torus", "regular:D" (random D-regular, seeded by data_seed),
    or "file:PATH" (an edge list, one "i j" pair per line, 0-based).
    """
    n, name = cfg.n_nodes, cfg.topology
    adj = np.zeros((n, n), bool)
    if name == "complete":
        adj[:] = True
    elif name == "ring":
        i = np.arange(n)
        adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = True
    elif name == "torus":
        side = int(math.isqrt(n))
        if side * side != n:
            raise ConfigError(f"topology='torus' needs a square n_nodes, got n_nodes={n}")
        for r in range(side):
            for c in range(side):
                i = r * side + c
                for j in (r * side + (c + 1) % side, ((r + 1) % side) * side + c):
                    adj[i, j] = adj[j, i] = True
    elif name.startswith("regular:"):
        d = int(name.split(":", 1)[1])
        adj = _random_regular(n, d, cfg.data_seed)
    elif name.startswith("file:"):
        path = Path(name.split(":", 1)[1])
        if not path.is_file():
            raise ConfigError(f"topology edge list {path} does not exist: give a file with one "
                              "'i j' pair (0-based node ids) per line")
        edges = np.loadtxt(path, dtype=np.int64, ndmin=2, comments="#")
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ConfigError(f"topology file {path} names nodes outside 0..{n - 1}")
        adj[edges[:, 0], edges[:, 1]] = adj[edges[:, 1], edges[:, 0]] = True
    else:
        raise ConfigError(f"topology={name!r} is unknown: use complete, ring, torus, "
                          "regular:D or file:PATH")
    np.fill_diagonal(adj, False)
    return adj


def _random_regular(n: int, d: int, seed: int) -> np.ndarray:
    if d >= n or (n * d) % 2:
        raise ConfigError(f"topology='regular:{d}' needs d < n and n*d even (n={n})")
    rng = np.random.default_rng(seed)
    for _ in range(1000):  # pairing model with restarts
        stubs = rng.permutation(np.repeat(np.arange(n), d))
        a, b = stubs[0::2], stubs[1::2]
        if np.any(a == b):
            continue
        adj = np.zeros((n, n), bool)
        if np.any(adj[a, b]):
            continue
        pairs = set()
        ok = True
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            key = (min(x, y), max(x, y))
            if key in pairs:
                ok = False
                break
            pairs.add(key)
        if not ok:
            continue
        adj[a, b] = adj[b, a] = True
        return adj
    raise ConfigError(f"could not draw a random {d}-regular graph on {n} nodes")


def neighbor_table(adj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded neighbour lists: (n, max_degree) int32 (padding = own id) and (n,) degrees."""
    n = adj.shape[0]
    degree = adj.sum(1).astype(np.int32)
    width = max(1, int(degree.max()))
    table = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, width))
    for i in range(n):
        nb = np.flatnonzero(adj[i])
        table[i, : nb.size] = nb
    return table, degree
