"""Traces (issue 18): every node's compute time, availability and bandwidth over time from a CSV
file (divjax/network/traces.py). The engine equals the reference simulators (which walk the rule tick by
tick from the file's rows) with a trace; a trace of constant compute times, always online,
gives the bits of the run without one; a malformed trace names its line and column; what a
trace cannot express is refused."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    assert_equals_reference,
    assert_lost_and_replaced_equal,
    assert_same_run,
    reference_of,
    run_checked,
)

from divjax.network import trace_checks, traces
from divjax.config import ConfigError, SimConfig, default_hparams

DATA = Path(__file__).parent / "data"
TINY_TRACE = DATA / "trace_tiny.csv"


def trace_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     same_init=False, trace_file=str(TINY_TRACE))
    return base.replace(**changes)


def always_online(tmp_path) -> str:
    """The shipped trace without its online column: compute times vary, nobody goes offline."""
    out = []
    for line in TINY_TRACE.read_text().splitlines():
        cells = line.split(",")
        out.append(line if line.startswith("#") else ",".join(cells[:3] + cells[4:]))
    path = tmp_path / "online.csv"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def write(tmp_path, text: str, name: str = "t.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_traces__shipped_trace_is_the_scripts_output():
    spec = importlib.util.spec_from_file_location(
        "make_trace", Path(__file__).parent.parent / "scripts" / "make_trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert TINY_TRACE.read_text() == mod.make_trace()


@pytest.mark.parametrize("algorithm,delivery,offline", [
    ("divshare", "receiver_iteration", False),
    ("divshare", "arrival_tick", False),
    ("swift", "receiver_iteration", False),
    ("adpsgd", "arrival_tick", False),
    ("local", "receiver_iteration", True),
    ("divshare", "receiver_iteration", True),
])
def test_traces__engine_equals_reference_simulator(tmp_path, algorithm, delivery, offline):
    path = str(TINY_TRACE) if offline else always_online(tmp_path)
    cfg = trace_config(algorithm=algorithm, delivery=delivery, trace_file=path)
    hp = trace_checks.trace_hparams(cfg, default_hparams(cfg))
    np.testing.assert_allclose(np.asarray(hp.upload_bps), [1e5, 1e5, 1e5, 3750, 3750])
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    # the trace's table decided the iterations: its ends within the run
    ends = traces.end_table(run.engine.cfg, run.engine.cfg.iteration_slots)
    np.testing.assert_array_equal(np.asarray(state.iterations), (ends < cfg.num_ticks).sum(1))
    assert len(set(np.asarray(state.iterations).tolist())) > 2
    if algorithm == "divshare":
        np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
        np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
        assert int(state.counters.replaced.sum()) == ref.replaced
        assert ref.dropped.sum() > 0
        if offline:
            assert ref.lost.sum() > 0


def test_traces__download_limits_with_a_trace_equal_the_reference_simulator(tmp_path):
    """Download links (on with --download-mbps) at the trace's download_mbps, compute times
    from the trace: engine == reference, losses at the slow download links included."""
    cfg = trace_config(download_mbps=1.0, trace_file=always_online(tmp_path))
    hp = trace_checks.trace_hparams(cfg, default_hparams(cfg))
    np.testing.assert_allclose(np.asarray(hp.download_bps), [1e5, 1e5, 1e5, 3750, 3750])
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    assert ref.lost[3:].sum() > 0


def test_traces__offline_rows_pause_iterations_as_churn_does():
    cfg = trace_config(algorithm="local", iteration_slots=40)
    ends = traces.end_table(cfg, 40)
    start, end = traces.node_trace(cfg).off_start, traces.node_trace(cfg).off_end
    # node 3: compute 8 ticks, offline [40, 60) from t=0.4 (compute 5 then): the iteration
    # started at 32 needs 8 online ticks, 32..39, and ends when the node is back, at 60
    assert (start[3, 0], end[3, 0]) == (40, 60)
    assert ends[3, 3] == 32 and ends[3, 4] == 60 and ends[3, 5] == 65
    for i in range(cfg.n_nodes):   # no end falls on an offline tick
        inside = (ends[i][:, None] >= start[i]) & (ends[i][:, None] < end[i])
        assert not inside.any()


EDGES = """time_s,node,compute_s,online
0,0,0.07,0
0,1,0.05,1
0,2,0.2,1
0.13,0,0.11,1
0.3,1,0.09,0
0.31,1,0.02,1
0.4,2,0.03,0
0.55,0,0.01,1
0.9,1,0.04,0
2.5,2,0.01,1
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_traces__end_table_equals_the_reference_walk(tmp_path, seed):
    """The engine's vectorised walk against the reference's tick-by-tick one, on seeded traces
    and on edge cases: offline at time 0 (the first iteration starts when the node is back,
    with the compute time then), a one-tick online gap, offline for good, a row after the run."""
    from divjax.reference.divshare import trace_schedule

    spec = importlib.util.spec_from_file_location(
        "make_trace", Path(__file__).parent.parent / "scripts" / "make_trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = EDGES if seed == 0 else mod.make_trace(n=6, duration=1.0, step=0.1, seed=seed)
    n = 3 if seed == 0 else 6
    cfg = trace_config(n_nodes=n, fanout=1, algorithm="local", duration_s=1.0,
                       trace_file=write(tmp_path, text))
    T, S = cfg.num_ticks, 120
    ends = traces.end_table(cfg, S)
    end_of, offline = trace_schedule(cfg)
    nt = traces.node_trace(cfg)
    for i in range(n):
        want = [end_of(i, k) for k in range(S) if end_of(i, k) < T]
        assert ends[i][ends[i] < T].tolist() == want
        assert ends[i, len(want)] >= T
        got = {int(a): int(b) for a, b in zip(nt.off_start[i], nt.off_end[i], strict=True)
               if a < T}
        assert got == {a: min(b, T + 1) for a, b in offline[i].items()}
    if seed == 0:
        assert ends[0, :2].tolist() == [24, 35]               # starts when back, at 13
        assert ends[1, 4:7].tolist() == [25, 31, 33]          # 30 offline: waits one tick
        assert ends[2, 0] == 20 and ends[2, 1] >= T           # offline for good from 40


@pytest.mark.parametrize("algorithm", ["divshare", "local"])
def test_traces__constant_always_online_trace_gives_the_bits_of_no_trace(tmp_path, algorithm):
    """Every node's own compute time at every row (rows at 0, 0.3 and 0.7 s), always online:
    the trace's table path with the bits of the plain run (same iteration chunks)."""
    cfg = trace_config(algorithm=algorithm, trace_file="", iteration_chunk=2, train_capacity=5)
    hp = default_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.27, 0.07], jnp.float32),
        upload_bps=jnp.array([1e5, 3e4, 1e4, 4e3, 1e3], jnp.float32))
    rows = [f"{t},{i},{c:.2f},1" for t in (0, 0.3, 0.7)
            for i, c in enumerate(np.asarray(hp.compute_s))]
    path = write(tmp_path, "time_s,node,compute_s,online\n" + "\n".join(rows) + "\n")
    _, base, _ = run_checked(cfg, hp)
    run, traced, _ = run_checked(cfg.replace(trace_file=path), hp)
    assert run.engine.cfg.iteration_slots > 0
    assert_same_run(traced, base)
    np.testing.assert_array_equal(np.asarray(traced.iterations), np.asarray(base.iterations))


HEAD = "time_s,node,compute_s,upload_mbps\n"


@pytest.mark.parametrize("text,line,col,words", [
    (HEAD + "0,0,0.1,5\n0,1,0.1\n", 3, 4, "3 values, expected 4"),
    (HEAD + "# a comment\n\n0,0,0.1,5\n0,x,0.1,5\n", 5, 2, "'x' is not a number"),
    (HEAD + "0,0,0.1,5\n0,1,0.1,-5\n", 3, 4, "a bandwidth is > 0"),
    (HEAD + "0,0,0.1,5\n0.2,1,0.1,5\n0.1,1,0.2,5\n", 4, 1, "sort the rows by time_s"),
    ("time_s,node,compute_s,speed\n0,0,0.1,5\n", 1, 4, "'speed' is not a column"),
    (HEAD + "0,0,0.1,5\n0,0,0.2,5\n", 3, 2, "second row"),
])
def test_traces__malformed_trace_names_line_and_column(tmp_path, text, line, col, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        traces.read_trace(path)
    assert f"{path}:{line}:{col}:" in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("text,line,col,words", [
    (HEAD + "0,0,0.1,5\n0,1,0.1,5\n0,9,0.1,5\n", 4, 2, "n_nodes=5"),
    (HEAD + "0,0,0.1,5\n0,1,0.105,5\n", 3, 3, "not a whole number of ticks"),
    (HEAD + "0,0,0.1,5\n0,1,0.1,5\n0.123,1,0.1,5\n", 4, 1, "not a whole number of ticks"),
])
def test_traces__trace_that_does_not_fit_the_run_names_line_and_column(tmp_path, text, line,
                                                                       col, words):
    """Checks against the config (node ids, ticks) run when the engine is built."""
    from divjax.engine.sim import make_run

    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        make_run(trace_config(n_nodes=5, trace_file=path))
    assert f"{path}:{line}:{col}:" in str(err.value) and words in str(err.value)


def test_traces__every_node_needs_a_row_at_time_zero(tmp_path):
    path = write(tmp_path, HEAD + "0,0,0.1,5\n0.1,1,0.1,5\n")
    with pytest.raises(ConfigError, match="node 1 has no row at time_s 0"):
        traces.node_trace(trace_config(n_nodes=2, fanout=1, trace_file=path))


@pytest.mark.parametrize("changes,words", [
    (dict(algorithm="dpsgd"), "synchronous"),
    (dict(compute_jitter=0.3), "--compute-jitter 0"),
    (dict(churn_rate=0.1), "--churn-rate 0"),
    (dict(compute_spread=0.5), "--compute-spread 0"),
    (dict(trace_file="/no/such/trace.csv"), "no such file"),
])
def test_traces__refuses_what_a_trace_cannot_combine_with(changes, words):
    with pytest.raises(ConfigError, match=words):
        trace_config(**changes)


def test_traces__offline_rows_with_download_limits_equal_the_reference_simulator():
    """A trace's offline rows and its download bandwidths together (DivShare): engine ==
    reference, counters included."""
    cfg = trace_config(download_mbps=1.0)
    hp = default_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    assert ref.lost.sum() > 0 and ref.dropped.sum() > 0


def test_traces__bandwidth_is_exposed_per_node(tmp_path):
    nt = traces.node_trace(trace_config())
    np.testing.assert_allclose(nt.upload_bps, [1e5, 1e5, 1e5, 3750, 3750])
    np.testing.assert_allclose(nt.download_bps, nt.upload_bps)
    path = write(tmp_path, "time_s,node,compute_s\n0,0,0.1\n0,1,0.1\n")
    cfg = trace_config(n_nodes=2, fanout=1, trace_file=path)
    assert traces.node_trace(cfg).upload_bps is None and traces.node_trace(cfg).download_bps is None
    hp = default_hparams(cfg)
    assert trace_checks.trace_hparams(cfg, hp) is hp
    with pytest.warns(UserWarning, match="download_mbps column is not used"):
        default_hparams(trace_config())   # download limits off: the column is not used


def test_traces__trace_flag_sets_trace_file():
    from divjax.frontends import cli
    from divjax.frontends.flags import config_from_args

    args = cli.build_parser().parse_args(["run", "--trace", str(TINY_TRACE)])
    assert config_from_args(args).trace_file == str(TINY_TRACE)


def varying_upload_trace(tmp_path, vary: bool = True) -> str:
    """Five nodes at 0.1-0.2 s per iteration; nodes 0 and 3 change their upload at 0.5 s and
    1.0 s (or keep their first one: vary=False)."""
    up = {0: (0.8, 0.05, 0.3), 3: (0.03, 0.8, 0.01)}
    lines = ["time_s,node,compute_s,upload_mbps"]
    for i in range(5):
        lines.append(f"0,{i},{0.1 + 0.05 * (i % 3):g},{up.get(i, (0.5,))[0]:g}")
    for j, t in ((1, 0.5), (2, 1.0)):
        for i in (0, 3):
            lines.append(f"{t:g},{i},{0.1 + 0.05 * (i % 3):g},{up[i][j if vary else 0]:g}")
    lines.sort(key=lambda x: (x[0] != "t", float(x.split(",")[0]) if x[0] != "t" else 0))
    return write(tmp_path, "\n".join(lines) + "\n", "vary.csv" if vary else "flat.csv")


@pytest.mark.parametrize("algorithm,delivery,download", [
    ("divshare", "arrival_tick", 0.0), ("swift", "receiver_iteration", 0.0),
    ("swift", "arrival_tick", 0.3)])
def test_traces__time_varying_upload_equals_the_reference_simulator(tmp_path, algorithm,
                                                                   delivery, download):
    """A queue is sent at the upload in force when it is formed (the sender's iteration end;
    a Swift model keeps it however long it waits on the link, with download limits too):
    engine == reference, and the changes change what is sent."""
    cfg = trace_config(algorithm=algorithm, delivery=delivery, download_mbps=download,
                       trace_file=varying_upload_trace(tmp_path))
    hp = default_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    if algorithm == "swift":
        assert_lost_and_replaced_equal(state, ref, per=run.engine.layout.K)
    flat = cfg.replace(trace_file=varying_upload_trace(tmp_path, False))
    _, steady, _ = run_checked(flat, default_hparams(flat))
    assert not np.array_equal(np.asarray(steady.counters.sent), np.asarray(state.counters.sent))


def test_traces__time_varying_upload_is_refused_where_not_modelled(tmp_path):
    with pytest.raises(ConfigError, match="time-varying upload is modelled for divshare"):
        traces.node_trace(trace_config(algorithm="adpsgd",
                                       trace_file=varying_upload_trace(tmp_path)))


def outage_trace(tmp_path, column: str, mbps: float) -> str:
    """Five nodes at 0.1 s per iteration and 0.8 Mbit/s; node 1's `column` drops to `mbps` from
    0.5 s to 1.0 s (an outage written as a near-zero bandwidth)."""
    rows = [f"0,{i},0.1,0.8" for i in range(5)] + [f"0.5,1,0.1,{mbps:g}", "1,1,0.1,0.8"]
    return write(tmp_path, f"time_s,node,compute_s,{column}\n" + "\n".join(rows) + "\n",
                 f"outage-{column}-{mbps:g}.csv")


@pytest.mark.parametrize("algorithm,column", [("divshare", "upload_mbps"),
                                              ("swift", "upload_mbps"),
                                              ("swift", "download_mbps")])
def test_traces__a_later_row_that_overflows_the_clock_is_refused_naming_its_cell(
        tmp_path, algorithm, column):
    """Sizing and clock_fits see the first rows only (HParams): a later row at 1e-7 Mbit/s ran
    a wrong network on the old code (DivShare: node 1 sent [23 20 25] fragments where the
    reference sends [18 18 18]; Swift's download: 54 deliveries to node 1 instead of 24)."""
    from divjax.engine.sim import make_run

    path = outage_trace(tmp_path, column, 1e-7)
    cfg = trace_config(algorithm=algorithm, trace_file=path,
                       download_mbps=1.0 if column == "download_mbps" else 0.0)
    with pytest.raises(ConfigError, match=f"{path}:7:4: {column}=1e-07 does not fit the int32 "
                                          f"link clock.*online=0"):
        make_run(cfg)
    # a fully sized config (no sizing pass) is refused too, when its run is built (by the
    # build's own network check, or at the latest when its state is laid out)
    sized = cfg.replace(ring_ticks=50, delay_ticks=50, train_capacity=5, iteration_chunk=0,
                        iteration_slots=60, inbox_history=4, ping_slots=4)
    with pytest.raises(ConfigError, match=f"{path}:7:4"):
        run = make_run(sized, hp=default_hparams(sized))
        run.engine.init(jax.random.key(0), default_hparams(sized))


def test_traces__a_slow_row_within_the_clock_equals_the_reference_simulator(tmp_path):
    """Just inside the bound (5e-7 Mbit/s: 1.5 s per fragment, 10,700 s of link clock) the
    engine equals the reference: the bound refuses only what the clock cannot hold."""
    cfg = trace_config(duration_s=1.0, trace_file=outage_trace(tmp_path, "upload_mbps", 5e-7))
    hp = default_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    assert np.asarray(state.counters.sent)[1].sum() < np.asarray(state.counters.sent)[0].sum()


@pytest.mark.parametrize("algorithm,back", [("divshare", 0.65), ("swift", 0.65),
                                            ("divshare", 0.55005)])
def test_traces__offline_spell_then_back_for_good_equals_the_reference_simulator(
        tmp_path, algorithm, back):
    """Node 2 offline from 0.55 s to `back`, then online for good, the only offline spell: on
    the old code its link stopped at every later iteration (DivShare: 9 of 25 queues sent, 45
    dropped where the reference drops 3). back=0.55005 s rounds to the tick it left: an
    offline spell within one tick is none (the last row at a tick is in force), as in the
    reference; the old code kept it as an empty interval (51 fragments dropped, none in the
    reference)."""
    rows = [f"0,{i},0.1,1,0.05" for i in range(5)] + ["0.55,2,0.1,0,0.05",
                                                        f"{back:g},2,0.1,1,0.05"]
    path = write(tmp_path, "time_s,node,compute_s,online,upload_mbps\n" + "\n".join(rows)
                 + "\n")
    cfg = trace_config(algorithm=algorithm, trace_file=path)
    hp = default_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.dropped), ref.dropped)
    assert (traces.node_trace(cfg).off_start is None) == (back < 0.56)


@pytest.mark.parametrize("grid,field", [
    ({"fast_mbps": [10, 60]}, "fast_mbps"), ({"compute_s": [0.1, 0.2]}, "compute_s"),
    ({"lr": [0.1], "straggler_share": [0.2, 0.4]}, "straggler_share"),
    ({"download_mbps": [0.5, 1.0]}, "download_mbps")])
def test_traces__a_sweep_over_a_field_the_trace_overrides_is_refused(tmp_path, grid, field):
    """The trace replaces compute times and bandwidths (its first rows): on the old code such a
    grid ran one network under two labels (or failed in the summary)."""
    from divjax.frontends.sweep import sweep

    cfg = trace_config()
    with pytest.raises(ConfigError, match=f"grid field {field!r} is overridden by trace_file"):
        sweep(cfg, grid, seeds=1)
    over = trace_checks.overridden_fields(cfg)
    assert {"compute_s", "fast_mbps", "straggler_mbps", "upload_bps"} <= set(over)
    assert not {"lr", "latency_ms", "download_mbps"} & set(over)
    trace_checks.refuse_overridden(cfg, {"lr": [0.1, 0.2], "download_mbps": [0.0, 1.0]})
    no_up = trace_config(n_nodes=2, fanout=1, trace_file=write(
        tmp_path, "time_s,node,compute_s\n0,0,0.1\n0,1,0.1\n"))   # the config's uploads
    assert set(trace_checks.overridden_fields(no_up)) == {"compute_s", "straggler_compute_factor",
                                                    "compute_spread", "compute_seed"}


def test_traces__a_single_run_warns_of_the_fields_the_trace_overrides():
    with pytest.warns(UserWarning, match=r"so the config's compute_s=0\.1, fast_mbps=10\.0 are "
                                         r"not used"):
        default_hparams(trace_config(fast_mbps=10.0))
    assert trace_checks.unused_fields(trace_config(compute_s=1.0)) == {}
