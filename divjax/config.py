"""Static simulation settings (`SimConfig`) and vmappable hyperparameters (`HParams`).

`SimConfig` fixes shapes and code paths: it is frozen and hashable, and changing it recompiles.
`HParams` is a pytree of numbers a sweep may vary (learning rate, every node's compute time,
upload bandwidth and latency); any leaf may carry a leading sweep axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# The DivShare authors' Kollaps topology (paper.md): 7 communication stragglers among 60 nodes.
PAPER_STRAGGLER_MBPS = (12.0, 12.0, 12.0, 13.0, 10.0, 13.0, 11.0)


class ConfigError(ValueError):
    """An invalid configuration: the message names the field, the value and the fix."""


@dataclass(frozen=True)
class SimConfig:
    """Static settings: anything that fixes an array shape or selects code.

    Times are in simulated seconds; the engine works in integer ticks of `tick_s` seconds.
    The network fields (`fast_mbps` ... `straggler_compute_factor`) only build the default
    per-node arrays of `HParams` (see `default_hparams`); a sweep replaces those arrays.
    """

    algorithm: str = "divshare"      # key into divjax.algorithms.ALGORITHMS
    task: str = "synthetic"          # key into divjax.tasks.TASKS
    n_nodes: int = 16                # n
    n_fragments: int = 4             # Omega (K): fragments per model
    fanout: int = 3                  # s: distinct receivers per fragment per iteration ("degree");
    #                                  AD-PSGD pings fanout // 2 neighbours (with replacement)
    topology: str = "complete"       # neighbour graph the receivers are drawn from
    local_steps: int = 4             # SGD mini-batch steps per iteration
    batch_size: int = 8
    momentum_buffer: bool = False    # keep an SGD momentum buffer per node (HParams.momentum)
    reset_optimizer: bool = True     # reset optimizer state after each aggregation (authors' default)
    same_init: bool = True           # every node starts from the same model (authors' default)
    fragment_seed: int = 97          # seed of the fixed fragment partition, shared by every node
    data_seed: int = 0               # seed of the data partition (numpy, once)
    data_dir: str = ""               # local data copy for real tasks ("" = embedded/online)
    # --- clock ---
    tick_s: float = 0.01             # length of one tick in simulated seconds
    duration_s: float = 20.0         # simulated time of the run
    eval_every_s: float = 1.0        # metrics sampling interval (simulated seconds)
    delivery: str = "receiver_iteration"  # ring indexing: "arrival_tick" or "receiver_iteration"
    inbox: str = "latest"            # inbox rule at an aggregation: "latest" keeps the newest
    #                                  message per (sender, fragment), as the authors' code does;
    #                                  "sum" averages every copy that arrived since the last one
    inbox_history: int = 0           # AD-PSGD with inbox "latest": post-training snapshots kept
    #                                  per node to take a replaced message out again; 0 = auto
    ring_ticks: int = 0              # ring slots (L or B, see network.py); 0 = smallest that fits
    delay_ticks: int = 0             # longest enqueue-to-arrival delay in ticks; 0 = auto
    link_resolution: int = 1000      # link clock sub-ticks per tick (sequential sends are exact)
    train_capacity: int = 0          # most nodes that finish in one tick; 0 = exact maximum
    train_chunk: int = 0             # nodes trained at once (0 = every finishing node under one
    #                                  vmap; k: lax.map over chunks of k, bounding memory; 1 runs
    #                                  per-node kernels, faster for CNNs on CPU)
    iteration_chunk: int = 0         # finishing nodes whose whole iteration end (training,
    #                                  sending, averaging) runs at once; 0 = all; k bounds the
    #                                  gathered models to k (thousands of large models in memory)
    eval_chunk: int = 64             # nodes evaluated at once (bounds evaluation memory)
    # --- default network (builds HParams arrays) ---
    fast_mbps: float = 60.0          # upload bandwidth of a normal node, Mbit/s
    straggler_mbps: tuple = PAPER_STRAGGLER_MBPS  # one entry per straggler, cycled
    n_stragglers: int = 0            # the last n_stragglers nodes are communication stragglers
    latency_ms: float = 1.0          # one-way latency of every link
    compute_s: float = 1.0           # simulated seconds per iteration (all local steps)
    straggler_compute_factor: float = 1.0  # stragglers compute this many times slower
    # --- default optimizer (builds HParams) ---
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        def bad(field, value, fix):
            raise ConfigError(f"{field}={value!r} is invalid: {fix}")

        if self.n_nodes < 2:
            bad("n_nodes", self.n_nodes, "a decentralized run needs at least 2 nodes")
        if self.n_fragments < 1:
            bad("n_fragments", self.n_fragments, "use Omega >= 1 (1 = whole model per message)")
        if self.fanout < 0:
            bad("fanout", self.fanout, "use s >= 0 receivers per fragment")
        if self.fanout > self.n_nodes - 1:
            bad("fanout", self.fanout,
                f"s must be at most n_nodes - 1 = {self.n_nodes - 1} (a node never sends to itself)")
        if self.local_steps < 1:
            bad("local_steps", self.local_steps, "use at least 1 local step per iteration")
        if self.batch_size < 1:
            bad("batch_size", self.batch_size, "use a positive batch size")
        for name in ("tick_s", "duration_s", "eval_every_s", "compute_s", "fast_mbps",
                     "straggler_compute_factor"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                bad(name, v, "must be a positive, finite number")
        if any(not (m > 0) for m in self.straggler_mbps):
            bad("straggler_mbps", self.straggler_mbps, "every bandwidth must be positive")
        if not 0 <= self.n_stragglers <= self.n_nodes:
            bad("n_stragglers", self.n_stragglers, f"use 0..n_nodes={self.n_nodes}")
        if self.latency_ms < 0:
            bad("latency_ms", self.latency_ms, "latency cannot be negative")
        if self.eval_every_s < self.tick_s:
            bad("eval_every_s", self.eval_every_s, f"must be at least tick_s={self.tick_s}")
        ratio = self.eval_every_s / self.tick_s
        if abs(ratio - round(ratio)) > 1e-6:
            bad("eval_every_s", self.eval_every_s,
                f"must be a whole number of ticks (tick_s={self.tick_s})")
        chunks = self.duration_s / self.eval_every_s
        if abs(chunks - round(chunks)) > 1e-6:
            bad("duration_s", self.duration_s,
                f"must be a whole number of eval intervals (eval_every_s={self.eval_every_s})")
        if self.delivery not in ("arrival_tick", "receiver_iteration"):
            bad("delivery", self.delivery, "use 'arrival_tick' or 'receiver_iteration'")
        if self.inbox not in ("latest", "sum"):
            bad("inbox", self.inbox, "use 'latest' (the authors' rule) or 'sum'")
        if self.inbox_history < 0:
            bad("inbox_history", self.inbox_history, "use 0 (auto) or a positive count")
        if self.ring_ticks < 0:
            bad("ring_ticks", self.ring_ticks, "use 0 (auto) or a positive ring length")
        if self.delay_ticks < 0:
            bad("delay_ticks", self.delay_ticks, "use 0 (auto) or a positive number of ticks")
        if self.link_resolution < 1:
            bad("link_resolution", self.link_resolution, "use a positive number of sub-ticks")
        if not 0 <= self.train_capacity <= self.n_nodes:
            bad("train_capacity", self.train_capacity, f"use 0 (auto) .. n_nodes={self.n_nodes}")
        if self.train_chunk < 0:
            bad("train_chunk", self.train_chunk, "use 0 (all at once) or a positive chunk size")
        if self.iteration_chunk < 0:
            bad("iteration_chunk", self.iteration_chunk,
                "use 0 (all at once) or a positive chunk size")
        if self.eval_chunk < 1:
            bad("eval_chunk", self.eval_chunk, "use a positive chunk size")

    # Derived quantities (never written back into the config).
    @property
    def eval_every(self) -> int:
        """Ticks per metrics sample (E)."""
        return int(round(self.eval_every_s / self.tick_s))

    @property
    def num_chunks(self) -> int:
        """Number of metrics samples (C)."""
        return int(round(self.duration_s / self.eval_every_s))

    @property
    def num_ticks(self) -> int:
        return self.eval_every * self.num_chunks

    @property
    def messages_per_iteration(self) -> int:
        """M: messages a node enqueues per iteration (DivShare: Omega * s)."""
        return self.n_fragments * self.fanout

    def replace(self, **changes) -> SimConfig:
        return dataclasses.replace(self, **changes)


@struct.dataclass
class HParams:
    """Dynamic hyperparameters; any leaf may carry a leading sweep axis (H,)."""

    lr: jax.Array             # () float32
    momentum: jax.Array       # () float32 (used when SimConfig.momentum_buffer)
    weight_decay: jax.Array   # () float32
    compute_s: jax.Array      # (n,) float32: simulated seconds per iteration of every node
    upload_bps: jax.Array     # (n,) float32: upload bandwidth of every node, bytes per second
    latency_s: jax.Array      # (n,) float32: one-way latency of every node's messages


def straggler_mask(cfg: SimConfig) -> np.ndarray:
    """(n,) bool: the last `n_stragglers` nodes are the stragglers."""
    mask = np.zeros(cfg.n_nodes, bool)
    if cfg.n_stragglers:
        mask[-cfg.n_stragglers:] = True
    return mask


def default_hparams(cfg: SimConfig) -> HParams:
    """Per-node arrays built from the config's network description."""
    n = cfg.n_nodes
    slow = straggler_mask(cfg)
    mbps = np.full(n, cfg.fast_mbps, np.float64)
    straggler_ids = np.flatnonzero(slow)
    for j, i in enumerate(straggler_ids):
        mbps[i] = cfg.straggler_mbps[j % len(cfg.straggler_mbps)]
    compute = np.where(slow, cfg.compute_s * cfg.straggler_compute_factor, cfg.compute_s)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return HParams(
        lr=f32(cfg.lr),
        momentum=f32(cfg.momentum),
        weight_decay=f32(cfg.weight_decay),
        compute_s=f32(compute),
        upload_bps=f32(mbps * 1e6 / 8.0),
        latency_s=f32(np.full(n, cfg.latency_ms / 1e3)),
    )


def product(base: HParams, **values) -> HParams:
    """Cartesian product of `values` (field -> list); other fields broadcast to the grid.

    Every leaf gets a leading axis H = number of combinations.
    """
    for name in values:
        if name not in {f.name for f in dataclasses.fields(HParams)}:
            raise ConfigError(f"product(): {name!r} is not an HParams field")
    combos = list(itertools.product(*values.values()))
    H = len(combos)
    cols = {k: jnp.asarray(np.array([c[i] for c in combos]), jnp.float32)
            for i, k in enumerate(values)}

    def widen(name, leaf):
        if name in cols:
            col = cols[name]
            leaf = jnp.asarray(leaf)
            if col.ndim == 1 and leaf.ndim == 1:  # a scalar per config for a per-node field
                col = jnp.broadcast_to(col[:, None], (H,) + leaf.shape)
            return col
        leaf = jnp.asarray(leaf)
        return jnp.broadcast_to(leaf, (H,) + leaf.shape)

    return HParams(**{f.name: widen(f.name, getattr(base, f.name))
                      for f in dataclasses.fields(HParams)})
