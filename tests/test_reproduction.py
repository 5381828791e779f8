"""divjax.reproduction (the grid behind scripts/reproduction_grid.py) at tiny scale: cells
written, skipped on rerun, the document regenerated from them; the analysis on hand-made cells."""

import json
from pathlib import Path

import pytest

from divjax.reproduction import analysis, cli, doc_omega, doc_tuning, grid, plateaus, tuning
from divjax.reproduction import cells as cells_mod

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
    # the cells record this checkout's commit but not its working tree's state, so a developer's
    # uncommitted engine edits do not make every cell "dirty" here (only the one marked below)
    clean = {**cells_mod.git_commit(), "engine_dirty": False}
    monkeypatch.setattr(cli, "git_commit", lambda: clean)
    monkeypatch.setattr(cells_mod, "git_commit", lambda: clean)
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
    # a cell made with uncommitted engine edits is named in the document, and --rerun-dirty
    # reruns just that one (the checkout's own state is not the test's business: clean here)
    dirty = out / "cells" / "movielens" / "r1-s1" / "divshare-seed0.json"
    c = json.loads(dirty.read_text())
    c["git"]["engine_dirty"] = True
    dirty.write_text(json.dumps(c))
    cli.main(argv)
    assert "movielens/r1-s1/divshare-seed0 (" in doc.read_text().split(
        "## Cells made with uncommitted engine edits")[1]
    before = {p: p.stat().st_mtime_ns for p in cells}
    monkeypatch.setattr(cli, "git_commit", lambda: {"commit": "0" * 40, "engine_dirty": False})
    monkeypatch.setattr(cells_mod, "git_commit", lambda: {"commit": "0" * 40,
                                                          "engine_dirty": False})
    cli.main([*argv, "--rerun-dirty"])
    after = {p: p.stat().st_mtime_ns for p in cells}
    assert [p for p in cells if after[p] != before[p]] == [dirty]
    assert json.loads(dirty.read_text())["git"]["engine_dirty"] is False
    assert "None: every cell was made from a committed engine." in doc.read_text()


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


def test_tune_groups__rates_are_points_of_one_group_per_algorithm(monkeypatch):
    """The tune part: one group per algorithm, its learning rates as HParams points (regimes
    tune-lr<v>) on a held-out validation share; the tuned part: each algorithm of TUNED_LR at its
    rate and length, none before the rates are fixed."""
    groups = tuning.tune_groups("tiny", "", (0, 1, 2))
    assert [g.algo for g in groups] == ["divshare", "local"]
    g = groups[0]
    assert g.regimes == ("tune-lr0.1", "tune-lr0.3") and g.points == ({"lr": 0.1}, {"lr": 0.3})
    assert g.seeds == (0, 1, 2) and g.part == "tune"
    if tuning.has_validation_share():
        assert g.cfg.validation_share == tuning.VALIDATION_SHARE
    assert tuning.tuned_groups("tiny", "", (0,)) == [] or tuning.TUNED_LR
    monkeypatch.setattr(tuning, "TUNED_LR", {"swift": 0.4, "local": 0.05})
    tuned = {g.algo: g for g in tuning.tuned_groups("tiny", "", (0, 1))}
    assert tuned["swift"].cfg.lr == 0.4 and tuned["local"].cfg.lr == 0.05
    assert tuned["swift"].chunk == 1 and tuned["swift"].regimes == ("tuned",)
    assert "tune" in grid.ALL_PARTS and "tuned" in grid.ALL_PARTS


def test_tuned_long__divshare_as_in_the_tuned_part_only_longer(monkeypatch):
    """The tuned-long part: DivShare with the tuned part's config (rate, seeds, evaluations every
    TUNED_EVERY iterations, so the first TUNED_ITERS["divshare"] iterations can be checked
    against the tuned cells) except its length, TUNED_LONG_ITERS iterations."""
    from divjax.config import SimConfig

    base = SimConfig(task="synthetic", compute_s=0.5, tick_s=0.05, duration_s=30.0,
                     eval_every_s=1.5, lr=0.2)
    monkeypatch.setattr(tuning, "main_config", lambda scale, data_dir: base)
    (g,) = grid.build_groups(["tuned-long"], "cpu", "", (0, 1, 2))
    (t,) = [x for x in tuning.tuned_groups("cpu", "", (0, 1, 2)) if x.algo == "divshare"]
    assert g.part == "tuned-long" and g.regimes == ("tuned-long",) and g.algo == "divshare"
    assert g.seeds == t.seeds == (0, 1, 2) and g.points == ({},) and g.chunk == t.chunk
    assert g.cfg == t.cfg.replace(duration_s=tuning.TUNED_LONG_ITERS * 0.5)
    assert g.cfg.lr == tuning.TUNED_LR["divshare"]
    assert g.cfg.eval_every_s == tuning.TUNED_EVERY * 0.5
    assert tuning.TUNED_ITERS["divshare"] < tuning.TUNED_LONG_ITERS
    assert tuning.TUNED_LONG_ITERS % tuning.TUNED_EVERY == 0
    assert tuning.tuned_long_groups("tiny", "", (0,))[0].cfg.duration_s == 40 * base.compute_s
    assert "tuned-long" in grid.ALL_PARTS


def test_choose_lr__mean_over_seeds_and_diverged_is_worst():
    """Hand-computed: lr 0.4 has the lowest single seed but diverged on another (worst);
    lr 0.1's mean (1.0 + 1.2 + 1.1) / 3 = 1.1 beats lr 0.2's (0.9 + 1.4 + 1.3) / 3 = 1.2."""
    def cell(v, diverged=False):
        return {"curve": {"rmse_mean": [3.0, v]}, "primary": "rmse",
                "higher_is_better": False, "diverged": diverged}

    idx = {("movielens", "tune-lr0.1", "swift"): {0: cell(1.0), 1: cell(1.2), 2: cell(1.1)},
           ("movielens", "tune-lr0.2", "swift"): {0: cell(0.9), 1: cell(1.4), 2: cell(1.3)},
           ("movielens", "tune-lr0.4", "swift"): {0: cell(0.5), 1: cell(float("nan"), True),
                                                   2: cell(0.6)},
           ("movielens", "tune-lr0.1", "local"): {0: cell(2.0)}}
    scores = tuning.lr_scores(idx, "swift")
    assert sorted(scores) == [0.1, 0.2, 0.4]
    assert abs(scores[0.1]["mean"] - 1.1) < 1e-12 and abs(scores[0.2]["mean"] - 1.2) < 1e-12
    assert scores[0.4]["mean"] == float("inf")
    assert tuning.choose_lr(scores) == 0.1
    # a tie goes to the smaller rate; every rate diverged: no choice
    assert tuning.choose_lr({0.2: {"mean": 1.0, "higher_is_better": False},
                             0.1: {"mean": 1.0, "higher_is_better": False}}) == 0.1
    assert tuning.choose_lr({0.1: {"mean": float("inf"), "higher_is_better": False}}) is None


def test_tuned_analysis__gain_at_60_and_at_best_with_bound_kind():
    """Hand-made tuned cells (RMSE, compute 1 s, evaluations at 0, 30, 60, 90 s): DivShare's
    per-seed best is its end, the baseline's best is at 60 s; gains paired by seed; DivShare
    still improving and the baseline past its best -> the gain at the best points is a lower
    bound."""
    def cell(ys, algo, seed):
        return {"curve": {"time_s": [0.0, 30.0, 60.0, 90.0], "rmse_mean": ys},
                "primary": "rmse", "higher_is_better": False, "seed": seed,
                "config": {"duration_s": 90.0, "compute_s": 1.0, "lr": 0.1}}

    d = {s: cell([3.0, 2.5, 2.0, 1.5 + 0.01 * s], "divshare", s) for s in range(3)}
    b = {s: cell([3.0, 2.8, 2.4, 2.5], "swift", s) for s in range(3)}
    res = plateaus.tuned_analysis({("movielens", "tuned", "divshare"): d,
                                   ("movielens", "tuned", "swift"): b})
    # at 60 s: (2.4 - 2.0) / 2.4 = 16.67% for every seed
    assert abs(res["gain_60"]["swift"]["mean"] - 100 * 0.4 / 2.4) < 1e-9
    # best points: DivShare 1.5 + 0.01 s, Swift 2.4: mean of (2.4 - x) / 2.4
    want = sum(100 * (2.4 - (1.5 + 0.01 * s)) / 2.4 for s in range(3)) / 3
    assert abs(res["gain_best"]["swift"]["mean"] - want) < 1e-9
    assert res["algos"]["divshare"]["status"] == "still improving"
    assert res["algos"]["swift"]["status"] == "past its best"
    assert res["bound"]["swift"] == "a lower bound (DivShare still improving)"
    assert res["algos"]["divshare"]["iterations"] == 90


def test_tuned_analysis__long_divshare_gives_sizes_at_plateaus_or_bounds():
    """Hand-made cells (RMSE, evaluations every 30 s): tuned DivShare to 90 s, tuned-long
    DivShare to 150 s with the same first four evaluations, flat over its last 20% (a plateau);
    local-only flat (a plateau) and Swift still improving at its end (memory-bound). At the best
    points: over local-only (3.0 - 1.2) / 3.0 = 60% "at plateaus", over Swift (2.4 - 1.2) / 2.4
    = 50% "an upper bound". Equal accuracy (tuned cells): Swift ends at 2.4, first reached at
    60 s; DivShare reaches 2.4 at 30 + 30 x 0.1 / 0.5 = 36 s: 1.667x; local-only's 3.0, first
    reached at 30 s, DivShare at 30 x 0.2 / 0.7 = 8.571 s: 3.5x."""
    def cell(ts, ys, seed):
        return {"curve": {"time_s": ts, "rmse_mean": ys, "msgs_sent": list(range(len(ts)))},
                "primary": "rmse", "higher_is_better": False, "seed": seed,
                "config": {"duration_s": ts[-1], "compute_s": 1.0, "lr": 0.4}}

    t = [0.0, 30.0, 60.0, 90.0, 120.0, 150.0]
    d = {s: cell(t[:4], [3.2, 2.5, 2.0, 1.6], s) for s in range(3)}
    long = {s: cell(t, [3.2, 2.5, 2.0, 1.6, 1.2, 1.2], s) for s in range(3)}
    loc = {s: cell(t[:4], [3.1, 3.0, 3.0, 3.0], s) for s in range(3)}
    sw = {s: cell([0.0, 15.0, 30.0, 45.0, 60.0], [3.0, 2.85, 2.7, 2.55, 2.4], s)
          for s in range(3)}
    idx = {("movielens", "tuned", "divshare"): d, ("movielens", "tuned-long", "divshare"): long,
           ("movielens", "tuned", "local"): loc, ("movielens", "tuned", "swift"): sw}
    res = plateaus.tuned_analysis(idx)
    lg = res["long"]
    assert lg["plateau"]["status"] == "stopped improving" and lg["plateau"]["iterations"] == 150
    assert lg["check"]["identical"] and lg["check"]["evaluations"] == 4
    assert abs(lg["gain_best"]["local"]["mean"] - 60.0) < 1e-9
    assert lg["bound"]["local"] == "at plateaus"
    assert abs(lg["gain_best"]["swift"]["mean"] - 50.0) < 1e-9
    assert lg["bound"]["swift"] == "an upper bound (the baseline still improving)"
    eq = res["equal_accuracy"]["swift"]
    assert abs(eq["mean"] - 60 / 36) < 1e-9 and eq["censored_div"] == 0
    assert abs(res["equal_accuracy"]["local"]["mean"] - 3.5) < 1e-9
    text = "\n".join(doc_tuning.long_lines(res, idx, "cmd") + doc_tuning.plateau_summary(
        {"tuned": res}))
    assert "**stopped improving**" in text and "bit for bit the same" in text
    assert "60% [60, 60] over local-only at 90 iterations (holds; at plateaus)" in text
    assert "longest that fits in memory" in text and "1.67x [1.67, 1.67] over Swift" in text
    (row,) = doc_tuning.plateau_front_rows({"tuned": res}, "where")
    assert row.startswith("| MovieLens, each algorithm at its tuned lr, DivShare to 150 "
                          "iterations (stopped improving) |") and "(holds; at plateaus)" in row
    # a long run whose first evaluations differ from the tuned cells': named, with its size
    long[1]["curve"]["rmse_mean"][2] = 2.001
    chk = plateaus.tuned_analysis(idx)["long"]["check"]
    assert not chk["identical"] and chk["differ"] == ["rmse_mean"]
    assert abs(chk["max_abs"] - 0.001) < 1e-9 and abs(chk["max_rel"] - 0.0005) < 1e-9


def test_tuned_speedup__runs_of_different_lengths_censor_at_the_shorter_end(monkeypatch):
    """DivShare (90 s) reaches RMSE 2.0 at 30 s; Swift, run only 60 s, never does: the speedup's
    lower bound is 60 / 30 = 2 (the window both runs cover), not DivShare's 90 / 30 = 3."""
    def cell(ts, ys, seed):
        return {"curve": {"time_s": ts, "rmse_mean": ys}, "primary": "rmse",
                "higher_is_better": False, "seed": seed,
                "config": {"duration_s": ts[-1], "compute_s": 1.0, "lr": 0.1}}

    d = {s: cell([0.0, 30.0, 60.0, 90.0], [3.0, 2.0, 1.5, 1.4], s) for s in range(3)}
    b = {s: cell([0.0, 30.0, 60.0], [3.0, 2.8, 2.6], s) for s in range(3)}
    monkeypatch.setattr(plateaus, "TUNED_TARGETS", (2.0,))
    res = plateaus.tuned_analysis({("movielens", "tuned", "divshare"): d,
                                   ("movielens", "tuned", "swift"): b})
    sp = res["speedup"][("swift", 2.0)]
    assert abs(sp["mean"] - 2.0) < 1e-9 and sp["censored_base"] == 3


def test_tuned_analysis__a_diverged_seed_is_counted_and_left_out_of_the_pairs():
    """A baseline seed whose run diverged (NaN curve): its plateau uses the other seeds, it is
    counted, and the gains pair only the seeds where neither run diverged."""
    def cell(ys, seed, diverged=False):
        return {"curve": {"time_s": [0.0, 30.0, 60.0], "rmse_mean": ys}, "primary": "rmse",
                "higher_is_better": False, "seed": seed, "diverged": diverged,
                "config": {"duration_s": 60.0, "compute_s": 1.0, "lr": 0.4}}

    d = {s: cell([3.0, 2.0, 1.5], s) for s in range(3)}
    b = {0: cell([float("nan")] * 3, 0, True), 1: cell([3.0, 2.5, 2.0], 1),
         2: cell([3.0, 2.5, 2.0], 2)}
    all_diverged = {s: cell([float("nan")] * 3, s, True) for s in range(3)}
    res = plateaus.tuned_analysis({("movielens", "tuned", "divshare"): d,
                                   ("movielens", "tuned", "adpsgd"): b,
                                   ("movielens", "tuned", "local"): all_diverged})
    assert res["algos"]["adpsgd"]["diverged"] == 1 and res["algos"]["adpsgd"]["seeds"] == 2
    assert res["algos"]["local"]["status"] == "diverged"
    g = res["gain_best"]["adpsgd"]
    assert g["n"] == 2 and abs(g["mean"] - 25.0) < 1e-9      # (2.0 - 1.5) / 2.0
    assert "local" not in res["gain_best"]


def test_grid__a_plugin_algorithm_runs_beside_divshare(tmp_path, monkeypatch):
    """--with-algorithm NAME=SPEC runs a user's algorithm in every DivShare group: its cells
    pair by seed with DivShare's and record the plug-in's file and sha256; a spec that does
    not parse, a taken name, or a path that does not import are refused before anything runs."""
    import hashlib

    from divjax.config import SimConfig

    root = Path(__file__).resolve().parents[1]
    example = root / "examples" / "prioritized_divshare.py"
    cfg = SimConfig(task="synthetic", n_nodes=4, n_fragments=2, fanout=2, local_steps=2,
                    batch_size=4, tick_s=0.05, duration_s=0.5, eval_every_s=0.25,
                    compute_s=0.1, lr=0.1, n_stragglers=1, straggler_mbps=(0.5,),
                    inbox="sum")   # what the example models
    groups = [grid.Group("movielens", "map", "divshare", cfg, ("r1-s1",), ({},), (0,), 0),
              grid.Group("movielens", "map", "swift", cfg.replace(algorithm="swift"),
                         ("r1-s1",), ({},), (0,), 0)]
    monkeypatch.setattr(grid, "build_groups", lambda *a: groups)
    out = tmp_path / "rep"
    argv = ["--scale", "tiny", "--data-dir", "", "--seeds", "1", "--out", str(out),
            "--doc", str(tmp_path / "r.md")]
    for bad, why in (("prio", "give NAME="), ("Prio=x:y", "give NAME="),
                     ("swift=" + f"{example}:make_prioritized", "is taken")):
        with pytest.raises(SystemExit, match=why):
            cli.main([*argv, "--with-algorithm", bad])
    with pytest.raises(Exception, match="nowhere_at_all"):
        cli.main([*argv, "--with-algorithm", "prio=nowhere_at_all:make"])
    assert not out.exists() or not list(out.glob("cells/*/*/*.json"))
    cli.main([*argv, "--with-algorithm", f"prio={example}:make_prioritized"])
    made = sorted(p.relative_to(out / "cells").as_posix() for p in out.glob("cells/*/*/*.json"))
    assert made == ["movielens/r1-s1/divshare-seed0.json", "movielens/r1-s1/prio-seed0.json",
                    "movielens/r1-s1/swift-seed0.json"]
    cell = json.loads((out / "cells" / "movielens" / "r1-s1" / "prio-seed0.json").read_text())
    assert cell["config"]["algorithm"] == f"{example}:make_prioritized"
    assert cell["plugin"]["algorithm"]["sha256"] == hashlib.sha256(example.read_bytes()).hexdigest()
    div = json.loads((out / "cells" / "movielens" / "r1-s1" / "divshare-seed0.json").read_text())
    assert "plugin" not in div and div["curve"]["time_s"] == cell["curve"]["time_s"]
    # the same NAME with another version of the source: the old cells would be skipped and new
    # ones made by other code under one name, so it is refused
    edited = tmp_path / "prio_edited.py"
    edited.write_text(example.read_text() + "\n# edited\n")
    with pytest.raises(SystemExit, match="not this source"):
        cli.main([*argv, "--with-algorithm", f"prio={edited}:make_prioritized"])
