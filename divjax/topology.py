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
        edges = read_edge_list(path)
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ConfigError(f"topology file {path} names nodes outside 0..{n - 1}")
        adj[edges[:, 0], edges[:, 1]] = adj[edges[:, 1], edges[:, 0]] = True
    else:
        raise ConfigError(f"topology={name!r} is unknown: use complete, ring, torus, "
                          "regular:D or file:PATH")
    np.fill_diagonal(adj, False)
    return adj


def read_edge_list(path: Path) -> np.ndarray:
    """(E, 2) int64 edges of a text edge list: one "i j" pair per line (0-based), "#" comments.

    A first line holding a single number (the node count, as in decentralizepy's `.edges` files
    used by the DivShare authors) is skipped.
    """
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) == 1 and not rows:
            continue  # header: node count
        if len(fields) != 2:
            raise ConfigError(f"topology file {path}: line {line!r} is not an 'i j' pair")
        rows.append((int(fields[0]), int(fields[1])))
    return np.array(rows, np.int64).reshape(-1, 2)


def _random_regular(n: int, d: int, seed: int) -> np.ndarray:
    """A random connected d-regular graph: a circulant d-regular graph randomised by
    degree-preserving double-edge swaps that keep it simple; redrawn until connected."""
    if d < 1 or d >= n or (n * d) % 2 or (d == 1 and n > 2):
        raise ConfigError(f"topology='regular:{d}' needs 1 <= d < n, n*d even and, for a "
                          f"connected graph, d >= 2 unless n = 2 (n={n})")
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    if d == 2:  # the connected 2-regular graphs are the Hamiltonian cycles
        order = rng.permutation(n)
        adj = np.zeros((n, n), bool)
        adj[order, np.roll(order, 1)] = adj[np.roll(order, 1), order] = True
        return adj
    for _ in range(100):
        adj = np.zeros((n, n), bool)
        for k in range(1, d // 2 + 1):
            adj[i, (i + k) % n] = adj[(i + k) % n, i] = True
        if d % 2:  # n is even here: connect opposite nodes
            adj[i, (i + n // 2) % n] = True
        edges = np.argwhere(np.triu(adj))
        for _ in range(10 * len(edges)):
            e, f = rng.integers(len(edges), size=2)
            (u, v), (x, y) = edges[e], edges[f][:: 1 if rng.random() < 0.5 else -1]
            if len({u, v, x, y}) < 4 or adj[u, x] or adj[v, y]:
                continue
            adj[u, v] = adj[v, u] = adj[x, y] = adj[y, x] = False
            adj[u, x] = adj[x, u] = adj[v, y] = adj[y, v] = True
            edges[e], edges[f] = (u, x), (v, y)
        if is_connected(adj):
            return adj
    raise ConfigError(f"could not draw a connected random {d}-regular graph on {n} nodes")


def is_connected(adj: np.ndarray) -> bool:
    """Whether the undirected graph `adj` (n, n) is connected (breadth-first search)."""
    n = adj.shape[0]
    seen = np.zeros(n, bool)
    seen[0] = True
    frontier = seen.copy()
    while frontier.any():
        frontier = adj[frontier].any(0) & ~seen
        seen |= frontier
    return bool(seen.all())


def metropolis_hastings(adj: np.ndarray) -> np.ndarray:
    """(n, n) float64 Metropolis-Hastings mixing weights of an undirected graph:
    W_ij = 1 / (1 + max(deg_i, deg_j)) on edges, W_ii = 1 - sum_j W_ij; symmetric and doubly
    stochastic."""
    deg = adj.sum(1)
    W = np.where(adj, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(W, 1.0 - W.sum(1))
    return W


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
