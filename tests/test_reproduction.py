"""divjax.reproduction (the grid behind scripts/reproduction_grid.py) at tiny scale: cells
written, skipped on rerun, the document regenerated from them; the analysis on hand-made cells."""

import json
from pathlib import Path

from divjax.reproduction import analysis, cli, doc_omega, grid

ROOT = Path(__file__).resolve().parents[1]


def test_grid_tiny_writes_skips_and_regenerates(tmp_path, monkeypatch):
    """The grid's mechanics on one tiny synthetic group (one compilation; MovieLens ones take
    ~20 s each): every cell written once, skipped on a rerun, the document regenerated."""
    from divjax.config import SimConfig

    cfg = SimConfig(task="synthetic", n_nodes=4, n_fragments=2, fanout=2, local_steps=2,
                    batch_size=4, tick_s=0.05, duration_s=1.0, eval_every_s=0.25,
                    compute_s=0.1, lr=0.1, n_stragglers=1, straggler_mbps=(0.5,))
    groups = [grid.Group("movielens", "map", "divshare", cfg, ("r1-s0", "r1-s1"),
                         ({"n_stragglers": 0}, {"n_stragglers": 1}), (0, 1), 0)]
    monkeypatch.setattr(grid, "build_groups", lambda *a: groups)
    out, doc = tmp_path / "rep", tmp_path / "reproduction.md"
    argv = ["--scale", "tiny", "--data-dir", "", "--seeds", "2", "--out", str(out),
            "--doc", str(doc)]
    res = cli.main(argv)
    cells = sorted((out / "cells").glob("*/*/*.json"))
    assert len(cells) == 4 and res["cells"] == 4 and not res["missing"]
    c = json.loads((out / "cells" / "movielens" / "r1-s0" / "divshare-seed1.json").read_text())
    assert c["seed_key"] == "jax.random.key(1)" and len(c["git"]["commit"]) == 40
    assert c["curve"]["loss_mean"][-1] < c["curve"]["loss_mean"][0]   # it learns
    assert c["config"]["n_stragglers"] == 0 and c["point"] == {"n_stragglers": 0}
    text = doc.read_text()
    assert "## The paper's claims against the grid" in text and "## Missing cells" in text
    before = {p: p.stat().st_mtime_ns for p in cells}
    doc.unlink()
    res = cli.main(argv)                # nothing to run: every cell is skipped
    assert {p: p.stat().st_mtime_ns for p in cells} == before
    assert doc.exists() and res["cells"] == 4


def test_omega_ablation__copies_gains_and_section(tmp_path):
    """Hand-made cells: copies averaged per fragment = (delivered - replaced) / (iterations x
    n x Omega); gains paired by seed; the section states both mechanisms' verdicts."""
    def cell(rmse, delivered, replaced, K, seed):
        curve = {"time_s": [1.0, 2.0], "rmse_mean": [3.0, rmse], "rmse_avgmodel": [3.0, rmse],
                 "msgs_delivered": [0, delivered], "msgs_replaced": [0, replaced],
                 "msgs_sent": [0, delivered], "msgs_dropped": [0, 10],
                 "iterations_mean": [1.0, 5.0]}
        return {"curve": curve, "primary": "rmse", "higher_is_better": False, "seed": seed,
                "config": {"n_nodes": 4, "n_fragments": K}}

    # 4 nodes x 5 iterations x 8 fragments = 160 fragment-aggregations; 360 - 40 used -> 2.0
    assert analysis.copies_averaged(cell(2.0, 360, 40, 8, 0)) == 2.0
    idx = {("movielens", "omega1", "swift"): {s: cell(2.0 + 0.01 * s, 80, 0, 1, s)
                                               for s in range(3)},
           ("movielens", "omega1", "divshare"): {s: cell(1.9 + 0.01 * s, 80, 0, 1, s)
                                                  for s in range(3)},
           ("movielens", "omega8", "divshare"): {s: cell(1.5 + 0.02 * s, 640, 0, 8, s)
                                                  for s in range(3)}}
    ab = analysis.omega_ablation(idx)
    assert ab["rows"][8]["gain_omega1"]["verdict"] == "holds"
    assert ab["rows"][1]["gain_swift"]["mean"] > 0 and ab["rows"][1]["gain_omega1"] is None
    text = "\n".join(doc_omega.omega_section({"omega": ab}, tmp_path, str, "cmd"))
    assert "**Queue replacement**" in text and "**Fragmentation**" in text
    assert (tmp_path / "omega_ablation.png").exists()
