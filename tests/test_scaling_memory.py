"""benchmarks/scaling.py's memory figures: the linear fit behind "bytes per node is flat" and
the per-node figures net of the n = 8 process with their range over repeats."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scaling  # noqa: E402

NS = [1024, 4096, 16384, 65536, 262144]


def test_linear_fit_recovers_fixed_and_per_node_bytes():
    a, b = scaling.linear_fit(NS, [400e6 + 23_000 * n for n in NS])
    assert a == pytest.approx(400e6, rel=1e-9) and b == pytest.approx(23_000, rel=1e-9)


def test_fit_line_flags_growth_faster_than_n():
    """Memory growing as n log n must not read as flat: max/min of the per-node figures net of
    the fit's intercept exceeds the issue's 1.10."""
    import math

    def rows(peak):
        return [{"n": n, "peak_exec_bytes": peak(n)} for n in NS]
    flat = scaling.fit_line(("d", "s"), rows(lambda n: 4e8 + 23_000 * n), None)
    grows = scaling.fit_line(("d", "s"), rows(lambda n: 4e8 + 2_000 * n * math.log(n)), None)
    assert float(flat.split("max/min ")[1].rstrip(")")) == pytest.approx(1.0, abs=1e-6)
    assert float(grows.split("max/min ")[1].rstrip(")")) > 1.10


def test_exec_per_node_is_net_of_the_base_and_its_range_spans_the_repeats():
    base = {"n": 8, "algorithm": "d", "task": "s", "peak_build_bytes": 1, "peak_run_bytes": 500,
            "model_total_bytes": 0, "peak_exec_bytes": 380_000,
            "repeats": [{"peak_exec_bytes": v} for v in (370_000, 380_000, 390_000)]}
    row = {"n": 1008, "algorithm": "d", "task": "s", "peak_build_bytes": 1,
           "peak_run_bytes": 600, "model_total_bytes": 0, "peak_exec_bytes": 400_380_000,
           "repeats": [{"peak_exec_bytes": v} for v in (400_370_000, 400_380_000, 400_400_000)]}
    scaling.per_node([base, row], base)
    assert row["exec_peak_per_node"] == 400_000
    assert row["exec_peak_per_node_range"] == [399_980, 400_030]
