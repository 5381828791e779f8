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


def _spans_every_pair(c, d, T):
    """The delay spans as delay_bound computed them before issue 33: every sender x receiver."""
    import numpy as np

    spans = []
    for i in range(len(c)):
        t = np.arange(c[i], T + 1, c[i])[:, None]
        span = -(-(t + d[i]) // c[None, :]) - t // c[None, :]
        spans.append(np.delete(span, i, axis=1).reshape(-1))
    return np.concatenate(spans)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_theory_span_stats__grouped_equals_every_pair(seed):
    import numpy as np

    C = load("common")
    rng = np.random.default_rng(seed)
    n = 11
    c = rng.integers(3, 7, n).astype(np.int64)
    c[0] = 9                                   # a compute time only one node has
    d = rng.integers(1, 12, n).astype(np.int64)
    every = _spans_every_pair(c, d, 60)
    tau_max, total, count = C._span_stats(c, d, 60)
    assert (tau_max, total, count) == (int(every.max()), int(every.sum()), every.size)
    assert float(np.float64(total) / count) == float(every.mean())


def test_theory_per_node_chunks__same_as_one_vmap():
    import jax
    import jax.numpy as jnp
    import numpy as np

    C = load("common")

    def fn(node):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(3), node), (5,))
        return jnp.sum(x**2), node.astype(jnp.float32)

    whole = C.per_node_chunks(fn, 7, chunk=64)
    for chunk in (3, 7):
        parts = C.per_node_chunks(fn, 7, chunk=chunk)
        np.testing.assert_array_equal(np.asarray(parts[1]), np.arange(7))
        np.testing.assert_allclose(np.asarray(parts[0]), np.asarray(whole[0]), rtol=1e-6)


def test_theory_scale_effect__reads_points_already_done(tmp_path, monkeypatch):
    C, scale = load("common"), load("scale_effect")
    argv = ["--tiny", "--ns", "4", "--out", str(tmp_path)]
    first = scale.main(argv)
    assert (tmp_path / "points" / "n4.json").exists()

    def no_run(*a, **k):
        raise AssertionError("ran a point that was already done")

    monkeypatch.setattr(C, "run_grid", no_run)
    assert scale.main(argv)["rows"] == first["rows"]        # read, not run
    with pytest.raises(AssertionError, match="already done"):
        scale.main(argv + ["--base-seed", "1"])             # another setting: runs again
    with pytest.raises(AssertionError, match="already done"):
        scale.main(argv + ["--redo"])
