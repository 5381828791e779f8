"""The reference simulators' links, read from the raw inputs rather than the engine's tables:
the upload a trace sets at a tick, and the download links (`divjax.network.downloads`), served one
message at a time, first come first served, event by event."""

from __future__ import annotations

import heapq
import itertools

import jax
import numpy as np

from divjax.network import links as network
from divjax.config import SimConfig


class DownloadLinks:
    """Every node's download link (`divjax.network.downloads`), served event by event: a message
    waits from the sub-tick it reaches its receiver; `serve` takes, first come first served
    (ties: smaller sender first), what has reached the link by the end of a tick."""

    def __init__(self, n: int, resolution: int):
        self.waiting: list[list] = [[] for _ in range(n)]   # per receiver: heap of messages
        self.free = [0] * n                                  # sub-tick each link is free
        self.R = resolution
        self.seq = itertools.count()

    def reach(self, r: int, reach: int, sender: int, units, deadline: int, message):
        """A message reaches r's link at sub-tick `reach`; it takes `units` sub-ticks there
        (or units(start): those at the bandwidth in force when its reception starts) and must
        be received in full by `deadline`. Serve r at tick ceil(reach / R)."""
        heapq.heappush(self.waiting[r], (reach, sender, next(self.seq), units, deadline,
                                         message))

    def serve(self, r: int, t: int) -> list:
        """[(tick, delivered, message)]: each message that reached r by tick t, in order, with
        the tick it is received in full (delivered) or lost (its deadline's tick)."""
        out, R = [], self.R
        while self.waiting[r] and self.waiting[r][0][0] <= t * R:
            reach, _, _, units, deadline, message = heapq.heappop(self.waiting[r])
            start = max(reach, self.free[r])
            done = start + (units(start) if callable(units) else units)
            if done <= deadline:
                self.free[r] = done
                out.append((-(-done // R), True, message))
            else:   # the sender closes the connection first: lost at the deadline
                self.free[r] = deadline if start < deadline else self.free[r]
                out.append((-(-deadline // R), False, message))
        return out


def download_units_of(cfg: SimConfig, fragment_bytes: np.ndarray, down_units: np.ndarray):
    """units(r, k) -> what `DownloadLinks.reach` takes for a message of fragment k (None: a
    full model) to node r: its constant sub-ticks, or, when the trace's download changes, a
    function of the start sub-tick reading the trace's raw rows (the row of r at or before)."""
    rows = None
    if cfg.trace_file:
        from divjax.network.traces import read_trace

        tr = read_trace(cfg.trace_file)
        down = tr.col("download_mbps")
        node = tr.col("node")
        if down is not None and any(np.unique(down[node == i]).size > 1
                                    for i in range(cfg.n_nodes)):
            rows = [[(round(t / cfg.tick_s) * cfg.link_resolution, d * 1e6 / 8)
                     for t, nd, d in zip(tr.col("time_s"), node, down, strict=True) if nd == r]
                    for r in range(cfg.n_nodes)]

    def units(r: int, k: int | None):
        pick = (lambda u: int(np.sum(u))) if k is None else (lambda u: int(u[k]))  # noqa: E731
        if rows is None:
            return pick(down_units[r])

        def at(start: int) -> int:
            bps = [b for sub, b in rows[r] if sub <= start][-1]
            return pick(np.asarray(network.download_units(fragment_bytes,
                                                          jax.numpy.float32(bps), cfg)))
        return at

    return units


def upload_units_of(cfg: SimConfig, fragment_bytes: np.ndarray, msg_units: np.ndarray):
    """units(i, t) -> (K,) sub-ticks of node i's fragments for a queue formed at tick t: the
    upload of its last trace row at or before t (the file's raw rows), or its constant upload
    (`msg_units[i]`) when no trace changes it."""
    rows = None
    if cfg.trace_file:
        from divjax.network.traces import read_trace

        tr = read_trace(cfg.trace_file)
        up, node = tr.col("upload_mbps"), tr.col("node")
        if up is not None and any(np.unique(up[node == i]).size > 1
                                  for i in range(cfg.n_nodes)):
            rows = [[(round(t / cfg.tick_s), b * 1e6 / 8)
                     for t, nd, b in zip(tr.col("time_s"), node, up, strict=True) if nd == i]
                    for i in range(cfg.n_nodes)]

    def units(i: int, t: int) -> np.ndarray:
        if rows is None:
            return np.asarray(msg_units[i])
        bps = [b for tick, b in rows[i] if tick <= t][-1]
        return np.asarray(network.fragment_units(fragment_bytes, jax.numpy.float32(bps), cfg))

    return units
