"""Issue 33: nothing an algorithm or the synthetic task computes is per pair of nodes.

Every array of a whole run (state, temporaries, constants: every variable of the traced program,
sub-programs included) has at most one axis of size >= n, for D-PSGD and Epidemic Learning
(their mixing was an (n, n) matrix), DivShare and Swift, on the synthetic task (whose
evaluation read the union of all nodes' data: (n, n * 64, outputs)). And D-PSGD's O(n degree)
mixing equals the dense Metropolis-Hastings product, with loss and churn.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from divjax.algorithms import mh_mixing
from divjax.config import SimConfig, default_hparams
from divjax.network.links import message_lost
from divjax.engine.sim import make_run
from divjax.network.topology import CompleteNeighbors, adjacency, metropolis_hastings, neighbors

N = 96   # no other axis of the small configuration reaches it (K F, batch, steps, slots)


def small(**changes) -> SimConfig:
    base = SimConfig(task="synthetic", n_nodes=N, n_fragments=4, fanout=3, local_steps=2,
                     batch_size=4, tick_s=0.01, duration_s=0.3, eval_every_s=0.3,
                     compute_s=0.1)
    return base.replace(**changes)


def shapes(jaxpr):
    """Every shape of a (closed) jaxpr's variables and constants, sub-jaxprs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for v in list(jaxpr.invars) + list(jaxpr.constvars):
        yield getattr(v.aval, "shape", ())
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield getattr(v.aval, "shape", ())
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    yield from shapes(sub)


def pair_shapes(cfg: SimConfig) -> list:
    run = make_run(cfg)
    jaxpr = jax.make_jaxpr(run)(jax.random.key(0), default_hparams(cfg))
    n = cfg.n_nodes
    return sorted({s for s in shapes(jaxpr) if sum(d >= n for d in s) >= 2})


@pytest.mark.parametrize("algorithm,changes", [
    ("dpsgd", {}), ("dpsgd", {"topology": "ring", "fanout": 2}),
    ("dpsgd", {"churn_rate": 0.2, "churn_mean_s": 0.1}),
    ("dpsgd", {"topology": "ring", "fanout": 2, "loss_rate": 0.2}),
    ("dpsgd", {"loss_rate": 0.2}),
    ("epidemic", {}), ("epidemic", {"loss_rate": 0.2}),
    ("divshare", {}), ("swift", {}),
])
def test_run__no_array_has_two_node_axes(algorithm, changes, monkeypatch):
    # D-PSGD's loss draws n per sender (the run's draws), in blocks of DRAW_BLOCK // n senders
    monkeypatch.setattr(mh_mixing, "DRAW_BLOCK", N * 8)
    assert pair_shapes(small(algorithm=algorithm, **changes)) == []


@pytest.mark.parametrize("algorithm", ["divshare", "epidemic"])
def test_sweep_program__no_array_has_two_node_axes(algorithm):
    """The sweep's program (a vmap over seeds of a vmap over grid points, the learning rate
    and every node's upload bandwidth traced per point) keeps per-point arrays (points, n, ...),
    never (n, n)."""
    from divjax.frontends.sweep_grid import hparams_for, stack_hparams
    from divjax.frontends.sweep_run import make_batched

    cfg = small(algorithm=algorithm)
    hps = [hparams_for(cfg, {"lr": lr, "fast_mbps": mbps})
           for lr, mbps in ((0.05, 60.0), (0.1, 30.0), (0.2, 10.0))]
    hp, hp_axes = stack_hparams(hps)
    grid = make_batched(make_run(cfg, hp=hps[0]), hp_axes, configs=3, seeds=2)
    jaxpr = jax.make_jaxpr(grid)(jax.random.split(jax.random.key(0), 2), hp)
    assert hp_axes.lr == 0 and hp_axes.upload_bps == 0 and hp.upload_bps.shape == (3, N)
    assert sorted({s for s in shapes(jaxpr) if sum(d >= N for d in s) >= 2}) == []


def test_synthetic_task__one_copy_of_its_data_and_evaluation_independent_of_n():
    """The task holds its training examples once, (n, 64, 16 + 4) float32 (no union copy, no
    test set: the metrics are quadratic forms in second moments summed at build), and
    evaluates one model in O(D^2), not on the union of all nodes' data."""
    from divjax.engine.memory import task_data_bytes
    from divjax.tasks.base import make_synthetic_task

    tasks = [make_synthetic_task(small(n_nodes=n)) for n in (N, 2 * N)]
    per_node = (task_data_bytes(tasks[1]) - task_data_bytes(tasks[0])) / N
    assert per_node == 64 * (16 + 4) * 4
    for task in tasks:
        params = task.init(jax.random.key(0))
        jaxpr = jax.make_jaxpr(task.evaluate)(params, jnp.int32(-1))
        assert max(max(s, default=0) for s in shapes(jaxpr)) < N


def dense_mix(cfg, y, k_spare, off):
    """The dense (n, n) D-PSGD mixing (the code before issue 33), as the oracle."""
    n = cfg.n_nodes
    W = jnp.asarray(metropolis_hastings(adjacency(cfg)), jnp.float32)
    ids = jnp.arange(n, dtype=jnp.int32)
    lost = message_lost(cfg, k_spare, ids, (n,), jnp.broadcast_to(ids, (n, n)))
    nbr = (W > 0) & ~jnp.eye(n, dtype=bool)
    sends = nbr if off is None else nbr & ~off[None, :]
    fails = jnp.zeros((n, n), bool) if lost is None else lost.T
    gone = sends & (fails if off is None else fails | off[:, None])
    missed = nbr & ~(sends & ~gone)
    x = (jnp.einsum("ij,jkf->ikf", jnp.where(missed, 0.0, W), y)
         + jnp.sum(jnp.where(missed, W, 0.0), axis=1)[:, None, None] * y)
    return x, jnp.sum(sends & ~gone, axis=1), jnp.sum(gone, axis=1)


@pytest.mark.parametrize("topology", ["complete", "ring", "regular:4"])
@pytest.mark.parametrize("loss,churn", [(0.0, False), (0.3, False), (0.0, True), (0.3, True)])
def test_dpsgd_mix__equals_dense_metropolis_hastings(topology, loss, churn, monkeypatch):
    monkeypatch.setattr(mh_mixing, "DRAW_BLOCK", 24 * 5)      # several blocks, one partial
    cfg = SimConfig(n_nodes=24, topology=topology, loss_rate=loss)
    k_y, k_spare, k_off = jax.random.split(jax.random.key(1), 3)
    y = jax.random.normal(k_y, (24, 3, 2))
    off = jax.random.bernoulli(k_off, 0.25, (24,)) if churn else None
    table, degree = neighbors(cfg)
    if isinstance(table, CompleteNeighbors):
        x, got, missing = mh_mixing.mix_complete(cfg, y, k_spare, off)
    else:
        x, got, missing = mh_mixing.mix_table(cfg, y, jnp.asarray(table), jnp.asarray(degree),
                                              k_spare, off)
    want_x, want_got, want_missing = dense_mix(cfg, y, k_spare, off)
    rows = slice(None) if off is None else ~np.asarray(off)   # offline rows are not used
    np.testing.assert_allclose(np.asarray(x)[rows], np.asarray(want_x)[rows], rtol=2e-6,
                               atol=2e-6)
    if got is None:
        assert loss == 0.0 and not churn
        return
    np.testing.assert_array_equal(got, want_got)
    np.testing.assert_array_equal(missing, want_missing)
