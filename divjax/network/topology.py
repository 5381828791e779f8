"""Static neighbour graphs as padded arrays: complete, ring, torus, random d-regular, edge list."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import ConfigError, SimConfig


def adjacency(cfg: SimConfig) -> np.ndarray:
    """(n, n) bool symmetric adjacency without self-loops, for cfg.topology.

    Names: "complete", "ring", "torus", "regular:D" (random D-regular, seeded by data_seed),
    or "file:PATH" (an edge list, one "i j" pair per line, 0-based).
    This is the dense view, O(n^2): the engine draws peers from `neighbors(cfg)` instead, which
    builds no (n, n) array for the built-in graphs (ring, torus and regular:D here are the dense
    view of those tables, so both always describe the same graph).
    """
    n, name = cfg.n_nodes, cfg.topology
    adj = np.zeros((n, n), bool)
    if name == "complete":
        adj[:] = True
    elif name in ("ring", "torus") or name.startswith("regular:"):
        table, degree = neighbors(cfg)
        rows = np.repeat(np.arange(n), degree)
        adj[rows, table[np.arange(table.shape[1]) < degree[:, None]]] = True
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


def _random_regular(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random connected d-regular graph as its (n, d) sorted neighbour table and degrees: a
    circulant d-regular graph randomised by degree-preserving double-edge swaps that keep it
    simple; redrawn until connected. O(n d) memory (edges and a set of them, no (n, n) array);
    the swaps are a Python loop of 10 n d / 2 steps drawn one at a time, so that the graphs
    stay the ones drawn before (about 2 minutes at n = 262,144, d = 4, on a loaded CPU)."""
    if d < 1 or d >= n or (n * d) % 2 or (d == 1 and n > 2):
        raise ConfigError(f"topology='regular:{d}' needs 1 <= d < n, n*d even and, for a "
                          f"connected graph, d >= 2 unless n = 2 (n={n})")
    rng = np.random.default_rng(seed)
    if d == 2:  # the connected 2-regular graphs are the Hamiltonian cycles
        order = rng.permutation(n)
        return _table_of_edges(n, np.stack([order, np.roll(order, 1)], 1))
    for _ in range(100):
        edges = _swap_edges(_circulant_edges(n, d), n, rng)
        table, degree = _table_of_edges(n, np.asarray(edges, np.int64).reshape(-1, 2))
        if table_is_connected(table, degree):
            return table, degree
    raise ConfigError(f"could not draw a connected random {d}-regular graph on {n} nodes")


def _circulant_edges(n: int, d: int) -> np.ndarray:
    """(n d / 2, 2) edges (u < v) of the circulant d-regular graph, in row-major order (the order
    `np.argwhere(np.triu(adj))` lists them in: the swaps draw edges by their index)."""
    i = np.arange(n)
    pairs = [np.stack([i, (i + k) % n], 1) for k in range(1, d // 2 + 1)]
    if d % 2:  # n is even here: connect opposite nodes
        pairs.append(np.stack([i, (i + n // 2) % n], 1))
    pairs = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(pairs, axis=0)  # sorted by (u, v), duplicates (u, v) = (v, u) once


def _swap_edges(edges: np.ndarray, n: int, rng: np.random.Generator) -> list:
    """10 E degree-preserving double-edge swaps that keep the graph simple (E = len(edges)),
    drawing exactly what the dense version drew (two edge indices, then a coin per step)."""
    edges = edges.tolist()
    present = {min(u, v) * n + max(u, v) for u, v in edges}
    for _ in range(10 * len(edges)):
        e, f = rng.integers(len(edges), size=2)
        u, v = edges[e]
        x, y = edges[f] if rng.random() < 0.5 else edges[f][::-1]
        if (len({u, v, x, y}) < 4 or min(u, x) * n + max(u, x) in present
                or min(v, y) * n + max(v, y) in present):
            continue
        present -= {min(u, v) * n + max(u, v), min(x, y) * n + max(x, y)}
        present |= {min(u, x) * n + max(u, x), min(v, y) * n + max(v, y)}
        edges[e], edges[f] = [u, x], [v, y]
    return edges


def _table_of_edges(n: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded neighbour table (rows sorted, padding = own id) of an undirected edge list (E, 2)."""
    src = np.concatenate([edges[:, 0], edges[:, 1]])
    dst = np.concatenate([edges[:, 1], edges[:, 0]])
    return table_of_candidates(n, src, dst)


def table_of_candidates(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The padded neighbour table of the directed pairs src -> dst (repeats and self-loops
    dropped): what `neighbor_table(adj)` gives for the adjacency of those pairs, in O(E log E)
    without building it. Returns (n, max(1, max degree)) int32 (each row sorted, padded with the
    node's own id) and (n,) int32 degrees."""
    keys = np.unique(np.asarray(src, np.int64) * n + np.asarray(dst, np.int64))
    s, t = keys // n, keys % n
    keep = s != t
    s, t = s[keep], t[keep]
    degree = np.bincount(s, minlength=n).astype(np.int32)
    width = max(1, int(degree.max(initial=0)))
    table = np.tile(np.arange(n, dtype=np.int32)[:, None], (1, width))
    start = np.concatenate([[0], np.cumsum(degree)[:-1]])
    table[s, np.arange(s.size) - start[s]] = t   # keys are sorted by (s, t)
    return table, degree


def _sorted_rows(n: int, near: np.ndarray, distinct: bool) -> tuple[np.ndarray, np.ndarray]:
    """The table of (n, c) candidate neighbours per node: sorted rows when they are known to be
    distinct and never the node itself (O(n c)), else `table_of_candidates` (small graphs)."""
    if not distinct:
        return table_of_candidates(n, np.repeat(np.arange(n), near.shape[1]), near.ravel())
    return (np.sort(near, axis=1).astype(np.int32),
            np.full(n, near.shape[1], np.int32))


def table_is_connected(table: np.ndarray, degree: np.ndarray) -> bool:
    """Whether the graph of a padded neighbour table is connected (breadth-first, O(n d) per
    level; padding entries point at the node itself)."""
    n = table.shape[0]
    seen = np.zeros(n, bool)
    seen[0] = True
    frontier = np.array([0])
    while frontier.size:
        reached = np.unique(table[frontier].ravel())
        frontier = reached[~seen[reached]]
        seen[frontier] = True
    return bool(seen.all())


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


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class CompleteNeighbors:
    """The padded neighbour table of the complete graph on n nodes, never materialised.

    Row i lists every node but i in increasing order, so column p holds p + (p >= i): indexing
    computes that instead of reading an (n, n - 1) table. `table[node, cols]` (any broadcastable
    integer arrays) and `table[node][cols]` give exactly what the materialised table gave.
    A static pytree (no leaves): it can sit in a `Context` under jit and vmap.
    """

    n: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, max(1, self.n - 1))

    dtype = np.dtype(np.int32)

    def __getitem__(self, index):
        if isinstance(index, tuple):
            node, col = index
            return skip_self(node, col)
        return _CompleteRow(index)

    def materialize(self) -> np.ndarray:
        """The (n, n - 1) table itself (tests and small n only: O(n^2))."""
        return neighbor_table(np.ones((self.n, self.n), bool) & ~np.eye(self.n, dtype=bool))[0]


@dataclasses.dataclass(frozen=True)
class _CompleteRow:
    node: Any

    def __getitem__(self, col):
        return skip_self(self.node, col)


def skip_self(node, col):
    """Column `col` of row `node` of the complete graph's neighbour table: col + (col >= node),
    int32 (broadcast over node and col)."""
    col = jnp.asarray(col, jnp.int32)
    return col + (col >= node).astype(jnp.int32)


def neighbors(cfg: SimConfig) -> tuple[np.ndarray | CompleteNeighbors, np.ndarray]:
    """The engine's neighbour lists of cfg.topology: a padded (n, max_degree) int32 table
    (rows sorted, padding = own id; what `neighbor_table(adjacency(cfg))` gives) and (n,) int32
    degrees, without any (n, n) array for the built-in graphs: `CompleteNeighbors(n)` for the
    complete graph, O(n degree) tables for ring, torus and regular:D. Only a user's edge list
    (file:PATH) goes through the dense adjacency."""
    n, name = cfg.n_nodes, cfg.topology
    i = np.arange(n)
    if name == "complete":
        return CompleteNeighbors(n), np.full(n, max(0, n - 1), np.int32)
    if name == "ring":
        return _sorted_rows(n, np.stack([(i - 1) % n, (i + 1) % n], 1), distinct=n >= 3)
    if name == "torus":
        side = int(math.isqrt(n))
        if side * side != n:
            raise ConfigError(f"topology='torus' needs a square n_nodes, got n_nodes={n}")
        r, c = i // side, i % side
        near = [r * side + (c + 1) % side, r * side + (c - 1) % side,
                ((r + 1) % side) * side + c, ((r - 1) % side) * side + c]
        return _sorted_rows(n, np.stack(near, 1), distinct=side >= 3)
    if name.startswith("regular:"):
        try:
            d = int(name.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"topology={name!r}: D in regular:D must be a whole number, "
                              "e.g. regular:4") from None
        return _random_regular(n, d, cfg.data_seed)
    return neighbor_table(adjacency(cfg))   # file:PATH (or an unknown name: its error)


def edges(cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every directed edge of cfg.topology as (sender, receiver) (E,) int32, in increasing order
    of the sender, then of the receiver: what `np.nonzero(adjacency(cfg))` gives, built from the
    neighbour lists in O(E) (no (n, n) array for the built-in graphs; a complete graph has
    n (n - 1) edges, so its list is O(n^2) all the same)."""
    table, degree = neighbors(cfg)
    n = cfg.n_nodes
    degree = np.asarray(degree, np.int64)
    sender = np.repeat(np.arange(n, dtype=np.int32), degree)
    col = (np.arange(sender.size, dtype=np.int64)
           - np.repeat(np.cumsum(degree) - degree, degree)).astype(np.int32)
    if isinstance(table, CompleteNeighbors):
        return sender, col + (col >= sender).astype(np.int32)
    return sender, np.asarray(table)[sender, col].astype(np.int32)


def device_neighbors(table: np.ndarray | CompleteNeighbors) -> jax.Array | CompleteNeighbors:
    """A host neighbour table on the device (`CompleteNeighbors` stays as it is: nothing to put
    there)."""
    return table if isinstance(table, CompleteNeighbors) else jnp.asarray(table)


def table_width(cfg: SimConfig) -> int:
    """Columns of the neighbour table `neighbors(cfg)` builds, in closed form for the built-in
    graphs (0 for the complete graph: nothing is stored); a file's graph is read to size it."""
    n, name = cfg.n_nodes, cfg.topology
    if name == "complete":
        return 0
    if name == "ring":
        return 2 if n >= 3 else 1
    if name == "torus":
        side = int(math.isqrt(n))
        return 4 if side >= 3 else max(1, 2 * (side - 1))
    if name.startswith("regular:"):
        try:
            return max(1, int(name.split(":", 1)[1]))
        except ValueError:
            pass
    if name.startswith("file:"):   # its widest row, from the edge list alone (O(E))
        edges = read_edge_list(Path(name.split(":", 1)[1]))
        edges = edges[(edges.min(1, initial=0) >= 0) & (edges.max(1, initial=0) < n)]
        both = np.concatenate([edges, edges[:, ::-1]])
        return int(table_of_candidates(n, both[:, 0], both[:, 1])[0].shape[1])
    return int(neighbors(cfg)[0].shape[1])
