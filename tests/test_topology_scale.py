"""Neighbour lists without (n, n) arrays (issue 33): the complete graph's peers are computed,
ring, torus and regular:D tables are built in O(n degree), and the memory model and the dry run
never build a per-pair array. The oracle is the dense code the engine used before (kept here)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divjax.network import topology
from divjax.algorithms.base import sample_peers
from divjax.config import SimConfig
from divjax.network.topology import CompleteNeighbors, is_connected, neighbor_table, neighbors


def old_adjacency(n, name, seed=0):
    """The dense adjacency of the built-in graphs exactly as divjax built it before issue 33."""
    adj = np.zeros((n, n), bool)
    if name == "complete":
        adj[:] = True
    elif name == "ring":
        i = np.arange(n)
        adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = True
    elif name == "torus":
        side = int(math.isqrt(n))
        for r in range(side):
            for c in range(side):
                i = r * side + c
                for j in (r * side + (c + 1) % side, ((r + 1) % side) * side + c):
                    adj[i, j] = adj[j, i] = True
    else:
        adj = old_random_regular(n, int(name.split(":")[1]), seed)
    np.fill_diagonal(adj, False)
    return adj


def old_random_regular(n, d, seed):
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    if d == 2:
        order = rng.permutation(n)
        adj = np.zeros((n, n), bool)
        adj[order, np.roll(order, 1)] = adj[np.roll(order, 1), order] = True
        return adj
    for _ in range(100):
        adj = np.zeros((n, n), bool)
        for k in range(1, d // 2 + 1):
            adj[i, (i + k) % n] = adj[(i + k) % n, i] = True
        if d % 2:
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
    raise AssertionError("no connected graph")


def cfg_of(n, name, seed=0):
    return SimConfig(n_nodes=n, topology=name, fanout=1, data_seed=seed)


@pytest.mark.parametrize("n,name,seed", [
    (2, "ring", 0), (3, "ring", 0), (17, "ring", 0), (1000, "ring", 0), (900, "torus", 0),
    (4, "torus", 0), (9, "torus", 0), (36, "torus", 0),
    (2, "regular:1", 0), (12, "regular:2", 3), (10, "regular:3", 0), (40, "regular:4", 1),
    (60, "regular:6", 2), (31, "regular:6", 5), (30, "regular:5", 7)])
def test_neighbors__sparse_tables_equal_the_old_dense_ones(n, name, seed):
    table, degree = neighbors(cfg_of(n, name, seed))
    old_table, old_degree = neighbor_table(old_adjacency(n, name, seed))
    assert table.dtype == old_table.dtype and degree.dtype == old_degree.dtype
    np.testing.assert_array_equal(table, old_table)
    np.testing.assert_array_equal(degree, old_degree)
    assert topology.table_width(cfg_of(n, name, seed)) == old_table.shape[1]


@pytest.mark.parametrize("n", [2, 3, 16, 61])
def test_complete_neighbors__index_like_the_old_table(n):
    nb, degree = neighbors(cfg_of(n, "complete"))
    old_table, old_degree = neighbor_table(old_adjacency(n, "complete"))
    assert isinstance(nb, CompleteNeighbors) and nb.shape == old_table.shape
    np.testing.assert_array_equal(degree, old_degree)
    np.testing.assert_array_equal(nb.materialize(), old_table)
    node = jnp.arange(n)[:, None]
    col = jnp.arange(n - 1)[None, :]
    np.testing.assert_array_equal(nb[node, col], old_table)
    np.testing.assert_array_equal(jax.vmap(lambda i: nb[i][jnp.arange(n - 1)])(jnp.arange(n)),
                                  old_table)


@pytest.mark.parametrize("n,count", [(2, 1), (5, 3), (64, 3), (1000, 6)])
@pytest.mark.parametrize("seed", [0, 1])
def test_sample_peers__table_free_complete_graph_draws_the_old_peers(n, count, seed):
    nb, degree = neighbors(cfg_of(n, "complete"))
    old = jnp.asarray(neighbor_table(old_adjacency(n, "complete"))[0])
    nodes = jnp.asarray(np.random.default_rng(seed).integers(n, size=7), jnp.int32)
    keys = jax.random.split(jax.random.key(seed), 7)
    deg = jnp.asarray(degree)
    for shape in [(), (4,)]:
        draw = lambda table: jax.jit(jax.vmap(lambda k, i: sample_peers(  # noqa: E731
            k, i, table, deg, shape, count)))(keys, nodes)
        new = draw(nb)
        assert new.dtype == jnp.int32
        np.testing.assert_array_equal(new, draw(old))
        own = np.asarray(nodes).reshape((-1,) + (1,) * (new.ndim - 1))
        assert not np.any(np.asarray(new) == own)   # never the node itself


@pytest.fixture
def no_dense_graph(monkeypatch):
    """Any (n, n) adjacency or padded table built from one is an error."""
    def refuse(*a, **k):
        raise AssertionError("built an (n, n) graph")
    monkeypatch.setattr(topology, "adjacency", refuse)
    monkeypatch.setattr(topology, "neighbor_table", refuse)
    monkeypatch.setattr(topology, "is_connected", refuse)


@pytest.mark.parametrize("name", ["complete", "ring", "torus"])
def test_neighbors__large_n_builds_no_dense_graph(no_dense_graph, name):
    n = 512 * 512
    table, degree = neighbors(cfg_of(n, name))
    assert degree.shape == (n,) and (isinstance(table, CompleteNeighbors) or table.shape[1] <= 4)


def test_neighbors__random_regular_at_large_n_is_linear(no_dense_graph):
    table, degree = neighbors(cfg_of(4_000, "regular:4"))
    assert table.shape == (4_000, 4) and (degree == 4).all()
    assert topology.table_is_connected(table, degree)


def test_dry_run__200k_nodes_builds_no_pair_array_nor_their_data(no_dense_graph, monkeypatch,
                                                                 capsys):
    """`divjax run --dry-run` at n = 200,000: no (n, n) graph, the task's data built only at
    small probe sizes, and the largest n it names counts the data per node (not as fixed)."""
    from divjax.frontends import cli
    from divjax.engine import memory, memory_scale
    from divjax.tasks import registry

    built = []
    make = registry.make_task
    monkeypatch.setattr(registry, "make_task", lambda cfg: built.append(cfg.n_nodes) or make(cfg))
    assert cli.main(["run", "--task", "synthetic", "--n-nodes", "200000", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert max(built) <= 2 * memory_scale.DRY_RUN_PROBE and "n=200000" in out
    per_node = float(out.split(" KiB per node")[0].rsplit("+ ", 1)[1]) * 2**10
    assert per_node > 5_000   # the synthetic task keeps 64 samples of 16 + 4 floats per node
    largest = int(out.split("with this config: ")[1].split()[0])
    assert largest * per_node <= memory.FRACTION * memory.available_memory_bytes()


def test_memory_model__counts_only_user_files_per_pair(tmp_path):
    cfg = SimConfig(n_nodes=50_000, fanout=1)
    assert memory_pairs(cfg) == 0
    assert memory_pairs(cfg.replace(topology="ring")) == 0
    path = tmp_path / "g.edges"
    path.write_text("0 1\n1 2\n0 2\n0 3\n")
    file_cfg = cfg.replace(topology=f"file:{path}")
    assert memory_pairs(file_cfg) == 50_000 ** 2   # the host adjacency of a user's edge list
    assert topology.table_width(file_cfg) == 3      # sized from the edge list, not built


def memory_pairs(cfg):
    from divjax.engine import memory

    return memory.memory_model(cfg, 68, available=1)["parts"]["pairs"]


@pytest.mark.parametrize("n,name", [(2, "ring"), (3, "ring"), (17, "ring"), (36, "torus"),
                                    (9, "torus"), (30, "regular:4"),
                                    (2, "complete"), (23, "complete")])
def test_edges__are_the_dense_adjacency_in_row_major_order(n, name):
    """`topology.edges` lists (sender, receiver) as np.nonzero of the dense adjacency does."""
    sender, receiver = topology.edges(cfg_of(n, name))
    want = np.nonzero(topology.adjacency(cfg_of(n, name)))
    assert sender.dtype == receiver.dtype == np.int32
    np.testing.assert_array_equal(sender, want[0])
    np.testing.assert_array_equal(receiver, want[1])


def test_edges__of_a_users_edge_list(tmp_path):
    path = tmp_path / "g.edges"
    path.write_text("0 1\n1 2\n0 3\n")
    cfg = cfg_of(4, f"file:{path}")
    np.testing.assert_array_equal(np.stack(topology.edges(cfg)),
                                  np.stack(np.nonzero(topology.adjacency(cfg))))


def test_dpsgd_download_round__at_large_n_builds_no_dense_graph(no_dense_graph):
    """D-PSGD's round with download limits orders a round's downloads from the edge list, not
    from an (n, n) adjacency (65,536 ring nodes: 4 GiB dense)."""
    from divjax.algorithms.dpsgd import make_dpsgd
    from divjax.config import default_hparams
    from divjax.network.links import concrete_link_table

    cfg = SimConfig(n_nodes=65_536, topology="ring", fanout=1, algorithm="dpsgd",
                    download_mbps=1.0, n_fragments=1, n_stragglers=0)
    table = concrete_link_table(cfg, default_hparams(cfg), 4 * 68)
    ticks = np.asarray(make_dpsgd(cfg).adjust_timing(cfg, table).compute_ticks)
    assert ticks.shape == (65_536,) and np.all(ticks == ticks[0]) and ticks[0] >= 1


def test_memory_model__counts_a_complete_dpsgd_rounds_downloads_per_pair():
    """D-PSGD with download limits on the complete graph orders n (n - 1) downloads a round:
    counted per pair (a clear refusal at large n, not an out-of-memory crash); on a ring, not."""
    cfg = SimConfig(n_nodes=50_000, fanout=1, algorithm="dpsgd", download_mbps=1.0)
    assert memory_pairs(cfg) >= 50_000 * 49_999 * 16
    assert memory_pairs(cfg.replace(topology="ring")) == 0
    assert memory_pairs(cfg.replace(download_mbps=0.0)) == 0
