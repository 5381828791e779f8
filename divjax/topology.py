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
        edges, declared = read_edge_list(path, with_header=True)
        if declared is not None and declared != n:
            raise ConfigError(f"topology file {path} declares {declared} nodes (first line) but "
                              f"n_nodes={n}: set --n-nodes {declared}, or use a file for {n} "
                              f"nodes")
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ConfigError(f"topology file {path} names nodes outside 0..{n - 1} "
                              f"(found {edges.min()}..{edges.max()}): node ids are 0-based; "
                              f"set --n-nodes {edges.max() + 1} or fix the file")
        adj[edges[:, 0], edges[:, 1]] = adj[edges[:, 1], edges[:, 0]] = True
        np.fill_diagonal(adj, False)
        isolated = np.flatnonzero(~adj.any(1))
        if isolated.size:
            raise ConfigError(f"topology file {path} gives {isolated.size} of n_nodes={n} nodes "
                              f"no edge (nodes {_ids(isolated)}): the file describes fewer "
                              f"nodes than --n-nodes, or misses their edges; set --n-nodes to "
                              f"the file's node count or add the edges")
        if not is_connected(adj):
            parts = components(adj)
            raise ConfigError(f"topology file {path} is disconnected: {len(parts)} groups of "
                              f"nodes never exchange models (sizes "
                              f"{sorted(map(len, parts), reverse=True)}; node 0's group: "
                              f"{_ids(parts[0])}): add edges between them")
    else:
        raise ConfigError(f"topology={name!r} is unknown: use complete, ring, torus, "
                          "regular:D or file:PATH")
    np.fill_diagonal(adj, False)
    return adj


def read_edge_list(path: Path, with_header: bool = False):
    """(E, 2) int64 edges of a text edge list: one "i j" pair per line (0-based), "#" comments.

    A first line holding a single number (the node count, as in decentralizepy's `.edges` files
    used by the DivShare authors) is the header; `with_header=True` returns (edges, node count
    or None). Anything else that is not two whole numbers is a ConfigError naming the line.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"topology file {path} cannot be read ({e}): give a text file with "
                          "one 'i j' pair (0-based node ids) per line") from e
    rows, header = [], None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            values = [int(x) for x in fields]
        except ValueError:
            values = None
        if values is not None and len(values) == 1 and not rows and header is None:
            header = values[0]  # header: node count
            continue
        if values is None or len(values) != 2:
            raise ConfigError(f"topology file {path}, line {number}: {line.strip()!r} is not an "
                              "'i j' pair of 0-based node ids (an optional first line holds "
                              "the node count)")
        rows.append(tuple(values))
    edges = np.array(rows, np.int64).reshape(-1, 2)
    return (edges, header) if with_header else edges


def components(adj: np.ndarray) -> list[np.ndarray]:
    """The connected components of the undirected graph `adj` (n, n), node 0's first."""
    n = adj.shape[0]
    left, parts = np.ones(n, bool), []
    while left.any():
        seen = np.zeros(n, bool)
        seen[np.flatnonzero(left)[0]] = True
        frontier = seen.copy()
        while frontier.any():
            frontier = adj[frontier].any(0) & ~seen
            seen |= frontier
        parts.append(np.flatnonzero(seen))
        left &= ~seen
    return parts


def _ids(ids: np.ndarray, limit: int = 8) -> str:
    ids = [int(i) for i in ids]
    return ", ".join(map(str, ids[:limit])) + (f", ... ({len(ids)} in all)" if len(ids) > limit
                                               else "")


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
