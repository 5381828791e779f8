"""Issue 16, "runs a user can trust": mistakes are one line `divjax: error: ...` (exit code 2)
naming the problem and the fix, never a traceback; degenerate configs that would run and
exit 0 are refused; every configuration flag documents itself from SimConfig. Nothing here
compiles a simulation."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import SMALL, error_line

from divjax.engine import checkpoint
from divjax.frontends import cli, flags, outdir
from divjax import config, data
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.network.topology import adjacency

# ----------------------------------------------------------------------------- (2) tracebacks


def test_cli__resume_of_a_missing_dir(capsys, tmp_path, no_engine):
    line = error_line(capsys, ["run", "--resume", str(tmp_path / "nope")])
    assert "no such directory" in line and "--checkpoint-every" in line
    line = error_line(capsys, ["run", "--resume", str(tmp_path)])        # exists, no run.json
    assert "not a checkpointed run" in line


def test_cli__resume_with_hparams_of_another_n(capsys, tmp_path, no_engine):
    cfg = SimConfig(n_nodes=8)
    checkpoint.save_run_spec(tmp_path, cfg, default_hparams(cfg.replace(n_nodes=16)), seed=0)
    line = error_line(capsys, ["run", "--resume", str(tmp_path)])
    assert "built for 16 nodes" in line and "n_nodes=8" in line


def test_hparams_of_another_n_are_refused():
    cfg = SimConfig(n_nodes=8)
    config.check_hparams(cfg, default_hparams(cfg))
    with pytest.raises(ConfigError, match=r"built for 16 nodes.*n_nodes=8.*default_hparams"):
        config.check_hparams(cfg, default_hparams(cfg.replace(n_nodes=16)))


@pytest.mark.parametrize("item,says", [("lr=abc", "'abc' is not a number"),
                                       ("n_nodes=16.5", "'16.5' is not a whole number"),
                                       ("lr=log:a:1:3", "log:LO:HI:K"),
                                       ("lr=nan", "not a finite number"),
                                       ("bogus=1", "not a SimConfig field")])
def test_cli__bad_grid_values(capsys, tmp_path, no_engine, item, says):
    line = error_line(capsys, ["sweep", *SMALL, "--grid", item, "--out", str(tmp_path / "s")])
    assert says in line


def test_cli__lr_nan_and_wrong_types(capsys, tmp_path, no_engine):
    line = error_line(capsys, ["run", *SMALL, "--lr", "nan", "--out", str(tmp_path / "r")])
    assert "lr=nan" in line
    with pytest.raises(ConfigError, match=r"n_nodes=16\.5 is invalid: n_nodes takes a whole"):
        SimConfig(n_nodes=16.5)
    with pytest.raises(ConfigError, match=r"n_nodes='16' is invalid.*not str"):
        SimConfig(n_nodes="16")
    with pytest.raises(ConfigError, match=r"momentum_buffer=1 is invalid: .*True or False"):
        SimConfig(momentum_buffer=1)
    with pytest.raises(ConfigError, match=r"straggler_mbps=2\.0 is invalid.*\(12\.0,\)"):
        SimConfig(straggler_mbps=2.0)
    cfg = SimConfig(n_nodes=np.int64(8), lr=np.float32(0.5), duration_s=20)   # numpy, int
    assert type(cfg.n_nodes) is int and type(cfg.lr) is float and type(cfg.duration_s) is float
    assert hash(cfg) == hash(SimConfig(n_nodes=8, lr=0.5))


@pytest.mark.parametrize("text,says", [("0 1\n1 x\n", r"line 2: '1 x' is not an 'i j' pair"),
                                       ("0 1\n1 2 3\n", r"line 2: '1 2 3'"),
                                       ("8\n0 1\n1 2\n", r"declares 8 nodes.*--n-nodes 8"),
                                       ("0 1\n1 2\n2 0\n", r"2 of n_nodes=5 nodes no edge "
                                                           r"\(nodes 3, 4\)"),
                                       ("0 1\n2 3\n4 0\n", r"disconnected: 2 groups")])
def test_cli__bad_edge_lists(capsys, tmp_path, no_engine, text, says):
    path = tmp_path / "g.edges"
    path.write_text(text)
    cfg = SimConfig(n_nodes=5, fanout=1, topology=f"file:{path}")
    with pytest.raises(ConfigError, match=says):
        adjacency(cfg)


def test_cli__bad_edge_list_through_the_cli(capsys, tmp_path):
    path = tmp_path / "g.edges"
    path.write_text("0 1\n1 two\n")
    line = error_line(capsys, ["run", *SMALL, "--topology", f"file:{path}", "--dry-run"])
    assert "line 2" in line


def test_cli__plot_of_what_is_not_a_run(capsys, tmp_path):
    line = error_line(capsys, ["plot", str(tmp_path / "nope")])
    assert "does not exist" in line
    sweep_dir = tmp_path / "sw"
    sweep_dir.mkdir()
    (sweep_dir / "metrics.jsonl").write_text("{}\n")
    assert "`divjax sweep` output" in error_line(capsys, ["plot", str(sweep_dir)])
    cmp_dir = tmp_path / "cmp"
    cmp_dir.mkdir()
    (cmp_dir / "compare.json").write_text("{}")
    assert "compare.png" in error_line(capsys, ["plot", str(cmp_dir)])
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    (unfinished / "run.json").write_text("{}")
    assert f"--resume {unfinished}" in error_line(capsys, ["plot", str(unfinished)])


# ----------------------------------------------------------------------------- (3) degenerate


@pytest.mark.parametrize("algorithm", ["divshare", "swift", "epidemic", "adpsgd"])
def test_config__fanout_zero_with_an_algorithm_that_communicates(algorithm):
    with pytest.raises(ConfigError, match=r"fanout=0.*algorithm='local'"):
        SimConfig(algorithm=algorithm, fanout=0)
    SimConfig(algorithm="local", fanout=0)
    SimConfig(algorithm="dpsgd", fanout=0)      # D-PSGD follows the topology, not the fanout


def test_config__adpsgd_with_fanout_one_sends_no_ping(capsys, no_engine):
    with pytest.raises(ConfigError, match=r"fanout=1.*fanout // 2 pings.*fanout >= 2"):
        SimConfig(algorithm="adpsgd", fanout=1)
    line = error_line(capsys, ["run", *SMALL, "--algorithm", "adpsgd", "--fanout", "1"])
    assert "fanout >= 2" in line


@pytest.mark.parametrize("field,value,says", [("lr", -0.1, "finite number >= 0"),
                                              ("lr", float("inf"), "finite number >= 0"),
                                              ("momentum", 1.0, r"\[0, 1\)"),
                                              ("momentum", -0.1, r"\[0, 1\)"),
                                              ("weight_decay", -1e-4, ">= 0")])
def test_config__optimizer_values_out_of_range(field, value, says):
    with pytest.raises(ConfigError, match=f"{field}=.*{says}"):
        SimConfig(**{field: value})


def test_config__straggler_bandwidths_shorter_than_the_stragglers(capsys, no_engine):
    with pytest.raises(ConfigError, match=r"2 bandwidths for n_stragglers=3.*single value"):
        SimConfig(n_nodes=8, fanout=2, n_stragglers=3, straggler_mbps=(1.0, 2.0))
    # exactly one value applies to every straggler; more values than stragglers are fine
    hp = default_hparams(SimConfig(n_nodes=8, fanout=2, n_stragglers=3, straggler_mbps=(1.0,)))
    np.testing.assert_allclose(np.asarray(hp.upload_bps)[-3:], 1e6 / 8)
    hp = default_hparams(SimConfig(n_nodes=8, fanout=2, n_stragglers=2,
                                   straggler_mbps=(1.0, 2.0, 3.0)))
    np.testing.assert_allclose(np.asarray(hp.upload_bps)[-2:], [1e6 / 8, 2e6 / 8])
    line = error_line(capsys, ["run", *SMALL, "--n-stragglers", "3", "--straggler-mbps", "1,2"])
    assert "straggler_mbps" in line


def _ratings_csv(rows):
    return "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{r},964982703\n" for u, m, r in rows)


def test_data__movielens_cut_at_a_line_boundary(tmp_path):
    # the GroupLens README next to the file gives the count
    rows = [(u, m, 4.0) for u in range(1, 11) for m in range(1, 6)]
    (tmp_path / "ratings.csv").write_text(_ratings_csv(rows[:-5]))
    (tmp_path / "README.txt").write_text("This dataset (ml-latest-small) describes ... It "
                                         "contains 50 ratings and 3 tag applications ...")
    with pytest.raises(ConfigError, match=r"45 ratings where 50 are expected \(says "
                                          r"README\.txt.*truncated"):
        data.load_movielens(str(tmp_path))
    (tmp_path / "ratings.csv").write_text(_ratings_csv(rows))
    assert len(data.load_movielens(str(tmp_path))[0].rating) == 50
    # without a README: the 2018 latest-small release, recognised by its first ratings
    other = tmp_path / "other"
    other.mkdir()
    (other / "ratings.csv").write_text(_ratings_csv([(1, 1, 4.0), (1, 3, 4.0), (1, 6, 4.0),
                                                     (2, 1, 3.0)]))
    with pytest.raises(ConfigError, match=r"4 ratings where 100,836 are expected.*"
                                          r"ml-latest-small \(2018\)"):
        data.load_movielens(str(other))


# ----------------------------------------------------------------------------- (1) early checks


def test_cli__explicit_out_that_holds_a_run_is_refused(capsys, tmp_path, no_engine):
    (tmp_path / "metrics.json").write_text("{}")
    outdir.record(tmp_path, "metrics.json")   # divjax's (a user's own: tests/test_outputs.py)
    line = error_line(capsys, ["run", *SMALL, "--out", str(tmp_path)])
    assert "already holds results (metrics.json)" in line and "--overwrite" in line
    assert (tmp_path / "metrics.json").read_text() == "{}"
    for cmd in (["sweep", "--grid", "lr=0.1"], ["compare", "--algorithms", "divshare"]):
        line = error_line(capsys, [*cmd, *SMALL, "--out", str(tmp_path)])
        assert "already holds results" in line


def test_cli__overwrite_removes_only_results(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "checkpoints" / "40").mkdir(parents=True)
    outdir.record(tmp_path, "metrics.json", "checkpoints")
    (tmp_path / "notes.txt").write_text("mine")
    assert flags.prepare_out(tmp_path, "x", overwrite=True) == tmp_path
    outdir.release(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0] != ".") == ["notes.txt"]


def test_cli__unwritable_out_is_found_before_any_work(capsys, tmp_path, no_engine):
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = error_line(capsys, ["run", *SMALL, "--out", str(blocker / "run")])
    assert "cannot write there" in line
    line = error_line(capsys, ["run", *SMALL, "--out", str(blocker)])
    assert "is a file" in line


def test_cli__run_writes_config_json_before_building_the_engine(tmp_path, monkeypatch):
    import divjax.engine.sim

    seen = {}

    def stop(cfg, **kw):
        seen["config"] = json.loads((tmp_path / "r" / "config.json").read_text())
        raise ConfigError("stop here")

    monkeypatch.setattr(divjax.engine.sim, "make_engine", stop)
    assert cli.main(["run", *SMALL, "--out", str(tmp_path / "r")]) == 2
    assert seen["config"]["config"]["n_nodes"] == 4 and seen["config"]["status"] == "running"


def test_cli__default_out_dirs_are_unique(tmp_path, monkeypatch):
    """Runs started in the same second get different directories (atomic mkdir), also when
    many claim the name at once."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.chdir(tmp_path)
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: flags.prepare_out(None, "20260101-000000-divshare-x"),
                             range(16)))
    assert len(set(dirs)) == 16 and all(d.is_dir() for d in dirs)
    assert sorted(d.name for d in dirs)[:2] == ["20260101-000000-divshare-x",
                                                "20260101-000000-divshare-x-10"]


# ----------------------------------------------------------------------------- (4) help


def test_cli__every_config_flag_has_help_from_the_simconfig_field():
    import argparse

    docs = config.field_help()
    parser = cli.build_parser()
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
               ).choices["run"]
    by_flag = {o: a for a in run._actions for o in a.option_strings}
    for f in dataclasses.fields(SimConfig):
        assert docs.get(f.name), f"SimConfig.{f.name} has no `# ...` documentation"
        action = by_flag["--" + f.name.replace("_", "-")]
        assert action.help and action.help.startswith(docs[f.name].replace("%", "%%"))
        assert "(default: " in action.help
    assert "Mbit/s" in by_flag["--fast-mbps"].help and "milliseconds" in \
        by_flag["--latency-ms"].help
    text = run.format_help()   # renders: no stray % in the documentation
    assert "--straggler-compute-factor" in text


def test_hparams_of_another_n_in_the_checkpoint_driver():
    from divjax.engine.sim import make_engine

    cfg = SimConfig(n_nodes=4, fanout=2)
    engine = make_engine(cfg)
    with pytest.raises(ConfigError, match="built for 6 nodes"):
        checkpoint.drive(engine, None, default_hparams(cfg.replace(n_nodes=6)))


def test_compare__an_algorithm_named_twice_is_refused(capsys, tmp_path):
    line = error_line(capsys, ["compare", "--algorithms", "divshare,swift,divshare", *SMALL,
                               "--out", str(tmp_path / "c")])
    assert "['divshare'] twice" in line
