"""Issue 30: output folders never lose anything. `--overwrite` removes only what divjax recorded
in OUT/.divjax-manifest.json (never a user's file that carries one of its names), a foreign
config.json is never replaced, and the claim on a folder is atomic (an O_EXCL lock file), so a
second run into it is refused while the first runs. Nothing here compiles a simulation."""

import json
import os
import subprocess
import sys
import threading

import pytest

from divjax.frontends import cli, flags, outdir
from divjax.config import ConfigError

SMALL = ["--preset", "synthetic-small", "--n-nodes", "4", "--n-stragglers", "1", "--fanout",
         "2", "--duration-s", "1", "--eval-every-s", "0.25"]


@pytest.fixture
def stop_before_engine(monkeypatch):
    """`divjax run` stops (ConfigError, exit 2) where it would build the engine."""
    import divjax.engine.sim

    def stop(*a, **k):
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(divjax.engine.sim, "make_engine", stop)


def _user_files(d):
    """A user's own files that carry divjax's names (no manifest)."""
    (d / "checkpoints" / "mine").mkdir(parents=True)
    (d / "tensorboard").mkdir()
    (d / "summary.md").write_text("my notes")
    (d / "plot.png").write_bytes(b"my figure")


def test_overwrite__never_removes_a_users_files_with_divjax_names(tmp_path, capsys,
                                                                   stop_before_engine):
    _user_files(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert cli.main(["run", *SMALL, "--out", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "which divjax did not write there" in err[0], err
        for name in ("checkpoints", "plot.png", "summary.md", "tensorboard"):
            assert name in err[0]
    assert (tmp_path / "checkpoints" / "mine").is_dir() and (tmp_path / "tensorboard").is_dir()
    assert (tmp_path / "summary.md").read_text() == "my notes"
    assert (tmp_path / "plot.png").read_bytes() == b"my figure"


def test_overwrite__removes_exactly_what_the_manifest_lists(tmp_path):
    out = flags.prepare_out(tmp_path / "r", "x", writes=outdir.RUN_OUTPUTS)
    outdir.write_output(out, "summary.md", "divjax's")
    outdir.record(out, "checkpoints")
    (out / "checkpoints" / "40").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "compare.md").write_text("mine too")    # a divjax name `run` does not write
    outdir.release(out)
    with pytest.raises(ConfigError, match=r"already holds results \(checkpoints, summary.md\)"):
        flags.prepare_out(out, "x", writes=outdir.RUN_OUTPUTS)
    assert flags.prepare_out(out, "x", overwrite=True, writes=outdir.RUN_OUTPUTS) == out
    assert sorted(p.name for p in out.iterdir()) == [".divjax-lock", ".divjax-manifest.json",
                                                     "compare.md", "notes.txt"]
    assert outdir.recorded(out) == set()
    outdir.release(out)
    assert not (out / ".divjax-lock").exists()


def test_config_json__a_foreign_one_is_never_replaced(tmp_path, capsys, stop_before_engine):
    (tmp_path / "config.json").write_text('{"mine": 1}')
    for extra in ([], ["--overwrite"]):
        for cmd in (["run"], ["sweep", "--grid", "lr=0.1"]):
            assert cli.main([*cmd, *SMALL, "--out", str(tmp_path), *extra]) == 2
            err = capsys.readouterr().err
            assert "holds config.json, which divjax did not write there" in err
    assert (tmp_path / "config.json").read_text() == '{"mine": 1}'
    # the run's own pending config.json is recorded, so --overwrite may replace it later
    assert cli.main(["run", *SMALL, "--out", str(tmp_path / "r")]) == 2
    assert outdir.recorded(tmp_path / "r") == {"config.json"}
    assert cli.main(["run", *SMALL, "--out", str(tmp_path / "r"), "--overwrite"]) == 2
    assert json.loads((tmp_path / "r" / "config.json").read_text())["status"] == "running"


def test_claim__two_runs_into_one_out_at_once_one_is_refused(tmp_path):
    out, results = tmp_path / "same", []
    barrier = threading.Barrier(4)

    def claim():
        barrier.wait()
        try:
            results.append(flags.prepare_out(out, "x"))
        except ConfigError as e:
            results.append(str(e))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r == out]
    assert len(won) == 1, results
    assert all("is in use by another divjax run (pid" in r for r in results if r != out)
    outdir.release(out)
    assert flags.prepare_out(out, "x") == out   # free again once the first has ended
    outdir.release(out)


def test_claim__a_live_process_holds_it_and_its_lock_file_is_taken_over_after_it_ends(
        tmp_path):
    """Another process holds OUT/.divjax-lock (as a running divjax does): refused, naming it;
    once that process has ended (killed: its lock file is still there), the folder is free."""
    lock = tmp_path / outdir.LOCK
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, json, os, sys; "
         f"fd = os.open({str(lock)!r}, os.O_CREAT | os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, json.dumps({'pid': os.getpid(), "
         "'host': 'h', 'started': 's'}).encode()); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by another divjax run \\(pid "
                                              f"{holder.pid} on h"):
            flags.prepare_out(tmp_path, "x")
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()
    assert flags.prepare_out(tmp_path, "x") == tmp_path
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    outdir.release(tmp_path)
    assert not lock.exists()


def test_claim__the_cli_releases_it_when_the_command_ends(tmp_path, capsys,
                                                          stop_before_engine):
    assert cli.main(["run", *SMALL, "--out", str(tmp_path)]) == 2
    assert not (tmp_path / outdir.LOCK).exists() and not outdir.holds(tmp_path)


def test_manifest__only_divjax_names_count_and_writes_are_atomic(tmp_path):
    (tmp_path / outdir.MANIFEST).write_text(json.dumps({"written": ["../etc", "notes.txt",
                                                                    "metrics.csv"]}))
    assert outdir.recorded(tmp_path) == {"metrics.csv"}
    (tmp_path / "metrics.csv").write_text("old")
    with pytest.raises(RuntimeError), outdir.atomic_path(tmp_path / "metrics.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert (tmp_path / "metrics.csv").read_text() == "old"
    outdir.write_output(tmp_path, "metrics.csv", "new")
    assert (tmp_path / "metrics.csv").read_text() == "new"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume__a_run_folder_of_an_older_divjax_is_adopted_only_without_a_manifest(tmp_path):
    """`divjax run --resume` of a run folder written before manifests existed records its
    files as divjax's; a folder that has a manifest keeps it (a foreign file stays refused)."""
    for name in ("run.json", "config.json", "metrics.csv"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    assert flags.prepare_out(tmp_path, "", writes=outdir.RUN_OUTPUTS, resume=True,
                             adopt=True) == tmp_path
    outdir.release(tmp_path)
    assert outdir.recorded(tmp_path) == {"run.json", "config.json", "metrics.csv", "checkpoints"}
    (tmp_path / "summary.md").write_text("mine")
    with pytest.raises(ConfigError, match="holds summary.md, which divjax did not write"):
        flags.prepare_out(tmp_path, "", writes=outdir.RUN_OUTPUTS, resume=True, adopt=True)
