"""The ring buffer on its own: nothing is visible before its arrival tick."""

import jax.numpy as jnp
import numpy as np
import pytest

from divjax.network import messages, links as network
from divjax.config import SimConfig


@pytest.mark.parametrize("delay", [1, 2, 3, 4])
def test_ring__arrival_tick_mode_message_arrives_exactly_at_its_tick(delay):
    cfg = SimConfig(n_nodes=3, fanout=1, delivery="arrival_tick")
    L, K, F = 4, 2, 1
    inbox = messages.init_inbox(cfg, L, K, F)
    counters = messages.init_counters(3, K, L + 1)
    table = network.LinkTable(jnp.full(3, 10), jnp.zeros(3, jnp.int32),
                              jnp.ones((3, K), jnp.int32), jnp.zeros(3, jnp.int32),
                              jnp.zeros((1, 1), jnp.int32))
    sched = network.Schedule(sent=jnp.ones((1, 1, K), bool),
                             leave_tick=jnp.full((1, 1, K), 5 + delay),
                             arrival=jnp.full((1, 1, K), 5 + delay),
                             drop_tick=jnp.array([15]), enqueue_tick=jnp.array([5]))
    inbox, _, _ = messages.push(cfg, inbox, counters, table, sched, jnp.array([0]),
                            jnp.array([True]), jnp.full((1, 1, K), 1),
                            jnp.ones((1, K, F)))
    seen = []
    for t in range(6, 6 + L):
        inbox = messages.arrive(cfg, inbox, jnp.int32(t))
        seen.append(float(inbox.pending_count[1].sum()))
    assert seen == [2.0 * (t >= 5 + delay) for t in range(6, 6 + L)]


@pytest.mark.parametrize("arrival", [11, 19, 20, 21, 29])
def test_ring__receiver_iteration_mode_joins_the_first_aggregation_at_or_after_arrival(arrival):
    cfg = SimConfig(n_nodes=3, fanout=1, delivery="receiver_iteration")
    B, K, F, c = 3, 1, 1, 10
    inbox = messages.init_inbox(cfg, B, K, F)
    counters = messages.init_counters(3, K, 40)
    table = network.LinkTable(jnp.full(3, c), jnp.zeros(3, jnp.int32),
                              jnp.ones((3, K), jnp.int32), jnp.zeros(3, jnp.int32),
                              jnp.zeros((1, 1), jnp.int32))
    sched = network.Schedule(sent=jnp.ones((1, 1, K), bool),
                             leave_tick=jnp.full((1, 1, K), arrival),
                             arrival=jnp.full((1, 1, K), arrival), drop_tick=jnp.array([20]),
                             enqueue_tick=jnp.array([10]))
    inbox, _, _ = messages.push(cfg, inbox, counters, table, sched, jnp.array([0]),
                            jnp.array([True]), jnp.full((1, 1, K), 2), jnp.ones((1, K, F)))
    got_at = []
    for t in (10, 20, 30):
        inbox = messages.clear_collected(cfg, inbox)
        inbox, total, count = messages.collect(cfg, inbox, jnp.array([2]), jnp.array([True]),
                                              table, jnp.int32(t))
        got_at.append(float(count.sum()))
    expect = [float(t >= arrival and t - c < arrival) for t in (10, 20, 30)]
    assert got_at == expect
    assert np.all(np.asarray(messages.clear_collected(cfg, inbox).count) == 0)


def test_sample_peers__distinct_never_self_and_uniform():
    import jax

    from divjax.algorithms.base import sample_peers
    from divjax.network.topology import adjacency, neighbor_table

    n, s = 6, 3
    nb, deg = neighbor_table(adjacency(SimConfig(n_nodes=n, fanout=1)))
    draw = jax.jit(jax.vmap(lambda k: sample_peers(k, jnp.int32(2), jnp.asarray(nb),
                                                   jnp.asarray(deg), (), s)))
    peers = np.asarray(draw(jax.random.split(jax.random.key(0), 20000)))
    assert peers.shape == (20000, s)
    assert (peers != 2).all()
    assert all(len(set(row)) == s for row in peers[:2000].tolist())
    freq = np.bincount(peers.ravel(), minlength=n)[[0, 1, 3, 4, 5]] / 20000
    np.testing.assert_allclose(freq, s / (n - 1), atol=0.015)   # each neighbour: s / (n - 1)
    # sparse topology: only the node's neighbours are ever drawn
    nb, deg = neighbor_table(adjacency(SimConfig(n_nodes=n, fanout=1, topology="ring")))
    ring = np.asarray(jax.vmap(lambda k: sample_peers(k, jnp.int32(2), jnp.asarray(nb),
                                                      jnp.asarray(deg), (4,), 2))(
        jax.random.split(jax.random.key(1), 50)))
    assert set(np.unique(ring).tolist()) == {1, 3}


def test_sample_peers__send_order_is_uniform():
    """Swift sends its model to its receivers in the order drawn: the first receiver must be
    uniform over the neighbours (Floyd's algorithm alone never puts the last neighbour first)."""
    import jax

    from divjax.algorithms.swift import swift_routes
    from divjax.network.topology import adjacency, neighbor_table

    n, s, draws = 8, 2, 20000
    nb, deg = neighbor_table(adjacency(SimConfig(n_nodes=n, fanout=s)))
    draw = jax.jit(jax.vmap(lambda k: swift_routes(k, jnp.int32(0), jnp.asarray(nb),
                                                   jnp.asarray(deg), s)))
    routes = np.asarray(draw(jax.random.split(jax.random.key(0), draws)))
    for position in range(s):
        freq = np.bincount(routes[:, position], minlength=n)[1:] / draws
        np.testing.assert_allclose(freq, 1 / (n - 1), atol=0.015)   # 3.5 sigma at 20,000
