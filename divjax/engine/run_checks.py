"""The host check a built run runs before every call (`divjax.jit` calls `fn.check`).

`call_checker(spec)` checks a call's key and HParams against what the engine `spec`
(`sim.EngineSpec`) was sized for: `sizing.check_call_inputs` and `sizing.check_sizes`, the one
rule for what a built run may be called with; `attach_check` binds it to the function it
guards.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from divjax.engine.sizing import check_call_inputs, check_sizes


def attach_check(fn: Callable, check: Callable) -> Callable:
    """Give `fn` the host check `divjax.jit` calls first (`fn.check(*args)`), bound to `fn`
    itself: a function made from it (jax.vmap copies attributes) takes other arguments, so
    its copy is not used (`check.owner`)."""
    def bound(*args, **kwargs):
        return check(*args, **kwargs)

    bound.owner = fn
    fn.check = bound
    return fn


def call_checker(spec) -> Callable:
    """check(key, hp): raise ConfigError unless the run may be called with them (host,
    concrete HParams): `sizing.check_call_inputs` and `sizing.check_sizes`, the one rule.
    HParams that passed are remembered (a loop of calls checks them once)."""
    passed: set = set()

    def check(key, hp, *_, **__):
        check_call_inputs(spec.cfg, key, hp)
        digest = b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(hp))
        if digest not in passed:
            check_sizes(spec.cfg, hp, spec.layout, spec.algo, spec.auto)
            if len(passed) < 4096:
                passed.add(digest)

    return check
