"""Shared tiny fixtures: the suite runs on CPU with n <= 8 and a few simulated seconds."""

import os

# 4 CPU devices (sharding tests); LLVM optimisation level 0: the suite's programs are tiny and
# compiled once each, so compile time dominates (36% less wall on three test files; results
# are compared within one setting, and against the reference simulators to float tolerance);
# and XLA CPU's legacy elemental emitters instead of its fusion emitters: about 35% less
# compile time for the engine's programs (an engine with download limits: 3.5 s -> 2.3 s),
# only on the jaxlib it was measured with: an XLA that does not know a flag aborts.
_FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false"
                 if __import__("importlib.metadata").metadata.version("jaxlib").startswith("0.10.")
                 else "")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                                   "--xla_backend_optimization_level=0 " + _FAST_COMPILE)
# One compilation cache per test session (shared by the xdist workers of the run, never by two
# runs): tests that build the same program compile it once (13% less CPU on three test files).
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ   # a user's own cache is left alone
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(
        __import__("tempfile").gettempdir(), f"divjax-tests-pid{os.getpid()}")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from divjax.config import SimConfig, default_hparams  # noqa: E402


def tiny_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=4, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=2.0, eval_every_s=0.5, compute_s=0.1)
    return base.replace(**changes)


def straggler_hparams(cfg: SimConfig):
    """Stragglers in compute and links, for n = 5: slow links are the last two nodes."""
    assert cfg.n_nodes == 5
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.1, 0.1, 0.13, 0.17, 0.1], jnp.float32),
        upload_bps=jnp.array([1e4, 1e4, 1e4, 2e3, 5e2], jnp.float32),
        latency_s=jnp.array([0.02, 0.0, 0.01, 0.03, 0.02], jnp.float32))


def uneven_hparams(cfg: SimConfig, last_upload_bps: float = 1e3):
    """n = 5, fast senders and slow links (compute 50 to 270 ms, uploads 100 kB/s down to
    `last_upload_bps`): copies pile up in a slow receiver's inbox window, so the "latest"
    rule's look-ahead replaces messages, and queues build up."""
    assert cfg.n_nodes == 5
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.27, 0.07], jnp.float32),
        upload_bps=jnp.array([1e5, 3e4, 1e4, 4e3, last_upload_bps], jnp.float32))


def assert_equals_reference(state, ref) -> None:
    """The engine's final models (to float tolerance), iterations and every counter the
    reference result carries (sent, delivered; dropped, lost and replaced where it has them)
    equal a reference simulator's (`reference`, `reference_baselines` or `reference_dpsgd`)."""
    from divjax.reference.baselines import BaselineResult

    np.testing.assert_allclose(np.asarray(state.params), ref.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.counters.sent), ref.sent)
    np.testing.assert_array_equal(np.asarray(state.counters.delivered), ref.delivered)
    np.testing.assert_array_equal(np.asarray(state.iterations), ref.iterations)
    for name in ("dropped", "lost"):
        if getattr(ref, name, None) is not None:
            np.testing.assert_array_equal(np.asarray(getattr(state.counters, name)),
                                          getattr(ref, name), err_msg=name)
    if getattr(ref, "replaced", None) is not None:   # baselines: once per fragment (K)
        per = state.params.shape[1] if isinstance(ref, BaselineResult) else 1
        assert int(state.counters.replaced.sum()) == per * ref.replaced, "replaced"


def assert_lost_and_replaced_equal(state, ref, per: int = 1) -> None:
    """The engine's lost messages (per receiver) and inbox replacements equal a reference
    simulator's; `per`: fragments per counted message (the engine counts a baseline's full
    model once per fragment)."""
    np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
    assert int(state.counters.replaced.sum()) == per * ref.replaced


def assert_same_run(state, base) -> None:
    """Two runs' final models and message counters are bit-identical (an invariant: a feature
    set so that it changes nothing gives the run without it)."""
    np.testing.assert_array_equal(np.asarray(state.params), np.asarray(base.params))
    for name in ("sent", "delivered", "dropped", "replaced", "lost"):
        np.testing.assert_array_equal(np.asarray(getattr(state.counters, name)),
                                      np.asarray(getattr(base.counters, name)))


@pytest.fixture
def key():
    return jax.random.key(0)


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's compilation cache (in the controller, after the workers are done)."""
    if _OWN_CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def run_checked(cfg: SimConfig, hp, seed: int = 1, driver: bool = False):
    """(run, final state, metrics) of `make_run(cfg, hp)` with key `seed`, jitted or (driver)
    through the Python driver; a run with any error flag fails the test."""
    from divjax.engine.sim import check_state, make_run, simulate
    from divjax.engine.xla_options import jit

    run = make_run(cfg, hp=hp)
    if driver:
        state, metrics = simulate(run.engine, jax.random.key(seed), hp)
    else:
        state, metrics = jit(run)(jax.random.key(seed), hp)
    check_state(state, run.engine.cfg)
    return run, state, metrics


def reference_of(run, hp, seed: int = 1):
    """The reference simulator's result for the same run: `reference` (DivShare) or
    `reference_baselines` (every other algorithm), under the authors' inbox rule."""
    from divjax.reference import divshare as reference, baselines as reference_baselines

    sim = reference if run.engine.cfg.algorithm == "divshare" else reference_baselines
    return sim.simulate(run.engine.cfg, run.engine.task, hp, jax.random.key(seed),
                        inbox_policy="latest")


# ----------------------------------------------------------------------------- CLI errors

SMALL = ["--preset", "synthetic-small", "--n-nodes", "4", "--n-stragglers", "1", "--fanout",
         "2", "--duration-s", "1", "--eval-every-s", "0.25"]


def error_line(capsys, argv, code=2) -> str:
    """Run the CLI in-process; assert it exits with `code` and one `divjax: error:` line."""
    from divjax.frontends import cli

    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("divjax: error: "), err
    return err[0]


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if anything builds an engine (loads data or compiles)."""
    import divjax.engine.sim

    def boom(*a, **k):
        raise AssertionError("make_engine was called: the error came too late")

    monkeypatch.setattr(divjax.engine.sim, "make_engine", boom)
