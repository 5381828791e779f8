"""divjax.testing on every built-in algorithm (so the checks cannot rot), and on broken
algorithms that each check must catch (so the checks can fail)."""

import jax.numpy as jnp
import pytest

from divjax.algorithms import ALGORITHMS, make_divshare
from divjax.testing import (ConformanceError, Runner, check_algorithm, conformance_config,
                            counters_balance, identical_models_stay_identical,
                            nothing_read_before_arrival)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_conformance__every_builtin_algorithm_passes(name):
    report = check_algorithm(name)
    exchanges = name != "local"
    assert report["identical_models_stay_identical"] == ("ok" if exchanges else
                                                         "vacuous: nothing was delivered")
    assert report["counters_balance"] == ("ok" if exchanges else "vacuous: nothing was sent")
    for check in ("same_key_same_bits", "chunking_invariant", "memory_accounted"):
        assert report[check] == "ok"


def drifting_divshare(cfg):
    """DivShare that nudges every model at each iteration end, messages or not."""
    algo = make_divshare(cfg)

    def iteration_end(ctx, state, node, valid, trained, keys, t):
        state, after = algo.iteration_end(ctx, state, node, valid, trained, keys, t)
        return state, after + 1e-3
    return algo._replace(name="drifting", iteration_end=iteration_end)


def miscounting_divshare(cfg):
    """DivShare that counts one message sent too many at each iteration end."""
    algo = make_divshare(cfg)

    def iteration_end(ctx, state, node, valid, trained, keys, t):
        state, after = algo.iteration_end(ctx, state, node, valid, trained, keys, t)
        c = state.counters
        return state.replace(counters=c._replace(sent=c.sent.at[0, 0].add(jnp.int32(1)))), after
    return algo._replace(name="miscounting", iteration_end=iteration_end)


def test_conformance__catches_an_algorithm_that_changes_models_without_messages():
    runs = Runner(drifting_divshare, conformance_config(iteration_chunk=0))
    with pytest.raises(ConformanceError, match="identical_models_stay_identical"):
        identical_models_stay_identical(runs)
    with pytest.raises(ConformanceError, match="nothing_read_before_arrival"):
        nothing_read_before_arrival(runs)


def test_conformance__catches_unbalanced_counters():
    runs = Runner(miscounting_divshare, conformance_config(iteration_chunk=0))
    with pytest.raises(ConformanceError, match="counters_balance"):
        counters_balance(runs)
