"""Issue 30: sweeps survive interruption. Every chunk of points is written to OUT/points/ as it
finishes; a stopped sweep's tables hold every finished point (also of the group that was
running); `divjax sweep --resume DIR` runs only the rest and writes what an uninterrupted sweep
writes. The size of a grid is printed (and a large one needs --yes) before anything starts; a
field given twice to --grid is an error."""

import csv
import json
import signal

import pytest

from divjax.frontends import cli, presets, sweep_store
from divjax.frontends import sweep as sweep_mod
from divjax.config import ConfigError

SMALL = ["--preset", "synthetic-small", "--n-nodes", "4", "--n-stragglers", "1", "--fanout",
         "2", "--duration-s", "1", "--eval-every-s", "0.25"]
CFG = presets.get_preset("synthetic-small").replace(n_nodes=4, n_stragglers=1, fanout=2,
                                                    duration_s=1.0, eval_every_s=0.25)
GRID = {"n_nodes": [4, 5], "lr": [0.05, 0.1, 0.2]}   # 2 groups x 3 configs x 2 seeds, chunks of 2


def _table(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_sweep__interrupted_then_resumed_equals_an_uninterrupted_sweep(tmp_path, monkeypatch):
    calls = {"n": 0}

    def stop_after_five_chunks(done, total):
        calls["n"] += 1
        if calls["n"] == 5:             # group 0 done (4 chunks), group 1 has one chunk done
            raise KeyboardInterrupt("test")

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        sweep_mod.sweep(CFG, GRID, seeds=2, chunk_size=2, out=out,
                        progress=stop_after_five_chunks)
    # the finished points are on disk, also the running group's (config 3 and 4, seed 0)
    rows = _table(out)
    C = 4
    assert len(rows) == (6 + 2) * C
    assert {(r["config"], r["seed"]) for r in rows if r["n_nodes"] == "5"} == {("3", "0"),
                                                                               ("4", "0")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["points_done"] == 8
    assert summary["points_total"] == 12
    assert "--resume" in (out / "summary.md").read_text()
    # resumed: group 0 is read back, not rebuilt; group 1 runs only its 3 missing chunks
    import divjax.tasks.registry

    built, real, seen = [], divjax.tasks.registry.make_task, []
    monkeypatch.setattr(divjax.tasks.registry, "make_task", lambda c: built.append(c) or real(c))
    res = sweep_mod.sweep(CFG, GRID, seeds=2, chunk_size=2, out=out, resume=True,
                          progress=lambda d, t: seen.append(d))
    assert [c.n_nodes for c in built] == [5] and seen == [4, 6, 6]
    whole = sweep_mod.sweep(CFG, GRID, seeds=2, chunk_size=2, out=tmp_path / "whole")
    assert _table(out) == _table(tmp_path / "whole")          # identical rows, as text
    assert res.rows == whole.rows
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "whole"))
    assert a["final"] == b["final"] and a["best"] == b["best"] and a["complete"] is True
    # a resume with other arguments is refused, naming the difference
    with pytest.raises(ConfigError, match=r"--grid lr: \[0.05, 0.1, 0.2\] there, \[0.05\] here"):
        sweep_mod.sweep(CFG, {**GRID, "lr": [0.05]}, seeds=2, chunk_size=2, out=out,
                        resume=True)
    with pytest.raises(ConfigError, match="seeds: 2 there, 3 here"):
        sweep_mod.sweep(CFG, GRID, seeds=3, chunk_size=2, out=out, resume=True)


def test_sweep_cli__sigterm_within_a_group_keeps_its_points_and_resume_finishes(
        tmp_path, monkeypatch, capsys):
    """An lr grid is one group: SIGTERM after 4 of 8 points used to leave an empty folder."""
    real, calls = sweep_store.save_block, {"n": 0}

    def terminate_after_second(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(sweep_store, "save_block", terminate_after_second)
    out = tmp_path / "sw"
    args = ["sweep", *SMALL, "--grid", "lr=0.01,0.02,0.05,0.1", "--seeds", "2",
            "--chunk-size", "2"]
    assert cli.main([*args, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "after 4 of 8 point(s)" in err and f"divjax sweep --resume {out}" in err
    assert len(_table(out)) == 4 * 4
    monkeypatch.setattr(sweep_store, "save_block", real)
    # flags that differ from the recorded sweep are refused, naming them
    for extra, what in ((["--lr", "0.3"], "lr: 0.05 there, 0.3 here"),
                        (["--grid", "lr=0.01,0.02"], "--grid lr: "),
                        (["--out", str(out)], "drop --out")):
        assert cli.main(["sweep", "--resume", str(out), *extra]) == 2
        assert what in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(out)]) == 0
    rows = _table(out)
    assert len(rows) == 8 * 4 and {r["lr"] for r in rows} == {"0.01", "0.02", "0.05", "0.1"}
    assert json.loads((out / "summary.json").read_text())["complete"] is True


def test_sweep_cli__grid_size_is_printed_and_a_large_one_needs_yes(tmp_path, capsys,
                                                                  monkeypatch):
    import divjax.engine.sim

    def boom(*a, **k):
        raise AssertionError("built an engine")

    monkeypatch.setattr(divjax.engine.sim, "make_engine", boom)
    big = ["--grid", "n_nodes=" + ",".join(str(n) for n in range(4, 21)), "--grid",
           "lr=0.1,0.2"]
    assert cli.main(["sweep", *SMALL, *big, "--out", str(tmp_path / "big")]) == 2
    said = capsys.readouterr()
    assert "17 group(s) x 2 config(s) x 4 seed(s) = 136 points, 17 compilation(s)" in said.out
    assert "this sweep is large (17 groups" in said.err and "--yes" in said.err
    assert not (tmp_path / "big").exists()                    # refused before anything
    # a field given twice
    assert cli.main(["sweep", *SMALL, "--grid", "lr=0.1", "--grid", "lr=0.2"]) == 2
    assert "--grid lr is given twice ('lr=0.1' and 'lr=0.2')" in capsys.readouterr().err
    plan = sweep_mod.sweep_plan({"n_nodes": [4, 8], "lr": [0.1, 0.2, 0.3]}, 4)
    assert (plan["groups"], plan["points"], plan["large"]) == (2, 24, False)
    assert sweep_mod.sweep_plan({"n_nodes": list(range(4, 400))}, 1)["large"]


def test_sweep_cli__resume_of_a_folder_that_is_no_sweep_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert cli.main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "not a sweep folder that can be resumed" in capsys.readouterr().err
