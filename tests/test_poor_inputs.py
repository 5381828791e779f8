"""Issue 30, "poor cases": inputs that ran silently wrong, slowly, or with a traceback are a
one-line error naming the flag and the fix (or a correct result). Nothing here compiles a
simulation."""

import errno
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALL, error_line

from divjax.frontends import cli
from divjax import config
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.engine.state import ERR_CLOCK, ERR_NONFINITE, SimulationError, check_state

# ----------------------------------------------------------------------------- check_state


class _Flags(NamedTuple):
    errors: np.ndarray
    first_error_tick: np.ndarray
    first_error_node: np.ndarray


def test_check_state__divergence_names_the_lr_that_ran_not_cfg_lr():
    cfg = SimConfig(lr=0.05)
    hp = default_hparams(cfg).replace(lr=jnp.float32(123.0))
    one = _Flags(np.int32(ERR_NONFINITE), np.int32(7), np.int32(2))
    with pytest.raises(SimulationError, match=r"lower --lr \(the run's lr=123\)") as e:
        check_state(one, cfg, hp)
    assert "0.05" not in str(e.value)
    with pytest.raises(SimulationError, match=r"int32 link clock: check them \(they come "
                                              r"from --compute-s, --fast-mbps"):
        check_state(_Flags(np.int32(ERR_CLOCK), np.int32(0), np.int32(-1)), cfg, hp)
    with pytest.raises(SimulationError, match="HParams.lr the run was called with") as e:
        check_state(one, cfg)                       # no hp: never claims cfg.lr ran
    assert "0.05" not in str(e.value)
    # a sweep block: flags (S=2, H=3), lr (H,): the diverged point's own lr
    errors = np.zeros((2, 3), np.int32)
    errors[1, 2] = ERR_NONFINITE
    grid = hp.replace(lr=jnp.asarray([0.1, 0.2, 0.3], jnp.float32))
    with pytest.raises(SimulationError, match=r"that point's lr=0\.3\b"):
        check_state(_Flags(errors, np.full((2, 3), 5), np.full((2, 3), 1)), cfg, grid)


# ----------------------------------------------------------------------------- flags dropped


@pytest.mark.parametrize("flag", ["--straggler-mbps", "--straggler-download-mbps"])
def test_cli__more_straggler_values_than_stragglers(capsys, tmp_path, no_engine, flag):
    line = error_line(capsys, ["run", *SMALL, "--n-stragglers", "2", flag, "1,2,3",
                               "--out", str(tmp_path / "r")])
    assert f"{flag} has 3 values but --n-stragglers is 2" in line
    line = error_line(capsys, ["run", *SMALL, "--n-stragglers", "0", flag, "5",
                               "--out", str(tmp_path / "r")])
    assert f"{flag} 5 is unused" in line and "--n-stragglers N" in line
    # a sweep over the straggler count judges no single count
    args = cli.build_parser().parse_args(["sweep", *SMALL, "--n-stragglers", "2", flag,
                                          "1,2,3", "--grid", "n_stragglers=3,4"])
    from divjax.frontends.flags import config_from_args

    assert config_from_args(args).n_stragglers == 2


def test_cli__inter_region_ms_without_regions(capsys, tmp_path, no_engine):
    line = error_line(capsys, ["run", *SMALL, "--inter-region-ms", "40",
                               "--out", str(tmp_path / "r")])
    assert "--inter-region-ms 40" in line and "--latency-regions" in line
    from divjax.frontends.flags import config_from_args

    args = cli.build_parser().parse_args(["run", *SMALL, "--inter-region-ms", "40",
                                          "--latency-regions", "2"])
    assert config_from_args(args).inter_region_ms == 40


def test_cli__latency_file_with_regions(capsys, tmp_path, no_engine):
    path = tmp_path / "lat.csv"
    path.write_text("\n".join(",".join("0" for _ in range(4)) for _ in range(4)) + "\n")
    line = error_line(capsys, ["run", *SMALL, "--latency-file", str(path),
                               "--latency-regions", "2", "--out", str(tmp_path / "r")])
    assert "--latency-file" in line and "--latency-regions is 2" in line
    line = error_line(capsys, ["run", *SMALL, "--latency-file", str(path),
                               "--inter-region-ms", "9", "--out", str(tmp_path / "r")])
    assert "--inter-region-ms 9" in line and "--latency-file replaces it" in line
    # the preset movielens-realworld has 4 regions: a file is refused there too, by name
    line = error_line(capsys, ["run", "--preset", "movielens-realworld", "--latency-file",
                               str(path), "--out", str(tmp_path / "r")])
    assert "--latency-regions is 4 (from the preset)" in line


# ----------------------------------------------------------------------------- link clock


def test_download_too_slow_for_the_clock_is_refused_before_compiling(capsys, tmp_path):
    from divjax.engine.sim import make_run

    cfg = SimConfig(n_nodes=4, n_fragments=2, fanout=2, local_steps=1, batch_size=4,
                    duration_s=1.0, eval_every_s=0.5, compute_s=0.1, download_mbps=1e-9)
    with pytest.raises(ConfigError, match=r"--download-mbps / --straggler-download-mbps.*"
                                          r"above ([0-9.e+-]+) Mbit/s") as e:
        make_run(cfg)   # builds (sizes) the run; never compiles
    smallest = float(str(e.value).split("above ")[1].split(" ")[0])
    make_run(cfg.replace(download_mbps=smallest))
    with pytest.raises(ConfigError, match="--download-mbps"):
        make_run(cfg.replace(download_mbps=smallest * 0.98))
    with pytest.raises(ConfigError, match=r"--fast-mbps / --straggler-mbps"):
        make_run(cfg.replace(download_mbps=0.0, fast_mbps=1e-9))
    with pytest.raises(ConfigError, match=r"too long for the int32 link clock: raise --tick-s"):
        make_run(cfg.replace(download_mbps=0.0, duration_s=20000.0, eval_every_s=1000.0))
    line = error_line(capsys, ["run", *SMALL, "--download-mbps", "1e-9", "--out",
                               str(tmp_path / "r")])
    assert "--download-mbps" in line and "Mbit/s here" in line


# ----------------------------------------------------------------------------- help texts


def test_help__feature_algorithm_lists_match_the_registry_and_the_checks():
    """Every feature flag's help names exactly the algorithms that model it; every other
    algorithm is refused (or sends nothing), so the help cannot go stale again."""
    from divjax.algorithms import ALGORITHMS
    from divjax.config_checks import ALGORITHM_NAMES, MODELLED_BY, SENDS_NOTHING

    assert set(ALGORITHM_NAMES) == set(ALGORITHMS)
    docs = config.field_help()
    on = {"loss_rate": {"loss_rate": 0.1}, "churn_rate": {"churn_rate": 0.1},
          "churn_mean_s": {"churn_rate": 0.1, "churn_mean_s": 2.0},
          "compute_jitter": {"compute_jitter": 0.2}, "download_mbps": {"download_mbps": 5.0},
          "straggler_download_mbps": {"straggler_download_mbps": (5.0,), "n_stragglers": 1}}
    for field, algos in MODELLED_BY.items():
        listed = docs[field].split("[modelled by: ")[1].rstrip("]").split(", ")
        assert listed == list(algos), field
        for name in ALGORITHMS:
            if field not in on:
                continue   # files: checked by test_traces / test_loss with real files
            base = SimConfig(algorithm=name, n_nodes=4, fanout=2)
            if name in algos or name in SENDS_NOTHING:
                base.replace(**on[field])
            else:
                with pytest.raises(ConfigError):
                    base.replace(**on[field])
    for field in ("loss_rate", "loss_file", "churn_rate"):   # the stale lists of issue 30
        assert "(DivShare" not in docs[field] and "DivShare and local" not in docs[field]


# ----------------------------------------------------------------------------- make_trace.py


def _make_trace_module():
    import importlib.util

    path = Path(__file__).parent.parent / "scripts" / "make_trace.py"
    spec = importlib.util.spec_from_file_location("make_trace", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv,says", [(["--step", "0"], "--step 0: give a positive"),
                                       (["--step", "0.005"], "multiple of 0.01"),
                                       (["--n", "0"], "--n 0"),
                                       (["--stragglers", "9"], "--stragglers 9"),
                                       (["--change", "1.5"], "--change 1.5")])
def test_make_trace__bad_flags_are_one_line_errors(tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as e:
        _make_trace_module().main(["--out", str(tmp_path / "t.csv"), *argv])
    assert e.value.code == 2
    assert says in capsys.readouterr().err.strip().splitlines()[-1]


def test_make_trace__creates_a_missing_folder_and_refuses_a_directory(tmp_path, capsys):
    mod = _make_trace_module()
    mod.main(["--out", str(tmp_path / "new" / "sub" / "t.csv")])
    assert (tmp_path / "new" / "sub" / "t.csv").read_text() == mod.make_trace()
    with pytest.raises(SystemExit):
        mod.main(["--out", str(tmp_path)])
    assert "is a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tfds offline


@pytest.fixture
def unprepared_tfds(monkeypatch):
    """tfds without the data set prepared; a download attempt fails the test."""
    tfds = pytest.importorskip("tensorflow_datasets")
    calls = []

    def data_source(name, split=None, data_dir=None, download=True):
        calls.append(download)
        if download:
            raise AssertionError("a download started: it retries offline for minutes")
        raise NotImplementedError("not prepared")

    monkeypatch.setattr(tfds, "data_source", data_source)
    return calls


def test_tfds__unprepared_without_tensorflow_fails_at_once(monkeypatch, unprepared_tfds):
    import importlib.util

    from divjax import data

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "tensorflow" else real(n, *a))
    with pytest.raises(ConfigError, match=r"no prepared 'cifar10'.*needs TensorFlow.*--data-dir"):
        data.load_cifar10("tfds:/nowhere")
    assert unprepared_tfds == [False]


def test_tfds__unprepared_offline_fails_at_once(monkeypatch, unprepared_tfds):
    import importlib.util
    import socket

    from divjax import data

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: object() if n == "tensorflow" else real(n, *a))

    def offline(*a, **k):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(ConfigError, match=r"files\.grouplens\.org is unreachable"):
        data.load_movielens("tfds")
    assert unprepared_tfds == [False]


# ----------------------------------------------------------------------------- full disk


class _Mgr:
    def wait_until_finished(self):
        raise ValueError("RESOURCE_EXHAUSTED: again [os_error_code='28']")

    def close(self):
        pass


@pytest.fixture
def own_hooks(monkeypatch):
    """A write failure quiets orbax's repeats for the rest of the process: undo it after."""
    import logging
    import sys

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    absl = logging.getLogger("absl")
    before = list(absl.filters)
    yield
    absl.filters[:] = before


def test_checkpoint__storage_errors_become_one_line(tmp_path, own_hooks):
    from divjax.engine.checkpoint_errors import CheckpointWriteError, write_errors_as_one

    tmp = tmp_path / "checkpoints" / "40.orbax-checkpoint-tmp"
    tmp.mkdir(parents=True)
    (tmp / "half").write_text("x")
    with (pytest.raises(CheckpointWriteError, match=r"step 40 could not be written to .*"
                                                     r"\(No space left on device\)$"),
          write_errors_as_one(tmp_path, 40, _Mgr())):
        raise ValueError('RESOURCE_EXHAUSTED: Error writing local file "x": Failed to write '
                         "2069 bytes to file 8: No space left on device [os_error_code='28']"
                         "\nmore lines")
    assert not tmp.exists()   # the half-written step is gone: its space is free again
    with pytest.raises(ValueError, match="unrelated"), write_errors_as_one(tmp_path, 41, _Mgr()):
        raise ValueError("unrelated")


def test_cli__full_disk_while_checkpointing_one_line_and_metrics(capsys, tmp_path,
                                                                  monkeypatch, own_hooks):
    """orbax failing with ENOSPC: one line on stderr, the run goes on and writes metrics."""
    import orbax.checkpoint as ocp

    def full(self, step, *a, **k):
        if step > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, step, *a, **k)

    real = ocp.CheckpointManager.save
    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    out = tmp_path / "r"
    assert cli.main(["run", *SMALL, "--algorithm", "local", "--checkpoint-every", "0.25",
                     "--quiet", "--out",
                     str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "could not be written" in err[0], err
    assert "No space left on device" in err[0] and "checkpointing stops" in err[0]
    assert (out / "metrics.json").is_file() and (out / "summary.md").is_file()


# ----------------------------------------------------------------------------- unused flags


@pytest.mark.parametrize("flags,says", [
    (["--momentum", "0.9"], "--momentum 0.9 would change nothing here: add --momentum-buffer"),
    (["--compute-seed", "5"], "--compute-seed 5 would change nothing here: it seeds"),
    (["--churn-mean-s", "3"], "--churn-mean-s 3 would change nothing here"),
    (["--ping-slots", "9"], "--ping-slots 9 would change nothing here"),
    (["--inbox-history", "9"], "--inbox-history 9 would change nothing here"),
    (["--algorithm", "dpsgd", "--fanout", "1"], "--fanout 1 would change nothing here: D-PSGD"),
    (["--algorithm", "epidemic", "--inbox", "sum"], "--inbox sum would change nothing here"),
    (["--data-dir", "/data/cifar"], "--data-dir /data/cifar would change nothing here: this "
                                    "--task generates"),
    (["--straggler-compute-factor", "2", "--n-stragglers", "0"],
     "--straggler-compute-factor 2 is unused")])
def test_cli__flags_that_would_change_nothing(capsys, tmp_path, no_engine, flags, says):
    assert says in error_line(capsys, ["run", *SMALL, *flags, "--out", str(tmp_path / "r")])


def test_cli__unused_flags_pass_where_they_are_read(no_engine):
    from divjax.frontends.flags import config_from_args

    parse = cli.build_parser().parse_args
    for argv in (["run", *SMALL, "--momentum", "0.9", "--momentum-buffer"],
                 ["run", *SMALL, "--compute-seed", "5", "--compute-spread", "0.5"],
                 ["run", *SMALL, "--churn-mean-s", "3", "--churn-rate", "0.1"],
                 ["run", *SMALL, "--ping-slots", "9", "--algorithm", "adpsgd"],
                 ["run", *SMALL, "--momentum", "0"],
                 ["compare", *SMALL, "--ping-slots", "9", "--algorithms", "adpsgd,divshare"]):
        config_from_args(parse(argv))


def test_cli__momentum_grid_without_the_buffer(capsys, tmp_path, no_engine):
    line = error_line(capsys, ["sweep", *SMALL, "--grid", "momentum=0,0.9", "--out",
                               str(tmp_path / "s")])
    assert "--grid momentum=... would change nothing here: add --momentum-buffer" in line


@pytest.mark.parametrize("every", ["nan", "-1", "0", "0.3"])
def test_cli__checkpoint_every_that_is_not_whole_eval_intervals(capsys, tmp_path, no_engine,
                                                                 every):
    line = error_line(capsys, ["run", *SMALL, "--checkpoint-every", every, "--out",
                               str(tmp_path / "r")])
    assert f"--checkpoint-every {float(every):g} is invalid" in line
    assert "--eval-every-s 0.25" in line


def test_cli__resume_with_flags_it_would_ignore(capsys, tmp_path, no_engine):
    from divjax.engine import checkpoint

    cfg = SimConfig(n_nodes=4, fanout=2)
    checkpoint.save_run_spec(tmp_path, cfg, default_hparams(cfg), seed=0)
    line = error_line(capsys, ["run", "--resume", str(tmp_path), "--duration-s", "100",
                               "--seed", "3"])
    assert "drop --duration-s --seed" in line and "start a new run" in line


def test_cli__flags_a_trace_replaces(capsys, tmp_path, no_engine):
    trace = Path(__file__).parent / "data" / "trace_tiny.csv"   # has an upload_mbps column
    run = ["run", *SMALL, "--n-nodes", "5", "--n-stragglers", "0", "--trace", str(trace),
           "--out", str(tmp_path / "r")]
    line = error_line(capsys, [*run, "--compute-s", "0.5", "--fast-mbps", "9"])
    assert "gives every node's compute time and upload" in line
    assert "--compute-s --fast-mbps would change nothing" in line
    no_upload = tmp_path / "t.csv"
    no_upload.write_text("time_s,node,compute_s\n" + "".join(f"0,{i},0.1\n" for i in range(5)))
    run[run.index(str(trace))] = str(no_upload)
    assert "--compute-s would change nothing" in error_line(capsys, [*run, "--compute-s", "1"])
    from divjax.frontends.flags import config_from_args

    args = cli.build_parser().parse_args([*run, "--fast-mbps", "9"])
    assert config_from_args(args).fast_mbps == 9   # no upload column: the flag is read


def test_cli__run_that_ends_before_any_iteration(capsys, tmp_path, no_engine):
    line = error_line(capsys, ["run", *SMALL, "--compute-s", "2", "--out", str(tmp_path / "r")])
    assert "--duration-s 1 ends before any node finishes its first iteration" in line


@pytest.mark.parametrize("item,fix", [("straggler_mbps=1,5", "add --n-stragglers N"),
                                      ("straggler_compute_factor=1,2", "add --n-stragglers N"),
                                      ("inter_region_ms=10,40", "add --latency-regions G"),
                                      ("churn_mean_s=1,5", "add --churn-rate R")])
def test_cli__grid_over_a_field_nothing_reads(capsys, tmp_path, no_engine, item, fix):
    line = error_line(capsys, ["sweep", *SMALL, "--n-stragglers", "0", "--grid", item,
                               "--out", str(tmp_path / "s")])
    assert f"--grid {item.split('=')[0]}=... would change nothing here" in line and fix in line


def test_data__a_local_folder_named_tfds_something_is_a_local_copy(tmp_path, monkeypatch):
    from divjax import data

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"data_dir='tfds_data/cifar' does not exist"):
        data.load_cifar10("tfds_data/cifar")     # was: TFDS with data dir "_data/cifar"
    from divjax.data.sources import _tfds_dir

    assert _tfds_dir("tfds") is None and _tfds_dir("tfds:/d") == "/d" and _tfds_dir("tfds:") is None


@pytest.mark.parametrize("field,value,says", [("data_seed", -1, "use a seed >= 0"),
                                              ("fragment_seed", -1, "use a seed >= 0"),
                                              ("compute_seed", -3, "use a seed >= 0"),
                                              ("latency_ms", float("nan"), "finite latency"),
                                              ("straggler_mbps", (float("inf"),), "finite")])
def test_config__values_that_crashed_or_named_no_flag(field, value, says):
    """Negative numpy seeds were a ValueError traceback; a NaN latency named '--latency_s'."""
    with pytest.raises(ConfigError, match=f"{field}=.*{says}"):
        SimConfig(**{field: value})


def test_product__an_empty_value_list_is_refused():
    from divjax.config import product

    base = default_hparams(SimConfig(n_nodes=4, fanout=2))
    assert product(base, lr=[0.1, 0.2]).lr.shape == (2,)
    with pytest.raises(ConfigError, match=r"lr=\[\] has no values"):
        product(base, lr=[], momentum=[0.0])   # was: a grid of 0 points, no error
