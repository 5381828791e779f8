"""Static simulation settings (`SimConfig`) and vmappable hyperparameters (`HParams`).

`SimConfig` fixes shapes and code paths: it is frozen and hashable, and changing it recompiles.
`HParams` is a pytree of numbers a sweep may vary (learning rate, every node's compute time,
upload bandwidth and latency); any leaf may carry a leading sweep axis.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from divjax.network.compute_schedule import compute_spread_factors
from divjax.config_checks import (  # noqa: F401
    FANOUT_NEEDED,
    MODELLED_BY,
    ConfigError,
    check_config,
    modelled_by,
)

# The DivShare authors' Kollaps topology (paper.md): 7 communication stragglers among 60 nodes.
PAPER_STRAGGLER_MBPS = (12.0, 12.0, 12.0, 13.0, 10.0, 13.0, 11.0)


@dataclass(frozen=True)
class SimConfig:
    """Static settings: anything that fixes an array shape or selects code.

    Times are in simulated seconds; the engine works in integer ticks of `tick_s` seconds.
    The network fields (`fast_mbps` ... `straggler_compute_factor`) only build the default
    per-node arrays of `HParams` (see `default_hparams`); a sweep replaces those arrays.
    `straggler_mbps` holds one bandwidth that every straggler gets, or at least one per
    straggler (never cycled). Every field's trailing comment is its documentation: the CLI's
    `--help` is built from it (`field_help`). `__post_init__` checks every field's type (an int
    field refuses 16.5 and "16"; numpy scalars become Python numbers) and value, and refuses
    configs that would run without doing what they say (a fanout that exchanges nothing,
    momentum >= 1, a negative learning rate, fewer straggler bandwidths than stragglers).
    `validation_share` > 0 turns the test metrics into validation metrics (same names: rmse,
    acc, loss), for choosing hyperparameters without looking at the test set; the run's
    config.json records it, and its task info says `evaluated_on`.
    """

    algorithm: str = "divshare"      # divshare, swift, adpsgd, dpsgd, epidemic or local
    task: str = "synthetic"          # synthetic, movielens, movielens-100k, movielens-synthetic,
    #                                  cifar10, cifar10-iid, cifar10-dirichlet0.5, ...
    n_nodes: int = 16                # n: number of nodes
    n_fragments: int = 4             # Omega (K): fragments per model (1 = whole model per message)
    fanout: int = 3                  # s: distinct receivers per fragment per iteration ("degree");
    #                                  AD-PSGD pings fanout // 2 neighbours (with replacement);
    #                                  D-PSGD ignores it (it averages with all its neighbours)
    topology: str = "complete"       # neighbour graph: complete, ring, torus, regular:D, file:PATH
    local_steps: int = 4             # SGD mini-batch steps per iteration
    batch_size: int = 8              # samples per mini-batch
    momentum_buffer: bool = False    # keep an SGD momentum buffer per node (uses --momentum)
    reset_optimizer: bool = True     # reset optimizer state after each aggregation (authors' default)
    same_init: bool = True           # every node starts from the same model (authors' default)
    fragment_seed: int = 97          # seed of the fixed fragment partition, shared by every node
    data_seed: int = 0               # seed of the data partition and of random topologies
    data_dir: str = ""               # local data copy for real tasks, or "tfds" / "tfds:DIR"
    #                                  (TensorFlow Datasets); "" = the embedded MovieLens
    #                                  latest-small (CIFAR-10 has no embedded copy)
    validation_share: float = 0.0    # tune on a validation split: each node holds out this
    #                                  fraction of its own training samples (fixed by data_seed;
    #                                  at least 1 per node with 2 or more, at least 1 kept), trains
    #                                  on the rest, and every metric is computed on the held-out
    #                                  samples instead of the test set, which is then never read
    #                                  (movielens* and cifar10* tasks); 0 = evaluate on the test set
    # --- clock ---
    tick_s: float = 0.01             # length of one tick, simulated seconds
    duration_s: float = 20.0         # simulated time of the run, seconds
    eval_every_s: float = 1.0        # metrics sampling interval, simulated seconds
    delivery: str = "receiver_iteration"  # ring indexing: "arrival_tick" or "receiver_iteration"
    inbox: str = "latest"            # inbox rule at an aggregation: "latest" keeps the newest
    #                                  message per (sender, fragment), as the authors' code does;
    #                                  "sum" averages every copy that arrived since the last one
    inbox_history: int = 0           # AD-PSGD with inbox "latest": post-training snapshots kept
    #                                  per node to take a replaced message out again; 0 = auto
    ping_slots: int = 0              # AD-PSGD: ping records each node holds (its ping table: a
    #                                  ping, its pong, kept until no newer model can replace
    #                                  them); 0 = auto, from the longest delay and compute time
    ring_ticks: int = 0              # ring slots (L or B, see network/links.py); 0 = smallest that fits
    delay_ticks: int = 0             # longest enqueue-to-arrival delay in ticks; 0 = auto
    link_resolution: int = 1000      # link clock sub-ticks per tick (sequential sends are exact)
    train_capacity: int = 0          # most nodes that finish in one tick; 0 = exact maximum
    train_chunk: int = 0             # nodes trained at once (0 = every finishing node under one
    #                                  vmap; k: lax.map over chunks of k, bounding memory; 1 runs
    #                                  per-node kernels, faster for CNNs on CPU)
    iteration_chunk: int = -1        # finishing nodes whose iteration end runs at once: 0 all,
    #                                  k bounds the gathered models, -1 auto (all when nodes finish
    #                                  together, else small chunks: sizing.auto_iteration_chunk)
    eval_chunk: int = 64             # nodes evaluated at once (bounds evaluation memory)
    # --- default network (builds HParams arrays) ---
    fast_mbps: float = 60.0          # upload bandwidth of a normal node, Mbit/s
    straggler_mbps: tuple = PAPER_STRAGGLER_MBPS  # upload bandwidth of the stragglers, Mbit/s:
    #                                  one value for all of them, or at least one per straggler
    n_stragglers: int = 0            # the last n_stragglers nodes are communication stragglers
    download_mbps: float = 0.0       # download bandwidth of a normal node, Mbit/s; 0 = unlimited
    #                                  (no download model: a message arrives as it leaves the link)
    straggler_download_mbps: tuple = (0.0,)  # download bandwidth of the stragglers, Mbit/s: one
    #                                  value for all, or one per straggler; 0 = unlimited
    latency_ms: float = 1.0          # one-way latency of every link, milliseconds
    latency_regions: int = 1         # nodes in this many regions (node i in region i mod G);
    #                                  a message between two regions takes inter_region_ms more
    inter_region_ms: float = 0.0     # one-way latency added between different regions, ms
    latency_file: str = ""           # CSV, n rows of n values: one-way latency added from node
    #                                  i (row) to node j (column), ms; replaces the regions
    loss_rate: float = 0.0           # probability that a sent message is lost on its way
    #                                  (each independently); 0 = none
    loss_file: str = ""              # CSV, n rows of n loss probabilities in [0, 1) (row i: from
    #                                  node i to each node j): per-link loss instead
    compute_s: float = 1.0           # simulated seconds per iteration (all local steps); a
    #                                  trace gives its own
    straggler_compute_factor: float = 1.0  # stragglers compute this many times slower
    compute_spread: float = 0.0      # heterogeneous compute: node i takes compute_s *
    #                                  exp(s z_i - s^2 / 2), z_i ~ N(0, 1) (log-normal, mean
    #                                  compute_s), rounded to whole ticks; 0 = every node equal
    compute_seed: int = 0            # seed of those draws (numpy; the run's key is separate)
    compute_jitter: float = 0.0      # per-iteration jitter: iteration k of node i takes its
    #                                  compute time * exp(s z - s^2 / 2), z ~ N(0, 1) clipped to
    #                                  [-3, 3], drawn from the run's key; 0 = fixed times
    churn_rate: float = 0.0          # churn: mean fraction of the time a node is offline
    #                                  (exponential on/off times from the run's key); 0 = none
    churn_mean_s: float = 1.0        # churn: mean length of an offline interval, seconds
    iteration_slots: int = 0         # jitter, churn, traces: iteration ends tabled per node;
    #                                  0 = auto
    trace_file: str = ""             # CSV of every node's compute time, availability and
    #                                  bandwidth over time (--trace; format: divjax/network/traces.py,
    #                                  scripts/make_trace.py writes one); "" = none
    # --- default optimizer (builds HParams) ---
    lr: float = 0.05                 # SGD learning rate, >= 0
    momentum: float = 0.0            # SGD momentum in [0, 1) (needs --momentum-buffer)
    weight_decay: float = 0.0        # L2 weight decay coefficient, >= 0

    def __post_init__(self):
        check_config(self)

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


def field_help() -> dict[str, str]:
    """{field name: its documentation}: the trailing `# ...` comment of every SimConfig field
    (and its indented continuation lines), read from this module's source, and for a feature
    the algorithms that model it (`config_checks.MODELLED_BY`, which the checks enforce). The
    one source of the CLI's flag help (`divjax run --help`)."""
    return dict(_field_help())


@functools.cache
def _field_help() -> dict[str, str]:
    import inspect
    import re

    names = {f.name for f in dataclasses.fields(SimConfig)}
    out: dict[str, str] = {}
    current = None
    try:
        lines = inspect.getsource(SimConfig).splitlines()
    except (OSError, TypeError):   # no source (frozen install): flags keep bare help
        lines = []
    for line in lines:
        m = re.match(r"\s+(\w+): [^#]*?#\s?(.*)$", line)
        if m and m.group(1) in names:
            current = m.group(1)
            out[current] = m.group(2).strip()
            continue
        m = re.match(r"\s+#\s{2,}(\S.*)$", line)   # continuation: "#   more text"
        if m and current is not None:
            out[current] += " " + m.group(1).strip()
            continue
        current = None
    for name in MODELLED_BY:
        out[name] = (out.get(name, "") + f" [modelled by: {modelled_by(name)}]").strip()
    return out


def check_hparams(cfg: SimConfig, hp: HParams, where: str = "hp") -> None:
    """Raise ConfigError unless every per-node HParams leaf has the config's n in its last axis
    (HParams built for another n_nodes, e.g. `default_hparams(other_cfg)`)."""
    n = cfg.n_nodes
    for name in ("compute_s", "upload_bps", "latency_s", "download_bps"):
        shape = np.shape(getattr(hp, name))
        if not shape or shape[-1] != n:
            raise ConfigError(
                f"{where}.{name} has shape {shape}: these HParams were built for "
                f"{shape[-1] if shape else 'no'} nodes, the config has n_nodes={n}; build them "
                f"with default_hparams(cfg) for this config")


@struct.dataclass
class HParams:
    """Dynamic hyperparameters; any leaf may carry a leading sweep axis (H,)."""

    lr: jax.Array             # () float32
    momentum: jax.Array       # () float32 (used when SimConfig.momentum_buffer)
    weight_decay: jax.Array   # () float32
    compute_s: jax.Array      # (n,) float32: simulated seconds per iteration of every node
    upload_bps: jax.Array     # (n,) float32: upload bandwidth of every node, bytes per second
    latency_s: jax.Array      # (n,) float32: one-way latency of every node's messages
    download_bps: jax.Array   # (n,) float32: download bandwidth of every node, bytes per second
    #                           (inf = unlimited; only read when `download_limited(cfg)`)


def straggler_mask(cfg: SimConfig) -> np.ndarray:
    """(n,) bool: the last `n_stragglers` nodes are the stragglers."""
    mask = np.zeros(cfg.n_nodes, bool)
    if cfg.n_stragglers:
        mask[-cfg.n_stragglers:] = True
    return mask


def download_limited(cfg: SimConfig) -> bool:
    """True when some node's download bandwidth is limited: the engine then queues arriving
    messages on download links (`divjax.network.downloads`); static, as it selects code."""
    # not read from n_stragglers, which a sweep may vary under one compiled program
    return cfg.download_mbps > 0 or any(m > 0 for m in cfg.straggler_download_mbps)


def per_node_mbps(cfg: SimConfig, fast: float, stragglers: tuple) -> np.ndarray:
    """(n,) float64 Mbit/s: `fast` for normal nodes, the stragglers' values (one for all, or
    one per straggler, never cycled) for the last n_stragglers nodes."""
    mbps = np.full(cfg.n_nodes, fast, np.float64)
    for j, i in enumerate(np.flatnonzero(straggler_mask(cfg))):
        mbps[i] = stragglers[min(j, len(stragglers) - 1)]
    return mbps


def default_hparams(cfg: SimConfig) -> HParams:
    """Per-node arrays built from the config's network description."""
    n = cfg.n_nodes
    slow = straggler_mask(cfg)
    mbps = per_node_mbps(cfg, cfg.fast_mbps, cfg.straggler_mbps)
    down = per_node_mbps(cfg, cfg.download_mbps, cfg.straggler_download_mbps)
    compute = np.where(slow, cfg.compute_s * cfg.straggler_compute_factor, cfg.compute_s)
    if cfg.compute_spread:   # drawn times, rounded to whole ticks (the clock's unit)
        compute = compute * compute_spread_factors(cfg)
        compute = np.maximum(1, np.round(compute / cfg.tick_s)) * cfg.tick_s
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    hp = HParams(
        lr=f32(cfg.lr),
        momentum=f32(cfg.momentum),
        weight_decay=f32(cfg.weight_decay),
        compute_s=f32(compute),
        upload_bps=f32(mbps * 1e6 / 8.0),
        latency_s=f32(np.full(n, cfg.latency_ms / 1e3)),
        download_bps=f32(np.where(down > 0, down * 1e6 / 8.0, np.inf)),
    )
    if cfg.trace_file:   # the trace's constant bandwidths (divjax/network/traces.py)
        from divjax.network.trace_checks import trace_hparams
        hp = trace_hparams(cfg, hp)
    return hp


def product(base: HParams, **values) -> HParams:
    """Cartesian product of `values` (field -> list); other fields broadcast to the grid.

    Every leaf gets a leading axis H = number of combinations.
    """
    for name, vals in values.items():
        if name not in {f.name for f in dataclasses.fields(HParams)}:
            raise ConfigError(f"product(): {name!r} is not an HParams field")
        if len(vals) == 0:   # the grid would be empty: a sweep of nothing
            raise ConfigError(f"product(): {name}=[] has no values: give at least one")
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
