"""The XLA options divjax compiles its programs with, and `jit`: `jax.jit` with them.

On CPU, XLA 0.10 hands small elementwise and reduction fusions to YNNPACK by default. For the
engine's ops (a 20-float dot product per rating, a tick's bookkeeping) each such call costs tens
of microseconds of library overhead: the matrix-factorisation step's one reduction took 87 us
per call inside the loop (`benchmarks/profile_ops.py`), and `movielens-paper` ran 1.2-1.4x
slower than with XLA's own emitters (`benchmarks/exchange_floor.py` measures both in one
process). divjax turns those library fusions off for its CPU programs, but for one kind: a model
with convolutions (GN-LeNet) keeps YNNPACK's reductions (`LIBRARY_FUSION_TYPE_REDUCE`). Its
backward passes sum large activations (bias and GroupNorm gradients), which XLA's own emitters
do 2-4x slower (throwaway micro-benchmark): the engine's training ticks ran faster with them in
9 of 10 alternating rounds over two runs (0.90-1.36x), and its whole interval with evaluation
1.06-1.26x in two runs but 0.83-1.08x in a third (alternating A/B in one process, section (h)
of benchmarks/cnn_training.py), while movielens-paper ran 6-30% slower with them (its tiny
per-step and per-evaluation reductions; throwaway A/B). Which programs have convolutions: a
function tagged `convolutions=True` (`make_engine`'s functions, `make_run`'s run, from
`divjax.engine.local.has_convolutions` of the model), or `jit(fn, convolutions=...)`. Other backends
get no option. A function with a `check` attribute (`make_run`'s run, `make_engine`'s init) has
it called with the arguments of every top-level call first: HParams the run was not built for
are refused on the host (`divjax.engine.sizing.check_sizes`), before anything compiles.

A task can ask for XLA's defaults instead (`Task.xla_defaults`): the least-squares task does, its
small dense steps run about 30% faster with YNNPACK's fusions (a paired A/B at 16,384 DivShare
nodes, `benchmarks/xla_options_ab.py`). Its programs are tagged `xla_defaults=True` with the
convolutions tag, and compile with no options.

The option changes float rounding, never the simulation: compile your own `jax.jit` of a
`make_run` program with `divjax.jit` (or with `compiler_options=divjax.compiler_options(
convolutions=run.convolutions, xla_defaults=run.xla_defaults)`) to get the bits of
`divjax run`. `DIVJAX_XLA_DEFAULTS=1` turns the options off (XLA's defaults) for every task.

`jit` also passes the arrays a function closes over (a task's data) to the program as arguments
instead of embedding them as constants (`divjax.engine.hoist`: half the memory per node and a
fifth of the compile time at 262,144 nodes, the same bits); `DIVJAX_EMBED_CONSTANTS=1` embeds
them as a plain `jax.jit` does.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax

from divjax.engine import hoist

CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}   # no YNNPACK library fusions
# models with convolutions: YNNPACK's reductions only
CPU_CONV_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def _cpu_options_supported(convolutions: bool = False) -> bool:
    """Whether this jaxlib knows the options (an older XLA refuses an unknown one)."""
    options = CPU_CONV_OPTIONS if convolutions else CPU_OPTIONS
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
    except Exception:   # noqa: BLE001 - any refusal means: compile with XLA's defaults
        return False
    return True


def compiler_options(backend: str | None = None, convolutions: bool = False,
                     xla_defaults: bool = False) -> dict:
    """The options divjax compiles with on `backend` (default: JAX's default backend), for a
    program whose model has convolutions or not; none for a program whose task asks for XLA's
    defaults (`Task.xla_defaults`: the least-squares task, ~30% faster with them)."""
    if os.environ.get("DIVJAX_XLA_DEFAULTS") == "1" or xla_defaults:
        return {}
    if (backend or jax.default_backend()) != "cpu" or not _cpu_options_supported(convolutions):
        return {}
    return dict(CPU_CONV_OPTIONS if convolutions else CPU_OPTIONS)


def tag_convolutions(fn: Callable, convolutions: bool, xla_defaults: bool = False) -> Callable:
    """Mark `fn` as a program whose model has convolutions (or not), and whose task asks for
    XLA's default options (or not), for `jit`."""
    fn.convolutions = bool(convolutions)
    fn.xla_defaults = bool(xla_defaults)
    return fn


def copy_tags(fn: Callable, like: Callable) -> Callable:
    """Tag `fn` as `like` is tagged (a program built around another: the same options)."""
    return tag_convolutions(fn, getattr(like, "convolutions", False),
                            getattr(like, "xla_defaults", False))


def program_options(fn: Callable) -> dict:
    """The options `jit(fn)` compiles with at the top level (from `fn`'s tags; untagged: none
    has convolutions, none asks for XLA's defaults)."""
    return compiler_options(convolutions=getattr(fn, "convolutions", False),
                            xla_defaults=getattr(fn, "xla_defaults", False))


class _Jitted:
    """`jax.jit(fn)` with `compiler_options()` when called (or lowered) at the top level; inside
    another trace (an outer jit, vmap, scan) the plain `jax.jit(fn)`, since XLA takes options
    only for a whole program: the outer program's options apply there."""

    def __init__(self, fn: Callable, kwargs: dict, convolutions: bool | None,
                 xla_defaults: bool = False):
        self.compiler_options = (program_options(fn) if convolutions is None   # at the top
                                 else compiler_options(convolutions=convolutions,
                                                       xla_defaults=xla_defaults))
        self._top = jax.jit(fn, compiler_options=self.compiler_options or None, **kwargs)
        # a run or engine.init: `check(key, hp)` refuses, on the host, HParams the run was not
        # built for (`divjax.engine.sizing.check_sizes`) before a call at the top level compiles
        check = getattr(fn, "check", None)   # (a copy on jax.vmap(run) is not run's own)
        self._check = check if getattr(check, "owner", None) is fn else None
        self._nested = jax.jit(fn, **kwargs)
        # the task's arrays as arguments of the program, not embedded constants (`hoist`)
        self._hoisted = (hoist.Hoisted(fn, {**kwargs, "compiler_options":
                                            self.compiler_options or None})
                         if hoist.enabled(kwargs) else None)
        self.__name__ = getattr(fn, "__name__", "jitted")   # no __wrapped__: vmap would
        self.__doc__ = getattr(fn, "__doc__", None)           # trace through to fn itself

    def __call__(self, *args, **kwargs):
        leaves = jax.tree.leaves((args, kwargs))
        if not any(isinstance(x, jax.core.Tracer) for x in leaves):
            if self._check is not None:
                self._check(*args, **kwargs)
            try:
                return (self._top if self._hoisted is None else self._hoisted)(*args, **kwargs)
            except hoist.Nested:         # closes over an outer trace's values
                pass
            except ValueError as e:      # traced with only constant arguments
                if "compiler_options" not in str(e):
                    raise
        return self._nested(*args, **kwargs)

    def lower(self, *args, **kwargs):
        if self._hoisted is not None:
            return self._hoisted.lower(*args, **kwargs)
        return self._top.lower(*args, **kwargs)


def jit(fn: Callable, convolutions: bool | None = None, xla_defaults: bool = False,
        **kwargs) -> Callable:
    """`jax.jit(fn, **kwargs)` compiled with `compiler_options(convolutions=...,
    xla_defaults=...)` (`.lower` too; default: `fn`'s tags if convolutions is None); called
    inside another trace it is the plain `jax.jit(fn, **kwargs)`."""
    return _Jitted(fn, kwargs, convolutions, xla_defaults)
