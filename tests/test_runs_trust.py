"""Issue 16, "runs a user can trust": results are never lost or mixed. SIGTERM checkpoints like
Ctrl-C; a truncated checkpoint falls back to the previous one; a checkpoint of another run is
refused; a diverging grid point does not abort a sweep, and a stopped sweep keeps what it did.

Three tiny compiled runs (n = 4 nodes, 1 simulated second) shared by the whole module."""

import contextlib
import io
import json
import shutil
import signal

import jax
import pytest

from divjax.engine import checkpoint
from divjax.frontends import cli
from divjax.frontends import sweep as sweep_mod
from divjax.config import ConfigError, default_hparams

SMALL = ["--preset", "synthetic-small", "--n-nodes", "4", "--n-stragglers", "1", "--fanout",
         "2", "--duration-s", "1", "--eval-every-s", "0.25"]


class _KilledError(Exception):
    """What the test's own SIGTERM handler raises: the run ignored SIGTERM if this escapes."""


@pytest.fixture(scope="module")
def terminated(tmp_path_factory):
    """`divjax run --checkpoint-every` that receives SIGTERM during its third eval interval."""
    out = tmp_path_factory.mktemp("term") / "run"
    calls = {"n": 0}
    real = checkpoint.check_state

    def check_then_terminate(state, cfg, *hp):
        real(state, cfg, *hp)
        calls["n"] += 1
        if calls["n"] == 3:
            signal.raise_signal(signal.SIGTERM)

    def ours(signum, frame):
        raise _KilledError

    previous = signal.signal(signal.SIGTERM, ours)
    said = io.StringIO()
    try:
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(said), \
                contextlib.redirect_stderr(said):
            mp.setattr(checkpoint, "check_state", check_then_terminate)
            rc = cli.main(["run", *SMALL, "--checkpoint-every", "0.25", "--quiet",
                           "--out", str(out)])
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return out, rc, handler_after is ours, said.getvalue()


def test_sigterm__checkpoints_and_says_how_to_resume(terminated):
    out, rc, restored, said = terminated
    assert rc == 130 and restored                  # the caller's handler is back afterwards
    assert "interrupted (signal SIGTERM)" in said and f"--resume {out}" in said
    cfg, hp, seed, _ = checkpoint.load_run_spec(out)
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    E = round(0.25 / cfg.tick_s)
    assert steps == [2 * E, 3 * E]                 # the interrupted interval's state is kept


def test_resume__a_truncated_checkpoint_falls_back_to_the_previous_one(terminated, tmp_path,
                                                                       capsys):
    from divjax.engine.sim import make_engine

    src = terminated[0]
    run = tmp_path / "run"
    shutil.copytree(src, run)
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    for f in (run / "checkpoints" / str(steps[-1]) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 8:   # cut every file of the newest checkpoint
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    cfg, hp, seed, _ = checkpoint.load_run_spec(run)
    state, history = checkpoint.restore(run, make_engine(cfg, hp=hp), hp,
                                        key=jax.random.key(seed))
    assert int(state.t) == steps[0] and len(history) == 2
    err = capsys.readouterr().err
    assert f"checkpoint step {steps[-1]}" in err and "unreadable" in err
    assert f"falling back to checkpoint step {steps[0]}" in err
    # the broken step is gone, so the resumed run saves that tick afresh
    assert checkpoint.latest_step(run) == steps[0]


def test_resume__a_checkpoint_of_another_config_is_refused(terminated, tmp_path, capsys):
    """run.json of another config over these checkpoints, and the Python API: both name the
    field that differs; nothing is restored."""
    from divjax.engine.sim import make_engine

    src = terminated[0]
    run = tmp_path / "run"
    shutil.copytree(src, run)
    cfg, hp, seed, spec = checkpoint.load_run_spec(run)
    other = cfg.replace(n_nodes=6, train_capacity=0, ring_ticks=0, delay_ticks=0)
    checkpoint.save_run_spec(run, other, default_hparams(other), seed,
                             extra={"checkpoint_every_s": 0.25})
    assert cli.main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("divjax: error: checkpoint step")
    assert "belongs to another run (n_nodes=4 there, 6 here" in err[0]
    # same config, other HParams or seed
    engine = make_engine(cfg, hp=hp)
    with pytest.raises(ConfigError, match="HParams differ in lr"):
        checkpoint.restore(src, engine, hp.replace(lr=hp.lr * 2), key=jax.random.key(seed))
    with pytest.raises(ConfigError, match="seed"):
        checkpoint.restore(src, engine, hp, key=jax.random.key(seed + 1))
    # a new run driven into a directory that holds another run's checkpoints
    engine6 = make_engine(other, hp=default_hparams(other))
    with pytest.raises(ConfigError, match="n_nodes=4 there, 6 here"):
        checkpoint.drive(engine6, jax.random.key(0), default_hparams(other), run_dir=src,
                         every_s=0.25)


def test_sweep__a_diverging_point_is_marked_and_a_stopped_sweep_keeps_its_results(
        tmp_path, monkeypatch, capsys):
    """lr=50 diverges; the sweep goes on, marks it with the swept value and the time; the
    second group is stopped (Ctrl-C/SIGTERM) and the first group's results are still written."""
    real, calls = sweep_mod.run_points, {"n": 0}

    def stop_second_group(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("signal SIGTERM")
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod, "run_points", stop_second_group)
    out = tmp_path / "sw"
    rc = cli.main(["sweep", *SMALL, "--grid", "n_nodes=4,5", "--grid", "lr=0.05,50",
                   "--seeds", "2", "--out", str(out)])
    assert rc == 130
    err = capsys.readouterr().err
    assert "config 1 (n_nodes=4, lr=50.0) diverged" in err and "continuing" in err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["n_nodes"] for r in rows} == {4} and len(rows) == 2 * 2 * 4
    bad = [r for r in rows if r["lr"] == 50.0]
    assert all(r["diverged"] and r["diverged_at_s"] >= 0 for r in bad)
    assert all(0 <= r["diverged_node"] < 4 for r in bad)           # the first node is named
    assert not any(r["diverged"] for r in rows if r["lr"] == 0.05)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["best"]["lr"] == 0.05
    assert summary["diverged_configs"] == [1]
    md = (out / "summary.md").read_text()
    assert "**Incomplete:**" in md and "config 1 (n_nodes=4, lr=50.0): 2/2 seeds, first at t=" in md
    assert " s (node " in md
