"""The data a function closes over, passed to its compiled program as arguments (`divjax.jit`).

A task's arrays (examples, rating tables, index tables) are closed over by the engine's
functions. Under a plain `jax.jit`, JAX 0.10 embeds every closed-over array in the program as a
constant, and the compiler and the executable each copy it: at 262,144 least-squares nodes the
run's peak was 23.2 KB per node instead of 12.9, and the compile took 33 s instead of 6
(docs/scaling.md). `divjax.jit` traces the function once per argument signature, and passes the
arrays of more than `jax_embedded_constants_max_bytes` (32 bytes by default) to the program as
arguments, as JAX's coming constant handling does (`JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS=True`,
which can only be chosen before `jax` is imported, and then for every program of the process).
Smaller ones (scalars, a few counts) stay embedded. Only divjax's own programs change: a plain
`jax.jit` of the same function still embeds them (or hoists them under JAX's flag).

The bits are the same either way: nothing divjax computes depends on whether XLA sees a table
as a constant (the one that did, MovieLens' `sum / count`, which XLA turns into
`sum * (1 / count)` when it can fold the count, is written as that product:
`divjax.data.movielens`); `DIVJAX_EMBED_CONSTANTS=1` restores the embedded constants.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np

KWARGS = frozenset({"donate_argnums"})   # jit arguments a hoisted program supports


class Nested(Exception):
    """The function closes over values of an outer trace: not a top-level program."""


def enabled(kwargs: dict) -> bool:
    """Whether `divjax.jit(fn, **kwargs)` passes closed-over arrays as arguments (not with
    shardings or static arguments, whose positions the extra argument would shift)."""
    return os.environ.get("DIVJAX_EMBED_CONSTANTS") != "1" and set(kwargs) <= KWARGS


def _hoistable(c) -> bool:
    return np.ndim(c) > 0 and getattr(c, "nbytes", 0) > jax.config.jax_embedded_constants_max_bytes


def _shifted(kwargs: dict) -> dict:
    """`kwargs` for the program whose first argument is the hoisted data."""
    out = dict(kwargs)
    if "donate_argnums" in out:
        d = out["donate_argnums"]
        out["donate_argnums"] = (d + 1 if isinstance(d, int) else tuple(i + 1 for i in d))
    return out


class Stage:
    """A `Lowered` or `Compiled` of a hoisted program, called and compiled with the function's
    own arguments (the data is added); everything else (`as_text`, `memory_analysis`) is the
    stage's own: the data counts among its arguments."""

    def __init__(self, stage, data: list):
        self._stage, self._data = stage, data

    def compile(self, *args, **kwargs) -> Stage:
        return Stage(self._stage.compile(*args, **kwargs), self._data)

    def __call__(self, *args, **kwargs):
        return self._stage(self._data, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._stage, name)


class Hoisted:
    """`jax.jit(fn, **jit_kwargs)` whose closed-over arrays are arguments of the program: one
    trace and one jitted program per signature (tree structure, shapes, dtypes) of the call."""

    def __init__(self, fn: Callable, jit_kwargs: dict):
        self._fn, self._jit_kwargs = fn, _shifted(jit_kwargs)
        self._programs: dict = {}

    def _program(self, args: tuple, kwargs: dict) -> tuple:
        leaves, tree = jax.tree.flatten((args, kwargs))
        signature = (tree, tuple(jax.typeof(x) for x in leaves))
        if signature not in self._programs:
            closed, out_shape = jax.make_jaxpr(self._fn, return_shape=True)(*args, **kwargs)
            self._programs[signature] = self._build(closed, jax.tree.structure(out_shape))
        return self._programs[signature]

    def _build(self, closed, out_tree) -> tuple:
        if any(isinstance(c, jax.core.Tracer) for c in closed.consts):
            raise Nested   # e.g. called with constants only inside another trace: not cached
        hoist = [_hoistable(c) for c in closed.consts]
        data = [c for c, h in zip(closed.consts, hoist) if h]
        kept = [c for c, h in zip(closed.consts, hoist) if not h]

        def program(data, *args, **kwargs):
            given, embedded = iter(data), iter(kept)
            consts = [next(given) if h else next(embedded) for h in hoist]
            out = jax.core.eval_jaxpr(closed.jaxpr, consts, *jax.tree.leaves((args, kwargs)))
            return jax.tree.unflatten(out_tree, out)

        return jax.jit(program, **self._jit_kwargs), data

    def __call__(self, *args, **kwargs):
        program, data = self._program(args, kwargs)
        return program(data, *args, **kwargs)

    def lower(self, *args, **kwargs) -> Stage:
        program, data = self._program(args, kwargs)
        return Stage(program.lower(data, *args, **kwargs), data)
