"""Traces: every node's compute time, availability and bandwidth over simulated time, read from
a CSV file (`--trace FILE`, `SimConfig.trace_file`; issue 18).

Format (`scripts/make_trace.py` writes one; tests/data/trace_tiny.csv is its output):

    # comments run from '#' to the end of the line; blank lines are skipped
    time_s,node,compute_s,online,upload_mbps,download_mbps
    0,0,0.10,1,60,60
    0,1,0.25,1,12,12
    0.5,1,0.05,0,12,12

The first line that is not blank or a comment is the header: comma-separated column names, in
any order. Every later line is one row with a number in every column:

    time_s          required  simulated seconds, >= 0, a whole number of ticks (to 1% of one)
    node            required  node id, a whole number in 0 .. n_nodes - 1
    compute_s       required  seconds per iteration (all local steps), > 0, a whole number of
                              ticks to 1% (as `network.check_network` demands of HParams)
    online          optional  1 online, 0 offline (without the column: always online)
    upload_mbps     optional  upload bandwidth, Mbit/s, > 0 (without it: the config's network)
    download_mbps   optional  download bandwidth, Mbit/s, > 0 (used while download limits are
                              on: --download-mbps; without it: the config's)

Semantics: piecewise constant. A row sets its node's state from time_s (inclusive) until that
node's next row; a node's last row holds for ever. Times count in whole ticks: rows of one node
whose times round to the same tick (e.g. 0.5 and 0.50005 s at 10 ms ticks) take effect at that
tick, the last one in the file in force, so an offline spell shorter than a tick is no offline
spell at all (engine and reference alike). Rows are sorted by time_s (ties in any
order), a node has at most one row per time, and every node of the run has a row at time 0.
A node's first row's bandwidths become the node's (`trace_hparams`: HParams.upload_bps and
download_bps; also `NodeTrace.upload_bps`, `NodeTrace.download_bps`). Its upload may change
(DivShare, Swift and local): a queue is sent at the upload in force when it is formed, at the
sender's iteration end (`NodeTrace.upload_seg_bps`, `network.units_at`): a DivShare queue
lives one iteration; a Swift model appended then keeps that upload however long it waits on
the link (`queues.queued_model_units`); other algorithms refuse an upload that changes
(naming the line and column). Its download may change (DivShare, Swift and local, with
download limits on): a message is received at the download bandwidth in force when its
reception starts, on the link's sub-tick clock (`NodeTrace.download_seg_bps`,
`downloads.fifo_deliveries`); other algorithms refuse a download that changes.

Iteration rule (the same tables as compute jitter and churn, `divjax.network.compute_schedule`, built
from the file instead of the run's key): an iteration starts at its node's previous iteration
end (tick 0 for the first), or, if the node is offline then, when it comes back online; it
needs the compute time in force at its start, counted in online ticks: offline intervals pause
it as churn does (an end that would fall on or after the start of an offline interval waits
its length), so no iteration ends while its node is offline. Offline intervals act as churn's:
DivShare drops an offline node's send queue and loses what reaches it; DivShare, Swift,
AD-PSGD and local take a trace with offline rows (`OFFLINE_ALGORITHMS`). What lies past the
run's end changes nothing: an offline interval still open at tick T ends at T + 1 in the
tables. With a trace, HParams.compute_s no longer sets how long iterations last (the trace
does, for every HParams of a sweep alike).

Every row is checked against the int32 clock when a run is built, as HParams are
(`trace_checks.check_trace_rows`): a row's compute time, and the link sub-ticks its upload (and
download, with limits on) needs for the messages a link may hold; a bandwidth too small for
it (an outage written as 0.001 Mbit/s on MovieLens) is refused naming its cell: write an outage
as online=0.

A trace overrides config fields (`overridden_fields`: the compute times always, the
bandwidths where it has their columns): a sweep over one of them under a trace would run one
network under several labels, so `divjax.frontends.sweep` refuses it (`refuse_overridden`), and a
single run warns when such a field differs from its default (`trace_hparams`).

Files are cached on their contents' sha256 (`trace_digest`): a trace rewritten at the same
path is read again, and a checkpoint of the old one refuses to resume (`divjax.engine.fingerprint`).

Every error is a ConfigError naming path:line:column (columns count from 1).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from divjax.config_checks import ConfigError
from divjax.network.pair_files import csv_lines, file_digest, number

COLUMNS = ("time_s", "node", "compute_s", "online", "upload_mbps", "download_mbps")
REQUIRED = ("time_s", "node", "compute_s")
OFFLINE_ALGORITHMS = ("divshare", "swift", "adpsgd", "local")   # model an offline node


class Trace(NamedTuple):
    """A parsed and checked trace file (seconds, as written)."""

    path: str
    columns: tuple     # the header's names, column j + 1 of the file is columns[j]
    values: np.ndarray  # (rows, len(columns)) float64
    line: np.ndarray    # (rows,) int64: the file line of each row

    def col(self, name: str) -> np.ndarray | None:
        """(rows,) the named column, or None if the file has none."""
        return self.values[:, self.columns.index(name)] if name in self.columns else None

    def where(self, row: int, name: str) -> str:
        """'path:line:column' of one cell."""
        return f"{self.path}:{int(self.line[row])}:{self.columns.index(name) + 1}"


class NodeTrace(NamedTuple):
    """A trace in one run's ticks (host side, numpy)."""

    seg_tick: np.ndarray     # (n, P) int64: tick at which node i's p-th row starts (padded:
    #                          int64 max)
    seg_compute: np.ndarray  # (n, P) int64: compute ticks per iteration in force from then
    shortest: np.ndarray     # (n,) int32: every node's shortest compute time, ticks
    longest: np.ndarray      # (n,) int32: its longest
    off_start: np.ndarray | None  # (n, J) int32: node i offline at ticks [off_start, off_end)
    off_end: np.ndarray | None    # (padded with T + 1, T + 1); None: nobody offline in the run
    upload_bps: np.ndarray | None    # (n,) float64 bytes/s, or None (no upload_mbps column)
    download_bps: np.ndarray | None  # (n,) float64 bytes/s, or None
    upload_seg_bps: np.ndarray | None = None  # (n, P) float64 bytes/s in force from seg_tick,
    #                                          when some node's upload varies; else None
    download_seg_bps: np.ndarray | None = None  # (n, P) the same for the download


def read_trace(path: str) -> Trace:
    """Parse and check a trace file (cached on its contents, `pair_files.file_digest`)."""
    return _read(path, trace_digest(path))


def trace_digest(path: str) -> str:
    """The sha256 of the trace file's contents (the key of every cache of it here)."""
    try:
        return file_digest(path)
    except OSError:
        raise ConfigError(f"trace_file={path!r} does not exist: give a CSV trace (format: "
                          f"divjax/network/traces.py; scripts/make_trace.py writes one)") from None


@functools.lru_cache(maxsize=8)
def _read(path: str, _digest: str) -> Trace:
    header, rows, lines = None, [], []
    for line_no, cells in csv_lines(path):
        if header is None:
            header = _header(path, line_no, cells)
            continue
        if len(cells) != len(header):
            col = min(len(cells), len(header)) + 1
            raise ConfigError(f"{path}:{line_no}:{col}: {len(cells)} values, expected "
                              f"{len(header)} (one per column: {','.join(header)})")
        row = []
        for col, cell in enumerate(cells, 1):
            v = number(cell)
            if not math.isfinite(v):
                raise ConfigError(f"{path}:{line_no}:{col}: {cell!r} is not a number "
                                  f"(column {header[col - 1]})")
            row.append(v)
        rows.append(row)
        lines.append(line_no)
    if header is None or not rows:
        raise ConfigError(f"{path}: no {'rows' if header else 'header'}: a trace is a header "
                          f"line ({','.join(REQUIRED)}[,online,upload_mbps,download_mbps]) and "
                          f"one row per change of a node's state")
    trace = Trace(path, tuple(header), np.array(rows, np.float64), np.array(lines, np.int64))
    _check_values(trace)
    return trace


def _header(path: str, line_no: int, cells: list) -> list:
    for col, name in enumerate(cells, 1):
        if name not in COLUMNS:
            raise ConfigError(f"{path}:{line_no}:{col}: {name!r} is not a column of a trace: "
                              f"the first line that is not a comment names the columns, from "
                              f"{','.join(COLUMNS)} (required: {','.join(REQUIRED)})")
        if name in cells[:col - 1]:
            raise ConfigError(f"{path}:{line_no}:{col}: column {name!r} appears twice")
    for name in REQUIRED:
        if name not in cells:
            raise ConfigError(f"{path}:{line_no}:{len(cells) + 1}: the header lacks the "
                              f"required column {name!r} ({','.join(REQUIRED)} are required)")
    return cells


def _first(trace: Trace, bad: np.ndarray, name: str, fix: str) -> None:
    """Raise for the first row where `bad` holds, naming its cell of column `name`."""
    if bad.any():
        r = int(np.argmax(bad))
        raise ConfigError(f"{trace.where(r, name)}: {name}={trace.col(name)[r]:g} is invalid: "
                          f"{fix}")


def _check_values(trace: Trace) -> None:
    """Value checks that need no config: signs, whole node ids, 0/1, sorted times, constant
    bandwidth."""
    t, node = trace.col("time_s"), trace.col("node")
    _first(trace, t < 0, "time_s", "times are simulated seconds >= 0")
    _first(trace, (node < 0) | (node != np.round(node)), "node", "a node id is a whole number "
           ">= 0")
    _first(trace, trace.col("compute_s") <= 0, "compute_s", "a compute time is > 0 seconds")
    if "online" in trace.columns:
        on = trace.col("online")
        _first(trace, (on != 0) & (on != 1), "online", "use 1 (online) or 0 (offline)")
    for name in ("upload_mbps", "download_mbps"):
        if name in trace.columns:
            _first(trace, trace.col(name) <= 0, name, "a bandwidth is > 0 Mbit/s")
    back = np.concatenate([[False], t[1:] < t[:-1]])
    if back.any():
        r = int(np.argmax(back))
        raise ConfigError(f"{trace.where(r, 'time_s')}: time_s={t[r]:g} comes after "
                          f"time_s={t[r - 1]:g} (line {trace.line[r - 1]}): sort the rows by "
                          f"time_s")
    order = np.lexsort((t, node))                       # by node, then time (stable)
    same = (node[order][1:] == node[order][:-1]) & (t[order][1:] == t[order][:-1])
    if same.any():
        r = int(order[1:][np.argmax(same)])
        raise ConfigError(f"{trace.where(r, 'node')}: node {node[r]:g} has a second row at "
                          f"time_s={t[r]:g}: give one row per node and time")


def node_trace(cfg) -> NodeTrace:
    """The trace of `cfg.trace_file` in the ticks of `cfg` (cached): checks node ids against
    n_nodes, whole ticks, every node's row at time 0, and offline rows against the
    algorithm."""
    digest = trace_digest(cfg.trace_file)
    _read(cfg.trace_file, digest)   # checks the file first
    return _node_trace(cfg.trace_file, digest, cfg.n_nodes, cfg.tick_s, cfg.num_ticks,
                       _offline_refused(cfg), _varying_refused(cfg))


def _varying_refused(cfg) -> tuple[str, str]:
    """Why this config cannot take an upload, a download that changes over time ("" if it
    can)."""
    up = "" if cfg.algorithm in ("divshare", "swift", "local") else (
        f"a time-varying upload is modelled for divshare and swift (and local) only, not "
        f"for algorithm={cfg.algorithm!r} yet: give the node one upload_mbps")
    down = "" if cfg.algorithm in ("divshare", "swift", "local") or not _download_limited(
        cfg) else (
        f"a time-varying download is modelled for divshare and swift (and local) only, not "
        f"for algorithm={cfg.algorithm!r} yet: give the node one download_mbps")
    return up, down


def _offline_refused(cfg) -> str:
    """Why this config cannot take offline rows ("" if it can): as churn."""
    if cfg.algorithm not in OFFLINE_ALGORITHMS:
        return (f"availability is not modelled for algorithm={cfg.algorithm!r} yet (synchronous "
                f"rounds of one length): use --algorithm divshare, swift, adpsgd or local")
    return ""


@functools.lru_cache(maxsize=8)
def _node_trace(path: str, digest: str, n: int, tick_s: float, T: int,
                offline_refused: str, varying_refused: tuple = ("", "")) -> NodeTrace:
    trace = _read(path, digest)
    node = trace.col("node").astype(np.int64)
    _first(trace, node >= n, "node", f"this run has n_nodes={n} (ids 0..{n - 1})")
    t = trace.col("time_s") / tick_s
    ticks = np.round(t)
    _first(trace, np.abs(ticks - t) > 0.01, "time_s",
           f"not a whole number of ticks of tick_s={tick_s}: use multiples of it, or lower "
           f"--tick-s")
    c = trace.col("compute_s") / tick_s
    c_ticks = np.maximum(1, np.round(c))
    _first(trace, np.abs(c_ticks - c) / c > 0.01, "compute_s",
           f"not a whole number of ticks of tick_s={tick_s} (to 1%): use multiples of it, or "
           f"lower --tick-s")
    online = trace.col("online")
    online = np.ones(len(node), bool) if online is None else online == 1
    starts = ticks == 0
    missing = np.setdiff1d(np.arange(n), node[starts])
    if missing.size:
        raise ConfigError(f"{trace.path}: node {int(missing[0])} has no row at time_s 0: the "
                          f"trace gives every node's state from the start (column node)")
    if not online.all() and offline_refused:
        r = int(np.argmin(online))
        raise ConfigError(f"{trace.where(r, 'online')}: node {node[r]} goes offline, and "
                          f"{offline_refused}, or a trace without offline rows")
    P = int(np.bincount(node, minlength=n).max())
    seg_tick = np.full((n, P), np.iinfo(np.int64).max, np.int64)
    seg_compute = np.zeros((n, P), np.int64)
    intervals = [[] for _ in range(n)]
    for i in range(n):
        rows = np.flatnonzero(node == i)                 # in time order (the file is sorted)
        seg_tick[i, :rows.size] = ticks[rows]
        seg_compute[i, :rows.size] = c_ticks[rows]
        seg_compute[i, rows.size:] = c_ticks[rows[-1]]
        for p, r in enumerate(rows):                     # maximal offline runs
            if online[r] or (p and not online[rows[p - 1]]):
                continue
            back = [q for q in rows[p + 1:] if online[q]]
            s, e = int(ticks[r]), int(ticks[back[0]]) if back else T + 1
            if s < min(e, T):   # an offline spell within one tick is none (docstring)
                intervals[i].append((s, min(e, T + 1)))
    shortest, longest = seg_compute.min(1), seg_compute.max(1)
    J = max(len(x) for x in intervals)
    off_start = off_end = None
    if J:
        off_start = np.full((n, J), T + 1, np.int32)
        off_end = np.full((n, J), T + 1, np.int32)
        for i, x in enumerate(intervals):
            if x:
                off_start[i, :len(x)], off_end[i, :len(x)] = zip(*x, strict=True)
    bps = {}
    for name in ("upload_mbps", "download_mbps"):
        v = trace.col(name)
        bps[name] = None if v is None else np.array(
            [v[np.flatnonzero(node == i)[0]] for i in range(n)]) * 1e6 / 8
    seg = {}   # bandwidths that change over time: bytes/s per row (padded with the last)
    for name, refused in zip(("upload_mbps", "download_mbps"), varying_refused, strict=True):
        v = trace.col(name)
        seg[name] = None
        if v is None or all(np.unique(v[node == i]).size == 1 for i in range(n)):
            continue
        if refused:
            r = next(r for r in range(len(v)) if v[r] != v[np.flatnonzero(node == node[r])[0]])
            raise ConfigError(f"{trace.where(r, name)}: node {node[r]}'s "
                              f"{name.split('_')[0]} changes over time, and {refused}")
        seg[name] = np.zeros((n, P))
        for i in range(n):
            rows = np.flatnonzero(node == i)
            seg[name][i, :rows.size] = v[rows] * 1e6 / 8
            seg[name][i, rows.size:] = v[rows[-1]] * 1e6 / 8
    return NodeTrace(seg_tick, seg_compute, shortest.astype(np.int32), longest.astype(np.int32),
                     off_start, off_end, bps["upload_mbps"], bps["download_mbps"],
                     seg["upload_mbps"], seg["download_mbps"])


def end_table(cfg, S: int) -> np.ndarray:
    """(n, S) int32: the tick at which iteration k of node i ends under the trace (the rule of
    the module docstring), walked on the host for all nodes at once (cached)."""
    node_trace(cfg)   # checks the trace against the config first
    return _end_table(cfg.trace_file, trace_digest(cfg.trace_file), cfg.n_nodes, cfg.tick_s,
                      cfg.num_ticks, _offline_refused(cfg), S)


@functools.lru_cache(maxsize=8)
def _end_table(path: str, digest: str, n: int, tick_s: float, T: int,
               offline_refused: str, S: int) -> np.ndarray:
    nt = _node_trace(path, digest, n, tick_s, T, offline_refused)
    rows = np.arange(n)
    has_off = nt.off_start is not None
    J = nt.off_start.shape[1] if has_off else 0
    s_off = np.concatenate([nt.off_start, np.full((n, 1), 2**62)], 1) if has_off else None
    e_off = np.concatenate([nt.off_end, np.full((n, 1), 2**62)], 1) if has_off else None
    p = np.zeros(n, np.int64)             # the row in force at `start`
    q = np.zeros(n, np.int64)             # the first offline interval ending after `start`
    prev = np.zeros(n, np.int64)
    ends = np.zeros((n, S), np.int64)
    P = nt.seg_tick.shape[1]
    for k in range(S):
        start = prev.copy()
        if has_off:   # offline at the start: the iteration starts when the node is back
            inside = (q < J) & (s_off[rows, q] <= start) & (start < e_off[rows, q])
            start = np.where(inside, e_off[rows, q], start)
            q = q + inside
        while True:   # the row in force at start
            nxt = np.minimum(p + 1, P - 1)
            step = (p + 1 < P) & (nt.seg_tick[rows, nxt] <= start)
            if not step.any():
                break
            p = p + step
        end = start + nt.seg_compute[rows, p]
        while has_off:   # pause for every offline interval that begins at or before the end
            hit = (q < J) & (s_off[rows, q] <= end)
            if not hit.any():
                break
            end = end + np.where(hit, e_off[rows, q] - s_off[rows, q], 0)
            q = q + hit
        ends[:, k] = end
        prev = end
    if ends.size and ends.max() >= 2**30:
        raise ConfigError(f"trace_file={path!r}: iteration ends past 2^30 ticks do "
                          f"not fit the int32 clock: raise --tick-s or shorten --duration-s")
    ends = ends.astype(np.int32)
    ends.flags.writeable = False   # cached: shared by every caller
    return ends


def _download_limited(cfg) -> bool:
    """`config.download_limited` (which this module cannot import: config imports it)."""
    return cfg.download_mbps > 0 or any(m > 0 for m in cfg.straggler_download_mbps)
