"""Smoke tests of scripts/theory: each script's main() on --tiny writes a plot and a table."""

import importlib
import json
import sys
from pathlib import Path

import pytest

THEORY = Path(__file__).resolve().parents[1] / "scripts" / "theory"

# script -> (columns that must be in the table, expected number of rows on --tiny)
EXPECTED = {
    "gap_vs_iterations": (["lr", "gap_plateau", "slope_avg_grad_sq"], 3),   # 2 lr + envelope
    "delay_effect": (["lr", "latency_s", "tau_max", "iters_to_eps"], 2),    # 1 lr x 2 latencies
    "fragmentation_effect": (["omega", "frac_sent", "consensus_plateau"], 2),
    "scale_effect": (["n", "lr", "gap_plateau", "ideal_plateau"], 2),
    "consensus": (["heterogeneity", "lr", "consensus_plateau"], 2),
}


def load(name):
    if str(THEORY) not in sys.path:
        sys.path.insert(0, str(THEORY))
    return importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_theory_script__tiny_writes_plot_and_table(name, tmp_path):
    columns, n_rows = EXPECTED[name]
    result = load(name).main(["--tiny", "--out", str(tmp_path)])
    png, md, js = (tmp_path / f"{name}.{ext}" for ext in ("png", "md", "json"))
    assert png.stat().st_size > 1000
    table = json.loads(js.read_text())
    assert len(table["rows"]) == n_rows
    assert set(columns) <= set(table["columns"])
    assert table["meta"]["tiny"] is True
    text = md.read_text()
    assert text.count("\n|") == n_rows + 2  # header, separator, rows
    assert result["rows"] == table["rows"]


def test_theory_delay_bound__grows_with_latency():
    C = load("common")
    cfg = C.base_config(True)
    task = C.theory_task(cfg, True)
    taus = [C.delay_bound(cfg, task, C.base_hparams(cfg, task, lr=0.1, latency_s=lat))["tau_max"]
            for lat in (0.0, 1.0, 3.0)]
    assert taus[0] >= 1 and taus[0] < taus[1] < taus[2]


def test_theory_loglog_slope__recovers_power_law():
    import numpy as np

    C = load("common")
    x = np.array([1.0, 2.0, 4.0, 8.0])
    assert abs(C.loglog_slope(x, 3.0 * x**-0.5) + 0.5) < 1e-9
