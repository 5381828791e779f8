"""The two worked examples run as plug-ins through `divjax run`, `compare` and `sweep`, pass
divjax.testing, and record what code made them; bad plug-in specs are one clear error."""

import json
from pathlib import Path

import pytest

from divjax.frontends import cli
from divjax.config import ConfigError, SimConfig
from divjax.plugins import label, load, plugin_record
from divjax.testing import check_algorithm, conformance_config

ROOT = Path(__file__).resolve().parents[1]
ALGO = f"{ROOT}/examples/prioritized_divshare.py:make_prioritized"
TASK = f"{ROOT}/examples/own_model_task.py:make_task"
NET = ["--n-nodes", "6", "--n-fragments", "2", "--fanout", "2", "--local-steps", "2",
       "--batch-size", "8", "--tick-s", "0.01", "--compute-s", "0.1", "--duration-s", "1",
       "--eval-every-s", "0.5", "--n-stragglers", "2", "--straggler-mbps", "0.05",
       "--fast-mbps", "0.5", "--quiet"]


def test_example_algorithm__passes_the_conformance_checks():
    report = check_algorithm(ALGO, conformance_config(inbox="sum"))
    assert set(report.values()) == {"ok"}


def test_example_algorithm__runs_and_compares_through_the_cli(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--algorithm", ALGO, "--inbox", "sum", "--task", "synthetic", *NET,
                     "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    rec = config["plugins"]["algorithm"]
    assert rec["spec"] == ALGO and len(rec["sha256"]) == 64
    assert rec["file"].endswith("prioritized_divshare.py")
    cmp = tmp_path / "cmp"
    assert cli.main(["compare", "--algorithms", f"divshare,{ALGO}", "--inbox", "sum",
                     "--task", "synthetic", *NET, "--out", str(cmp)]) == 0
    table = (cmp / "compare.md").read_text()
    assert "prioritized-divshare" in table or label(ALGO) in table or ALGO in table


def test_example_task__sweeps_a_learning_rate(tmp_path):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--task", TASK, "--algorithm", "divshare", *NET[:-1],
                     "--grid", "lr=0.05,0.5", "--seeds", "1", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["lr"] for r in rows} == {0.05, 0.5}
    assert all(0.0 <= r["acc_mean"] <= 1.0 for r in rows)
    assert json.loads((out / "config.json").read_text())["plugins"]["task"]["spec"] == TASK


def test_plugins__bad_specs_are_clear_errors(tmp_path):
    cfg = SimConfig(task="synthetic")
    with pytest.raises(ConfigError, match="cannot be imported"):
        load("no_such_module_xyz:make", "algorithm")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load(f"{ROOT}/examples/own_model_task.py:nope", "task")
    with pytest.raises(ConfigError, match="does not exist"):
        load(f"{tmp_path}/missing.py:make", "algorithm")
    with pytest.raises(ConfigError, match="not an import path"):
        load("examples/x.py:", "algorithm")
    bad = tmp_path / "bad.py"
    bad.write_text("def make(cfg):\n    return 42\n")
    from divjax.algorithms import make_algorithm
    with pytest.raises(ConfigError, match="returned a int, not a divjax.Algorithm"):
        make_algorithm(cfg.replace(algorithm=f"{bad}:make"))
    with pytest.raises(ConfigError, match="unknown"):
        make_algorithm(cfg.replace(algorithm="divshare2"))
    assert plugin_record(cfg) == {}


def test_plugins__a_changed_plugin_is_another_run_for_a_checkpoint(tmp_path):
    from divjax.config import default_hparams
    from divjax.engine.fingerprint import fingerprint, fingerprint_mismatch

    src = (ROOT / "examples" / "prioritized_divshare.py").read_text()
    mod = tmp_path / "my_algo.py"
    mod.write_text(src)
    cfg = conformance_config(inbox="sum", algorithm=f"{mod}:make_prioritized")
    before = fingerprint(cfg, default_hparams(cfg))
    mod.write_text(src + "\n# edited\n")
    after = fingerprint(cfg, default_hparams(cfg))
    assert "algorithm plug-in" in (fingerprint_mismatch(before, after) or "")
