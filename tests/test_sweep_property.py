"""A sweep is its single runs (issue 30), as a property: random small grids over the fields a
sweep vmaps (compute_s, bandwidths, latency, lr, stragglers) on base configs with random
static features (download limits, jitter, churn, loss, a trace), for every algorithm; each
grid point's counters equal its single run's (built for its own HParams) exactly and its
metrics to float rounding, or the sweep refuses the grid naming the field. Fixed seeds, two
draws here; benchmarks/sweep_property.py runs more (its JSON in benchmarks/results/)."""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

from divjax.algorithms import ALGORITHMS

_spec = importlib.util.spec_from_file_location(
    "sweep_property", Path(__file__).parent.parent / "benchmarks" / "sweep_property.py")
sweep_property = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep_property)


@pytest.mark.parametrize("seed", [170, 13])
def test_sweep_property__every_grid_point_equals_its_single_run(seed, tmp_path):
    """Two grid points per draw (one vmapped field, or one point per call), the first checked
    against its single run, so a draw compiles two programs. Seed 170 draws the local baseline
    with jitter and loss over compute_s=[0.03, 0.1], vmapped; seed 13 Swift with churn,
    download limits and loss over compute_s=[0.03, 0.1], one point per call: both ran the
    point at 0.03 s on an iteration table sized for the base config's 0.1 s, which raised
    ERR_SCHEDULE (a SimulationError) before `resolve_grid` sized iteration_slots."""
    rng = np.random.default_rng(seed)
    case = sweep_property.draw_case(rng, sweep_property.trace_writer(tmp_path),
                                    sorted(ALGORITHMS), max_points=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # a trace's unused download column
        row = sweep_property.check_case(case, points=1)
    assert row["outcome"] == "equal" or row["outcome"].startswith("refused"), row


def test_sweep_property__draws_cover_every_algorithm_and_feature(tmp_path):
    """The generator (no runs): 40 draws of the benchmark's seed reach every algorithm, every
    static feature and every swept field."""
    rng = np.random.default_rng(0)
    trace = sweep_property.trace_writer(tmp_path)
    cases = [sweep_property.draw_case(rng, trace, sorted(ALGORITHMS)) for _ in range(40)]
    assert {c["cfg"].algorithm for c in cases} == set(ALGORITHMS)
    assert set().union(*(c["features"] for c in cases)) == set(sweep_property.FEATURES)
    assert set().union(*(c["grid"] for c in cases)) >= set(sweep_property.SWEPT)
