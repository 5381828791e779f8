"""divjax.jit: jax.jit with divjax's XLA options at the top level, plain jax.jit when nested."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divjax
from divjax.engine import xla_options


def mf_rows(u, i):
    return jnp.sum(u * i, -1)          # the reduction XLA CPU hands to YNNPACK by default


def test_jit__turns_the_library_fusions_off_on_cpu_and_computes_the_same():
    u = jax.random.normal(jax.random.key(0), (60, 8, 20))
    i = jax.random.normal(jax.random.key(1), (60, 8, 20))
    opts = divjax.compiler_options()
    if jax.default_backend() == "cpu" and xla_options._cpu_options_supported():
        assert opts == xla_options.CPU_OPTIONS
        ours = divjax.jit(mf_rows).lower(u, i).compile().as_text()
        plain = jax.jit(mf_rows).lower(u, i).compile().as_text()
        assert "ynn" not in ours.lower()
        if jax.__version__.startswith("0.10."):   # its XLA hands this reduction to YNNPACK
            assert "ynn" in plain.lower()
    np.testing.assert_allclose(divjax.jit(mf_rows)(u, i), jax.jit(mf_rows)(u, i), rtol=1e-5,
                               atol=1e-5)   # another summation order


def test_jit__nested_in_jit_vmap_and_scan_it_is_the_plain_jit():
    inner = divjax.jit(mf_rows)
    u = jnp.ones((3, 4, 5))
    want = jnp.full((3, 4), 5.0)
    np.testing.assert_array_equal(divjax.jit(lambda a: inner(a, a))(u), want)
    np.testing.assert_array_equal(jax.jit(lambda a: inner(a, a))(u), want)
    np.testing.assert_array_equal(jax.vmap(inner)(u, u), want)
    np.testing.assert_array_equal(jax.jit(lambda: inner(u, u))(), want)   # constants only
    _, ys = jax.lax.scan(lambda c, a: (c, inner(a, a)), 0, u)
    np.testing.assert_array_equal(ys, want)
    keyed = divjax.jit(lambda k, x: jax.random.fold_in(k, 1) is not None and x * 2)  # one key
    keys = jax.random.split(jax.random.key(0), 3)
    np.testing.assert_array_equal(divjax.jit(jax.vmap(keyed))(keys, jnp.ones(3)), [2, 2, 2])


def test_compiler_options__off_with_the_environment_switch(monkeypatch):
    monkeypatch.setenv("DIVJAX_XLA_DEFAULTS", "1")
    assert divjax.compiler_options() == {}
    monkeypatch.delenv("DIVJAX_XLA_DEFAULTS")
    assert divjax.compiler_options("gpu") == {}


@pytest.mark.parametrize("donate", [False, True])
def test_jit__passes_jit_arguments_through(donate):
    f = divjax.jit(lambda x: x * 2, **({"donate_argnums": 0} if donate else {}))
    np.testing.assert_array_equal(f(jnp.arange(3.0)), [0.0, 2.0, 4.0])


def test_jit__a_program_with_convolutions_keeps_the_library_reductions():
    """GN-LeNet's backward sums large activations: YNNPACK's reductions, nothing else."""
    u = jax.random.normal(jax.random.key(0), (60, 8, 20))
    conv = divjax.jit(mf_rows, convolutions=True)
    tagged = divjax.jit(xla_options.tag_convolutions(lambda a, b: mf_rows(a, b), True))
    if jax.default_backend() == "cpu" and xla_options._cpu_options_supported(True):
        assert conv.compiler_options == tagged.compiler_options == xla_options.CPU_CONV_OPTIONS
        assert divjax.jit(mf_rows).compiler_options == xla_options.CPU_OPTIONS
        if jax.__version__.startswith("0.10."):   # its XLA hands this reduction to YNNPACK
            assert "ynn" in conv.lower(u, u).compile().as_text().lower()
    np.testing.assert_allclose(conv(u, u), jax.jit(mf_rows)(u, u), rtol=1e-5, atol=1e-5)


def test_make_engine__tags_its_functions_by_whether_the_model_has_convolutions():
    from conftest import tiny_config

    from divjax.engine.sim import make_engine, make_run
    from divjax.tasks.base import make_synthetic_task

    cfg = tiny_config()
    plain = make_synthetic_task(cfg)._replace(xla_defaults=False)   # divjax's options
    # the synthetic task with an unused 4-D (HWIO) parameter: a model "with convolutions"
    conv = plain._replace(init=lambda k: {**plain.init(k), "kernel": jnp.zeros((2, 2, 1, 3))})
    for task, want in ((plain, False), (conv, True)):
        engine = make_engine(cfg, task)
        assert all(f.convolutions is want for f in (engine.init, engine.advance,
                                                    engine.evaluate, engine.run_ticks))
        assert make_run(cfg, task).convolutions is want
        assert divjax.jit(engine.advance).compiler_options == divjax.compiler_options(
            convolutions=want)


def test_make_engine__a_task_asking_for_xla_defaults_compiles_with_no_options():
    """The least-squares task asks for XLA's defaults (`Task.xla_defaults`): its engine's
    functions, its run and a sweep's batched run compile with no options; another task keeps
    divjax's (the options a run records are those it compiled with)."""
    from conftest import tiny_config

    from divjax.engine.sim import make_engine, make_run
    from divjax.engine.xla_options import program_options
    from divjax.tasks.base import make_synthetic_task

    cfg = tiny_config()
    task = make_synthetic_task(cfg)
    assert task.xla_defaults
    engine, run = make_engine(cfg, task), make_run(cfg, task)
    assert all(f.xla_defaults for f in (engine.init, engine.advance, engine.evaluate,
                                        engine.run_ticks, run))
    assert divjax.jit(engine.advance).compiler_options == {} == program_options(run)
    assert divjax.jit(lambda x: run(x), convolutions=False,
                      xla_defaults=run.xla_defaults).compiler_options == {}
    other = make_run(cfg, task._replace(xla_defaults=False))
    assert program_options(other) == divjax.compiler_options()
