"""Input files named in a config (trace, latency, loss, topology edge list; issue 30): caches and
checkpoints follow their contents, never their paths. A file rewritten at the same path, with
the same size and time stamp, is read again, and a checkpoint of the old contents refuses to
resume; a latency file's diagonal (a node to itself) is ignored."""

import os

import jax
import numpy as np
import pytest
from conftest import assert_same_run, run_checked
from test_traces import trace_config, write

from divjax.engine import checkpoint, fingerprint
from divjax.network import pair_files, traces
from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.network.links import region_latency_ms
from divjax.engine.sim import make_engine


def rewrite_same_stat(path: str, text: str) -> None:
    """Replace a file's contents keeping its size and modification time (what a cache keyed
    on the path, or on mtime and size, cannot tell apart)."""
    st = os.stat(path)
    assert len(text.encode()) == st.st_size
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_input_files__a_rewritten_trace_is_read_again(tmp_path):
    path = write(tmp_path, "time_s,node,compute_s\n0,0,0.1\n0,1,0.2\n")
    cfg = trace_config(n_nodes=2, fanout=1, trace_file=path)
    assert traces.node_trace(cfg).seg_compute[:, 0].tolist() == [10, 20]
    assert traces.end_table(cfg, 3)[1].tolist() == [20, 40, 60]
    rewrite_same_stat(path, "time_s,node,compute_s\n0,0,0.1\n0,1,0.3\n")
    assert traces.read_trace(path).col("compute_s").tolist() == [0.1, 0.3]
    assert traces.node_trace(cfg).seg_compute[:, 0].tolist() == [10, 30]
    assert traces.end_table(cfg, 3)[1].tolist() == [30, 60, 90]


def test_input_files__a_rewritten_matrix_file_is_read_again(tmp_path):
    cfg = SimConfig(n_nodes=2, fanout=1, loss_file=write(tmp_path, "0,0.25\n0.5,0\n"))
    assert pair_files.loss_matrix(cfg)[0, 1] == 0.25
    rewrite_same_stat(cfg.loss_file, "0,0.75\n0.5,0\n")
    assert pair_files.loss_matrix(cfg)[0, 1] == 0.75
    lat = write(tmp_path, "0,5\n7,0\n", "lat.csv")
    assert pair_files.read_latency_file(lat, 2)[0, 1] == 5
    rewrite_same_stat(lat, "0,9\n7,0\n")
    assert pair_files.read_latency_file(lat, 2)[0, 1] == 9


def test_input_files__the_fingerprint_holds_every_input_files_contents(tmp_path):
    edges = write(tmp_path, "0 1\n1 2\n2 0\n", "edges.txt")
    cfg = SimConfig(n_nodes=3, fanout=1, topology=f"file:{edges}",
                    loss_file=write(tmp_path, "0,0.1,0\n0,0,0.1\n0.1,0,0\n", "loss.csv"),
                    latency_file=write(tmp_path, "0,1,2\n1,0,2\n2,1,0\n", "lat.csv"))
    hp = default_hparams(cfg)
    before = fingerprint.fingerprint(cfg, hp)
    assert set(before["inputs"]) == {"topology", "loss_file", "latency_file"}
    assert fingerprint.fingerprint_mismatch(before, fingerprint.fingerprint(cfg, hp)) is None
    for name, path, text in (("loss_file", cfg.loss_file, "0,0.2,0\n0,0,0.1\n0.1,0,0\n"),
                             ("topology", edges, "0 2\n1 2\n1 0\n")):
        rewrite_same_stat(path, text)
        diff = fingerprint.fingerprint_mismatch(before, fingerprint.fingerprint(cfg, hp))
        assert diff is not None and f"{name}'s contents differ" in diff
    old = {k: v for k, v in before.items() if k != "inputs"}   # an older checkpoint's
    assert "does not record the contents" in fingerprint.fingerprint_mismatch(
        old, fingerprint.fingerprint(cfg, hp))
    plain = SimConfig(n_nodes=3, fanout=1)   # no input file: old checkpoints still resume
    assert fingerprint.fingerprint_mismatch(
        {k: v for k, v in fingerprint.fingerprint(plain, default_hparams(plain)).items()
         if k != "inputs"}, fingerprint.fingerprint(plain, default_hparams(plain))) is None


def test_input_files__a_regenerated_trace_at_the_same_path_refuses_to_resume(tmp_path):
    """A checkpointed run whose trace is rewritten in place (the same path, size and time
    stamp) would have resumed as a mixed run: now restore names the trace."""
    text = "time_s,node,compute_s\n" + "".join(f"0,{i},0.1\n" for i in range(5))
    path = write(tmp_path, text)
    cfg = trace_config(algorithm="local", duration_s=1.0, trace_file=path)
    hp = default_hparams(cfg)
    engine = make_engine(cfg, hp=hp)
    key = jax.random.key(0)
    checkpoint.drive(engine, key, hp, run_dir=tmp_path / "run", every_s=0.5, stop_chunk=1)
    rewrite_same_stat(path, text.replace("0,4,0.1", "0,4,0.2"))
    with pytest.raises(ConfigError, match="trace_file's contents differ"):
        checkpoint.restore(tmp_path / "run", make_engine(cfg, hp=hp), hp, key=key)


def test_input_files__the_latency_diagonal_is_ignored(tmp_path):
    """A node's latency to itself carries no message; it lengthened every D-PSGD round (the
    round takes the largest latency of a row): now it is read as 0, with a warning."""
    zero = write(tmp_path, "0,30,20\n30,0,10\n20,10,0\n", "zero.csv")
    diag = write(tmp_path, "90,30,20\n30,0,10\n20,10,0\n", "diag.csv")
    cfg = SimConfig(n_nodes=3, fanout=2, n_fragments=2, local_steps=1, batch_size=4,
                    algorithm="dpsgd", tick_s=0.01, duration_s=1.0, eval_every_s=0.5,
                    compute_s=0.1, latency_file=zero)
    with pytest.warns(UserWarning, match="diagonal .* is ignored.*node 0: 90 ms"):
        _, extra = region_latency_ms(cfg.replace(latency_file=diag))
    np.testing.assert_array_equal(extra, region_latency_ms(cfg)[1])
    hp = default_hparams(cfg)
    _, base, _ = run_checked(cfg, hp)
    with pytest.warns(UserWarning, match="diagonal"):
        _, with_diag, _ = run_checked(cfg.replace(latency_file=diag), hp)
    assert_same_run(with_diag, base)
    np.testing.assert_array_equal(np.asarray(with_diag.iterations), np.asarray(base.iterations))
