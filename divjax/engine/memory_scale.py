"""How many nodes fit: the largest n under a memory budget, and the dry run's data at large n.

`largest_n` searches n against `memory.memory_model` (every n tried builds the algorithm's state
under jax.eval_shape: nothing is allocated); `DataProbe` gives the task's device data as
`fixed + per_node * n` bytes from builds at a few small n, so a dry run at a million nodes never
builds a million nodes' data.
"""

from __future__ import annotations

import math
from typing import Any

from divjax.config import SimConfig
from divjax.engine.memory import FRACTION, available_memory_bytes, memory_model, task_data_bytes

DRY_RUN_PROBE = 4096   # above this many nodes the dry run fits the task's data bytes
PROBE_SIZES = (512, 1024)  # ... from builds of the task at these sizes


class DataProbe:
    """The task's device data as `fixed + per_node * n` bytes, for the dry run and `largest_n`.

    Up to `probe` nodes the task is built at n itself (exact) and at 2 n (for the slope; where
    that is no valid config, the data counts as fixed). Above, it is built at PROBE_SIZES nodes
    only and the bytes at n are the linear fit: a dry run at a million nodes then never builds a
    million nodes' data (the synthetic task's is 5 KiB per node, and it sums the moments of all
    of it on the host). Attributes: task (built at n, or at the largest probe: its shapes
    and name are n's), fixed, per_node, sizes (the n built), fitted (bytes at n extrapolated).
    """

    def __init__(self, cfg: SimConfig, make: Any = None, probe: int = DRY_RUN_PROBE):
        from divjax.config import ConfigError

        if make is None:
            from divjax.tasks.registry import make_task as make
        n = cfg.n_nodes
        self.fitted = n > probe
        small, big = PROBE_SIZES if self.fitted else (n, 2 * n)
        self.task = make(_at_n(cfg, small if not self.fitted else big))
        first = task_data_bytes(self.task)
        try:
            other = task_data_bytes(make(_at_n(cfg, small if self.fitted else big)))
        except ConfigError:   # e.g. a task with at most n nodes' worth of data
            other, big = first, small
        low, high = (other, first) if self.fitted else (first, other)
        self.sizes = (small, big)
        self.per_node = max(0.0, (high - low) / (big - small)) if big > small else 0.0
        self.fixed = max(0, int(round(low - self.per_node * small)))
        self.exact = None if self.fitted else first

    def bytes_at(self, n: int) -> int:
        """Data bytes at n nodes: measured at the run's own n, else the linear fit."""
        if self.exact is not None:
            return self.exact
        return int(self.fixed + self.per_node * n)

    def describe(self) -> str:
        how = "fitted from" if self.fitted else "measured; slope from"
        return (f"data {self.fixed / 2**20:.1f} MiB + {self.per_node / 2**10:.2f} KiB per node "
                f"({how} the task built at n={self.sizes[0]} and n={self.sizes[1]})")


def _at_n(cfg: SimConfig, n: int) -> SimConfig:
    return cfg.replace(n_nodes=n, n_stragglers=min(cfg.n_stragglers, n))


def largest_n(cfg: SimConfig, layout: Any, budget: int | None = None, *,
              ring_slots: int | None = None, capacity_fraction: float = 1.0,
              data_bytes_per_node: float = 0.0, data_bytes_fixed: int = 0,
              activation_bytes: int = 0, temporaries_per_node: float | None = None,
              n_max: int = 1 << 24) -> int:
    """The largest n whose `memory_model` total fits `budget` bytes (default: FRACTION of the
    device's memory). Everything else in cfg stays as it is; the training capacity scales as
    capacity_fraction * n (1.0: every node may finish at the same tick), the data as
    data_bytes_fixed + data_bytes_per_node * n, XLA's temporaries (traced at the run's own n,
    `memory_temps.interval_temporaries`) as temporaries_per_node * n: every array of the
    interval has a node axis of n or of the training capacity (a share of n), or none (see
    memory_temps; None: not traced, the hand count of the training buffers). The fanout stays too, so the search starts at
    n = fanout + 1 (at least 2); returns 0 if not even that fits. Every n tried builds the
    algorithm's state under jax.eval_shape (`abstract_state`): nothing is allocated."""
    budget = int(FRACTION * available_memory_bytes()) if budget is None else int(budget)

    def total(n: int) -> int:
        c = cfg.replace(n_nodes=n, train_capacity=0, n_stragglers=min(cfg.n_stragglers, n))
        return memory_model(c, layout, ring_slots=ring_slots,
                            train_capacity=max(1, math.ceil(capacity_fraction * n)),
                            data_bytes=int(data_bytes_fixed + data_bytes_per_node * n),
                            activation_bytes=activation_bytes, available=budget,
                            temporaries=None if temporaries_per_node is None else
                            math.ceil(temporaries_per_node * n))["total"]

    smallest = max(2, cfg.fanout + 1)
    if smallest > n_max or total(smallest) > budget:
        return 0
    lo, hi = _bracket(total, budget, _linear_guess(total, budget, smallest, n_max), smallest,
                      n_max)
    while hi - lo > 1:  # total(lo) fits, total(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if total(mid) <= budget else (lo, mid)
    return lo


def _linear_guess(total: Any, budget: int, smallest: int, n_max: int) -> int:
    """Where the line through total(a), total(2a) (a = 1024, or less) meets the budget: the
    boundary itself when the model is affine in n (most algorithms), a start otherwise."""
    a = max(smallest, min(1024, n_max // 2))
    b = min(n_max, 2 * a)
    if b <= a:
        return smallest
    ta, tb = total(a), total(b)
    if tb <= ta:
        return n_max
    return int(min(n_max, max(smallest, a + (budget - ta) * (b - a) // (tb - ta))))


def _bracket(total: Any, budget: int, guess: int, smallest: int, n_max: int) -> tuple:
    """(lo, hi) with total(lo) <= budget < total(hi) (hi = n_max + 1 past the range), by
    steps of 1, 2, 4, ... from `guess` (total(smallest) fits): few calls when the guess is
    close, a doubling search otherwise."""
    step = 1
    if total(guess) <= budget:
        lo = guess
        while lo < n_max:
            hi = min(n_max, lo + step)
            if total(hi) > budget:
                return lo, hi
            lo, step = hi, 2 * step
        return n_max, n_max + 1
    hi = guess
    while True:
        lo = max(smallest, hi - step)
        if total(lo) <= budget:
            return lo, hi
        hi, step = lo, 2 * step
