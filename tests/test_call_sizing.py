"""One rule for what a built run may be called with (issue 30): everything sized when a run is
built (`sizing.SIZED_FIELDS`: rings, delay, training capacity, iteration and ping tables,
histories) is checked against the HParams of every call and every grid point
(`sizing.check_sizes`, on the host) and inside jit (`sim.init_errors`: an ERR_* flag, never a
wrong network); a sweep sizes each group for all of its points (`sweep.resolve_grid`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from test_downloads import congested_hparams, download_config

import divjax
from divjax.algorithms import ALGORITHMS
from divjax.config import ConfigError, default_hparams
from divjax.engine.sim import make_run
from divjax.engine.state import ERR_HPARAMS, ERR_SCHEDULE
from divjax.frontends.sweep import hparams_for, resolve_grid, sweep

# the compute times of congested_hparams, about 40% shorter (whole ticks)
FAST = jnp.array([0.03, 0.05, 0.07, 0.13, 0.04], jnp.float32)
SIZED = ("delay_ticks", "ring_ticks", "train_capacity", "iteration_slots", "inbox_history",
         "ping_slots")


def built_and_faster(algorithm: str):
    """(run built for congested_hparams, the same HParams with shorter compute times)."""
    cfg = download_config(algorithm=algorithm, duration_s=1.0)
    hp = congested_hparams(cfg)
    return make_run(cfg, hp=hp), hp.replace(compute_s=FAST)


@pytest.mark.parametrize("algorithm", ["divshare", "swift"])
def test_call_sizing__hparams_beyond_the_sized_download_table_raise_on_the_host(algorithm):
    """DivShare's and Swift's download tables hold the iterations of the HParams they were
    built for; a call with shorter iterations is refused before it runs (it lost the later
    iterations from the download FIFO: other delivered counts, errors 0)."""
    run, fast = built_and_faster(algorithm)
    with pytest.raises(ConfigError, match="iteration_slots=.*--iteration-slots"):
        divjax.jit(run)(jax.random.key(1), fast)


@pytest.mark.parametrize("algorithm", ["divshare", "swift"])
def test_call_sizing__hparams_beyond_the_sized_download_table_flag_inside_jit(algorithm):
    """The same HParams under a plain jax.jit and a vmap over both HParams (no host check):
    ERR_SCHEDULE in the state at tick 0 (`init_errors`), where DivShare reported errors 0."""
    run, fast = built_and_faster(algorithm)
    init = run.engine.init
    state = jax.jit(init)(jax.random.key(1), fast)
    assert int(state.errors) & ERR_SCHEDULE and int(state.first_error_tick) == 0
    slow = congested_hparams(run.engine.cfg)
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), slow, fast)
    states = jax.jit(jax.vmap(init, (None, 0)))(jax.random.key(1), both)
    assert [int(e) for e in states.errors] == [0, ERR_SCHEDULE]


@pytest.mark.parametrize("algorithm", ["divshare", "swift", "adpsgd"])
def test_call_sizing__a_grid_is_sized_as_its_largest_single_run(algorithm):
    """resolve_grid: every sized field the largest any single run of the grid gets (it kept
    ring, delay and capacity only: iteration_slots fell back to the base config's)."""
    cfg = download_config(algorithm=algorithm, fanout=4 if algorithm == "adpsgd" else 2,
                          download_mbps=0.4)
    points = [{"compute_s": 0.05}, {"compute_s": 0.1}]
    hps = [hparams_for(cfg, p) for p in points]
    run = make_run(cfg)
    grid = resolve_grid(cfg, hps, run.engine.task,
                        ALGORITHMS[cfg.algorithm](cfg))
    singles = [make_run(cfg.replace(compute_s=p["compute_s"])).engine.cfg for p in points]
    for f in SIZED:
        assert getattr(grid, f) == max(getattr(c, f) for c in singles), f
    assert grid.iteration_slots > run.engine.cfg.iteration_slots > 0


def test_call_sizing__a_sweep_point_equals_its_single_run_with_download_limits():
    """The issue's case: download_mbps=0.4 over compute_s=[0.05, 0.1] on a base of 0.1 s: the
    point at 0.05 delivered other counts than its single run (840 against 870), errors 0."""
    cfg = tiny_config(download_mbps=0.4, duration_s=1.0, eval_every_s=0.5)
    res = sweep(cfg, {"compute_s": [0.05, 0.1]}, seeds=1, chunk_size=1)   # one point a call
    key = jax.random.split(jax.random.key(0), 1)[0]
    cfg_p = cfg.replace(compute_s=0.05)
    _, m = divjax.jit(make_run(cfg_p))(key, default_hparams(cfg_p))
    np.testing.assert_array_equal(res.metrics[0]["msgs_delivered"][0, 0],
                                  np.asarray(m["msgs_delivered"]))
    np.testing.assert_allclose(res.metrics[0]["loss_mean"][0, 0], np.asarray(m["loss_mean"]),
                               rtol=1e-5, atol=1e-7)


def test_call_sizing__a_grid_that_an_explicit_size_cannot_hold_is_refused_naming_it():
    cfg = download_config(iteration_slots=12)
    hps = [hparams_for(cfg, {"compute_s": c}) for c in (0.05, 0.1)]
    run = make_run(cfg.replace(iteration_slots=0))
    with pytest.raises(ConfigError, match="iteration_slots=12.*--iteration-slots"):
        resolve_grid(cfg, hps, run.engine.task,
                        ALGORITHMS[cfg.algorithm](cfg))


@pytest.fixture(scope="module")
def small_run():
    cfg = tiny_config(duration_s=0.5)
    return cfg, make_run(cfg), default_hparams(cfg)


@pytest.mark.parametrize("jit", [divjax.jit, jax.jit])
@pytest.mark.parametrize("case", ["other_n", "short_compute", "stacked_lr", "prng_key"])
def test_call_sizing__call_shapes_and_keys_are_clear_errors(small_run, jit, case):
    """HParams of another n, a compute_s of the wrong length, a sweep axis without vmap, an
    old-style uint32 PRNGKey: a ConfigError naming the field and the fix (was a raw JAX
    broadcasting error), under divjax.jit and a plain jax.jit alike (shapes are static)."""
    cfg, run, hp = small_run
    key = jax.random.key(0)
    if case == "other_n":
        hp, match = default_hparams(cfg.replace(n_nodes=4)), "compute_s has 4 entries.*n_nodes=5"
    elif case == "short_compute":
        hp, match = hp.replace(compute_s=hp.compute_s[:3]), "compute_s has 3 entries"
    elif case == "stacked_lr":
        hp, match = hp.replace(lr=jnp.array([0.1, 0.2])), "lr has shape \\(2,\\).*vmap"
    else:
        key, match = jax.random.PRNGKey(0), "key has dtype uint32.*jax.random.key"
    with pytest.raises(ConfigError, match=match):
        jit(run)(key, hp)


def test_call_sizing__a_negative_lr_is_refused_on_the_host_and_flagged_inside_jit(small_run):
    """hp.replace(lr=-0.1) ran gradient ascent with errors 0; the CLI refuses --lr -0.1."""
    cfg, run, hp = small_run
    bad = hp.replace(lr=jnp.float32(-0.1))
    with pytest.raises(ConfigError, match="HParams.lr=-0.1.*--lr"):
        divjax.jit(run)(jax.random.key(0), bad)
    state, metrics = jax.jit(run)(jax.random.key(0), bad)
    assert int(state.errors) == ERR_HPARAMS and int(metrics["errors"][0]) == ERR_HPARAMS
    state, _ = jax.jit(run)(jax.random.key(0), hp.replace(momentum=jnp.float32(1.0)))
    assert int(state.errors) == ERR_HPARAMS
    with pytest.raises(divjax.SimulationError, match="negative or non-finite lr"):
        divjax.check_state(state, cfg)
