"""A trace whose download bandwidth changes over time (issue 18; divjax/network/traces.py,
divjax/network/downloads.py): a message is received at the download bandwidth in force when its
reception starts. The engine's FIFO table equals the reference simulators' links, served event
by event from the file's raw rows, for DivShare and Swift; a change after the run's end gives
the bits of a constant download; algorithms that do not model it refuse it naming the cell."""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import (
    assert_equals_reference,
    assert_lost_and_replaced_equal,
    assert_same_run,
    reference_of,
    run_checked,
)
from test_traces import trace_config, write

from divjax.network import traces
from divjax.config import ConfigError, default_hparams

DOWN = {1: (0.3, 0.012, 0.08), 4: (0.012, 0.4, 0.02)}   # Mbit/s from 0, 0.5 and 1.0 s


def varying_download_trace(tmp_path, change_at=(0.5, 1.0), name="down.csv") -> str:
    """Five nodes at 0.1-0.2 s per iteration, uploads 0.8 Mbit/s; nodes 1 and 4 change their
    download at the times `change_at` (after the run's end: a constant download in effect)."""
    lines = ["time_s,node,compute_s,upload_mbps,download_mbps"]
    for i in range(5):
        lines.append(f"0,{i},{0.1 + 0.05 * (i % 3):g},0.8,{DOWN.get(i, (0.5,))[0]:g}")
    for j, t in enumerate(change_at, start=1):
        for i in DOWN:
            lines.append(f"{t:g},{i},{0.1 + 0.05 * (i % 3):g},0.8,{DOWN[i][j]:g}")
    return write(tmp_path, "\n".join(lines) + "\n", name)


@pytest.mark.parametrize("algorithm,delivery", [("divshare", "receiver_iteration"),
                                                ("swift", "arrival_tick")])
def test_trace_downloads__changing_download_equals_the_reference_simulator(tmp_path, algorithm,
                                                                          delivery):
    cfg = trace_config(algorithm=algorithm, delivery=delivery, download_mbps=1.0,
                       trace_file=varying_download_trace(tmp_path))
    hp = default_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    assert_lost_and_replaced_equal(state, ref, per=1 if algorithm == "divshare"
                                   else run.engine.layout.K)
    # the changes change what is delivered
    flat = cfg.replace(trace_file=varying_download_trace(tmp_path, (9.0, 9.5), "late.csv"))
    _, steady, _ = run_checked(flat, default_hparams(flat))
    assert not np.array_equal(np.asarray(steady.counters.delivered),
                              np.asarray(state.counters.delivered))
    if algorithm == "divshare":
        assert int(state.counters.lost.sum()) > 0      # the slow rows lose fragments


def test_trace_downloads__a_change_after_the_run_gives_the_bits_of_a_constant_download(
        tmp_path):
    late = trace_config(download_mbps=1.0,
                        trace_file=varying_download_trace(tmp_path, (9.0, 9.5), "late.csv"))
    assert traces.node_trace(late).download_seg_bps is not None   # the changing code path
    lines = ["time_s,node,compute_s,upload_mbps,download_mbps"] + [
        f"0,{i},{0.1 + 0.05 * (i % 3):g},0.8,{DOWN.get(i, (0.5,))[0]:g}" for i in range(5)]
    const = late.replace(trace_file=write(tmp_path, "\n".join(lines) + "\n", "const.csv"))
    assert traces.node_trace(const).download_seg_bps is None
    _, a, _ = run_checked(late, default_hparams(late))
    _, b, _ = run_checked(const, default_hparams(const))
    assert_same_run(a, b)


def test_trace_downloads__refused_where_not_modelled_naming_the_cell(tmp_path):
    path = varying_download_trace(tmp_path)
    # the trace's own check, on a config as the trace module reads it (SimConfig itself may
    # refuse download limits for the algorithm first)
    cfg = trace_config(download_mbps=1.0, trace_file=path)
    as_read = SimpleNamespace(**{f: getattr(cfg, f) for f in (
        "trace_file", "n_nodes", "tick_s", "num_ticks", "download_mbps",
        "straggler_download_mbps")}, algorithm="epidemic")
    with pytest.raises(ConfigError, match=r"down.csv:\d+:5: node \d's download changes over "
                                          r"time, and a time-varying download is modelled"):
        traces.node_trace(as_read)
    # without download limits the column is not used (a warning), so nothing to refuse
    with pytest.warns(UserWarning, match="download_mbps column is not used"):
        default_hparams(trace_config(algorithm="adpsgd", trace_file=path))
