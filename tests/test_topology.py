"""Neighbour graphs: degrees, symmetry, connectivity, edge lists and mixing weights."""

import numpy as np
import pytest

from divjax.config import ConfigError, SimConfig
from divjax.network.topology import (
    adjacency,
    is_connected,
    metropolis_hastings,
    neighbor_table,
)


def graph(n, name, **kw):
    return adjacency(SimConfig(n_nodes=n, topology=name, fanout=1, **kw))


@pytest.mark.parametrize("n,name,degree", [(6, "complete", 5), (7, "ring", 2), (16, "torus", 4),
                                           (9, "torus", 4), (10, "regular:3", 3),
                                           (60, "regular:6", 6), (12, "regular:2", 2),
                                           (2, "regular:1", 1)])
def test_topology__simple_symmetric_connected_with_the_right_degree(n, name, degree):
    adj = graph(n, name)
    assert adj.shape == (n, n) and adj.dtype == bool
    np.testing.assert_array_equal(adj, adj.T)
    assert not adj.diagonal().any()
    np.testing.assert_array_equal(adj.sum(1), degree)
    assert is_connected(adj)


def test_topology__random_regular_is_seeded_and_random():
    a = graph(20, "regular:4", data_seed=1)
    np.testing.assert_array_equal(a, graph(20, "regular:4", data_seed=1))
    assert not np.array_equal(a, graph(20, "regular:4", data_seed=2))


def test_topology__edge_list_file_with_node_count_header(tmp_path):
    path = tmp_path / "g.edges"
    path.write_text("4\n0 1\n1 2  # a comment\n2 3\n3 0\n")
    adj = graph(4, f"file:{path}")
    np.testing.assert_array_equal(adj, graph(4, "ring"))


@pytest.mark.parametrize("name,text", [("missing", None), ("outside", "0 9\n"),
                                       ("bad line", "0 1 2\n")])
def test_topology__bad_edge_list_is_a_config_error(tmp_path, name, text):
    path = tmp_path / "g.edges"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError):
        graph(4, f"file:{path}")


@pytest.mark.parametrize("n,name", [(5, "torus"), (5, "regular:3"), (5, "nope")])
def test_topology__invalid_names_are_config_errors(n, name):
    with pytest.raises(ConfigError):
        graph(n, name)


@pytest.mark.parametrize("name", ["complete", "ring", "torus", "regular:3"])
def test_metropolis_hastings__symmetric_doubly_stochastic_on_the_graph(name):
    adj = graph(16, name)
    W = metropolis_hastings(adj)
    np.testing.assert_allclose(W, W.T)
    np.testing.assert_allclose(W.sum(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(W.sum(1), 1.0, rtol=1e-12)
    assert (W >= 0).all() and (W[~adj & ~np.eye(16, dtype=bool)] == 0).all()
    # a connected graph's mixing contracts: second largest |eigenvalue| < 1
    assert np.sort(np.abs(np.linalg.eigvalsh(W)))[-2] < 1 - 1e-9


def test_metropolis_hastings__complete_graph_is_uniform_averaging():
    np.testing.assert_allclose(metropolis_hastings(graph(5, "complete")), np.full((5, 5), 0.2))


def test_neighbor_table__padded_with_own_id():
    adj = np.zeros((3, 3), bool)
    adj[0, 1] = adj[1, 0] = adj[0, 2] = adj[2, 0] = True
    table, degree = neighbor_table(adj)
    np.testing.assert_array_equal(degree, [2, 1, 1])
    np.testing.assert_array_equal(table, [[1, 2], [0, 1], [0, 2]])
