"""divjax.jit passes a task's arrays to the program as arguments, with the bits of a plain jax.jit
(which embeds them as constants): divjax.engine.hoist."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divjax
from divjax.config import default_hparams
from divjax.engine.sim import make_engine
from divjax.frontends.presets import get_preset

CONSTANT = re.compile(r"stablehlo\.constant dense<(?:\"[^\"]*\"|[^>]*)>\s*:\s*tensor<([^>]*)>")
BYTES = {"f32": 4, "i32": 4, "ui32": 4, "i64": 8, "f64": 8, "i1": 1, "i8": 1, "ui8": 1}


def largest_constant(text: str) -> int:
    """Bytes of the largest constant in a lowered program's text."""
    def size(t):
        *dims, dtype = t.split("x")
        return int(np.prod([int(d) for d in dims])) * BYTES.get(dtype, 4)
    return max((size(t) for t in CONSTANT.findall(text)), default=0)


def engine_of(preset: str, **changes):
    cfg = get_preset(preset).replace(**changes)
    hp = default_hparams(cfg)
    engine = make_engine(cfg, hp=hp)
    return engine, divjax.jit(engine.init)(jax.random.key(0), hp), hp


SYNTHETIC = {"n_nodes": 8, "duration_s": 0.5, "local_steps": 2}


@pytest.fixture(scope="module")
def synthetic():
    return engine_of("synthetic-small", **SYNTHETIC)


def test_jit__the_task_data_are_arguments_not_constants_of_the_program(synthetic):
    engine, state, hp = synthetic
    x = (8, 64, 16)                       # the training inputs: (n, samples_per_node, dim) f32
    plain = jax.jit(engine.run_ticks).lower(state, hp).as_text()
    assert largest_constant(plain) >= 4 * np.prod(x)      # JAX 0.10 embeds it
    text = divjax.jit(engine.run_ticks, donate_argnums=0).lower(state, hp).as_text()
    assert largest_constant(text) <= jax.config.jax_embedded_constants_max_bytes
    main = text[text.index("@main("):]
    assert f"tensor<{'x'.join(map(str, x))}xf32>" in main[:main.index("->")]   # an argument


def test_jit__lowered_and_compiled_are_called_with_the_function_s_own_arguments(monkeypatch):
    table = jnp.arange(1000.0) / 7

    def f(x, i):
        return x * table[i] / 3.0

    x, i = jnp.float32(2.0), jnp.int32(5)
    compiled = divjax.jit(f, donate_argnums=0).lower(x, i).compile()
    m = compiled.memory_analysis()
    if m is not None:                     # the table counts among the program's arguments
        assert m.argument_size_in_bytes >= table.nbytes
    got = compiled(x, i)
    monkeypatch.setenv("DIVJAX_EMBED_CONSTANTS", "1")
    np.testing.assert_array_equal(got, divjax.jit(f)(jnp.float32(2.0), i))


def test_jit__switched_off_by_the_environment(synthetic, monkeypatch):
    monkeypatch.setenv("DIVJAX_EMBED_CONSTANTS", "1")
    engine, state, hp = synthetic
    text = divjax.jit(engine.run_ticks).lower(state, hp).as_text()
    assert largest_constant(text) >= 4 * 8 * 64 * 16


@pytest.mark.parametrize("preset,changes", [
    ("movielens-small", {}),                 # every node's count folded into the program
    ("movielens-small", {"eval_chunk": 4}),  # nodes in a loop: counts read at run time
    ("synthetic-small", SYNTHETIC),
])
def test_jit__hoisted_data_give_the_bits_of_embedded_constants(preset, changes, monkeypatch):
    """MovieLens' mean squared error is sum * (1 / count): XLA turns sum / count into that when
    the count is a constant it can fold, so writing the division gave other bits with the
    counts as arguments (1 ulp on some nodes' loss, in the default run)."""
    engine, state, _ = engine_of(preset, **{"duration_s": 1.0, **changes})
    ours = divjax.jit(engine.evaluate)
    monkeypatch.setenv("DIVJAX_EMBED_CONSTANTS", "1")
    embedded = divjax.jit(engine.evaluate)
    assert ours._hoisted is not None and embedded._hoisted is None
    jax.tree.map(np.testing.assert_array_equal, ours(state), embedded(state))


def test_jit__closing_over_an_outer_trace_is_the_nested_jit():
    def outer(a):
        return divjax.jit(lambda: a * 2)()    # no arguments: `a` is the outer trace's
    np.testing.assert_array_equal(jax.jit(outer)(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(jax.jit(outer)(jnp.ones(3)), [2.0, 2.0, 2.0])


def test_jit__one_trace_per_signature_and_the_data_passed_once():
    table = jnp.arange(1000.0)
    traces = []

    def f(i):
        traces.append(1)
        return table[i] * 2

    g = divjax.jit(f)
    assert [float(g(jnp.int32(k))) for k in (1, 2, 3)] == [2.0, 4.0, 6.0]
    assert len(traces) == 1          # make_jaxpr once; the program replays its jaxpr
    assert float(g(jnp.float32(1.0).astype(jnp.int32))) == 2.0
    assert g._hoisted is not None and len(g._hoisted._programs) == 1
