"""The event loop the reference simulators (`divjax.reference.divshare`, `divjax.reference.baselines`)
are written on: a heap of events, handled one at a time, each by a named method.

An event is (tick, phase, sequence number, kind, data): events are handled in tick order, then
phase order (a simulator documents what its phases are), then in the order they were scheduled.
An event of kind "arrive" with data (i, r, ...) is handled by `self.on_arrive(tick, i, r, ...)`.
"""

from __future__ import annotations

import heapq
import itertools


class EventLoop:
    """A heap of events and the loop that hands each to its `on_<kind>` method."""

    def __init__(self):
        self.events: list = []          # the heap: (tick, phase, sequence, kind, data)
        self._seq = itertools.count()   # ties within a tick and phase: scheduling order

    def at(self, tick, phase, kind, *data) -> None:
        """Schedule the event `kind(*data)` at `tick`, in `phase`."""
        heapq.heappush(self.events, (int(tick), phase, next(self._seq), kind, data))

    def run(self, num_ticks: int) -> None:
        """Handle every event before tick `num_ticks`, in order (handlers may schedule more)."""
        while self.events and self.events[0][0] < num_ticks:
            t, _, _, kind, data = heapq.heappop(self.events)
            getattr(self, "on_" + kind)(t, *data)


def offline_at(offline: dict, tick: int) -> bool:
    """Whether a node whose offline intervals are `offline` ({start: end}, [start, end)) is
    offline at `tick`."""
    return any(s_j <= tick < e_j for s_j, e_j in offline.items())


def pair_latency(table, i: int, r: int) -> int:
    """Sub-ticks from node i's link to node r: i's latency plus the regions' (`table`: a
    `network.link_table` as numpy arrays)."""
    return int(table.latency_units[i]) + int(table.region_units[table.region[i], table.region[r]])
