"""The value and type checks of `SimConfig` (run by its `__post_init__`): every refusal names
the field, the value and the fix."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np


class ConfigError(ValueError):
    """An invalid configuration: the message names the field, the value and the fix."""


# Algorithms whose exchange is driven by `fanout`: (smallest useful fanout, what it does).
# dpsgd follows the topology and local never communicates, so they take any fanout.
FANOUT_NEEDED = {
    "divshare": (1, "sends each fragment to fanout receivers"),
    "swift": (1, "sends its model to fanout receivers"),
    "epidemic": (1, "sends its model to fanout peers"),
    "adpsgd": (2, "sends fanout // 2 pings"),
}


# Every algorithm name (`divjax.algorithms.ALGORITHMS`; a test checks they agree) and, for
# each feature field, the algorithms that model it. The one source of the refusals below and
# of the features' --help (`config.field_help`); the README's "which algorithm models what".
ALGORITHM_NAMES = ("divshare", "swift", "adpsgd", "dpsgd", "epidemic", "local")
SENDS_NOTHING = ("local",)   # a message feature is accepted and does nothing there
_SENDERS = ("divshare", "swift", "adpsgd", "dpsgd", "epidemic")
_ASYNC = ("divshare", "swift", "adpsgd", "local")   # dpsgd, epidemic: rounds of one length
MODELLED_BY = {
    "loss_rate": _SENDERS,
    "loss_file": _SENDERS,
    "churn_rate": ALGORITHM_NAMES,
    "churn_mean_s": ALGORITHM_NAMES,
    "compute_jitter": _ASYNC,
    "trace_file": _ASYNC,
    "download_mbps": ("divshare", "swift", "adpsgd", "dpsgd"),
    "straggler_download_mbps": ("divshare", "swift", "adpsgd", "dpsgd"),
}


def modelled_by(field: str) -> str:
    """'divshare, swift, ...': the algorithms that model the feature `field` (MODELLED_BY)."""
    return ", ".join(MODELLED_BY[field])


def check_config(self) -> None:   # self: a SimConfig (divjax.config)
    """Raise ConfigError for the first field whose type or value is invalid, checked in this
    order: types, sizes, links and loss, compute and churn and latencies, the clock, the
    engine and the optimizer, then what the algorithm needs."""
    check_types(self)
    _check_sizes(self)
    _check_links(self)
    _check_compute(self)
    _check_clock(self)
    _check_engine(self)
    _check_algorithm(self)


def _bad(field, value, fix):
    """Raise the ConfigError that names `field`, its `value` and the `fix`."""
    raise ConfigError(f"{field}={value!r} is invalid: {fix}")


def _check_sizes(self) -> None:
    """The run's sizes: nodes, fragments, fanout, local steps, batch."""
    if self.n_nodes < 2:
        _bad("n_nodes", self.n_nodes, "a decentralized run needs at least 2 nodes")
    if self.n_fragments < 1:
        _bad("n_fragments", self.n_fragments, "use Omega >= 1 (1 = whole model per message)")
    if self.fanout < 0:
        _bad("fanout", self.fanout, "use s >= 0 receivers per fragment")
    if self.fanout > self.n_nodes - 1:
        _bad("fanout", self.fanout, f"s must be at most n_nodes - 1 = {self.n_nodes - 1} "
             "(a node never sends to itself)")
    if self.local_steps < 1:
        _bad("local_steps", self.local_steps, "use at least 1 local step per iteration")
    if self.batch_size < 1:
        _bad("batch_size", self.batch_size, "use a positive batch size")


def _check_links(self) -> None:
    """Times and bandwidths (positive, finite; download limits only where they are modelled),
    stragglers and message loss."""
    for name in ("tick_s", "duration_s", "eval_every_s", "compute_s", "fast_mbps",
                 "straggler_compute_factor"):
        v = getattr(self, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            _bad(name, v, "must be a positive, finite number")
    if not (math.isfinite(self.download_mbps) and self.download_mbps >= 0):
        _bad("download_mbps", self.download_mbps, "use a finite bandwidth > 0, or 0 (unlimited)")
    if any(not (math.isfinite(m) and m >= 0) for m in self.straggler_download_mbps):
        _bad("straggler_download_mbps", self.straggler_download_mbps,
             "every bandwidth must be finite and > 0, or 0 (unlimited)")
    if 1 < len(self.straggler_download_mbps) < self.n_stragglers:
        _bad("straggler_download_mbps", self.straggler_download_mbps,
             f"{len(self.straggler_download_mbps)} bandwidths for n_stragglers="
             f"{self.n_stragglers}: give one per straggler, or one value for all")
    limited = self.download_mbps > 0 or any(m > 0 for m in self.straggler_download_mbps)
    if limited and self.algorithm not in MODELLED_BY["download_mbps"] + SENDS_NOTHING:
        _bad("download_mbps", (self.download_mbps, self.straggler_download_mbps),
             f"download limits are modelled for every algorithm but epidemic (modelled by: "
             f"{modelled_by('download_mbps')}; epidemic's random fan-in changes every round, "
             f"and its rounds have one length): set --download-mbps 0 "
             f"--straggler-download-mbps 0")
    if any(not (m > 0 and math.isfinite(m)) for m in self.straggler_mbps):
        _bad("straggler_mbps", self.straggler_mbps, "every bandwidth must be positive and finite")
    if not 0 <= self.n_stragglers <= self.n_nodes:
        _bad("n_stragglers", self.n_stragglers, f"use 0..n_nodes={self.n_nodes}")
    if not (isinstance(self.loss_rate, int | float) and 0 <= self.loss_rate < 1):
        _bad("loss_rate", self.loss_rate, "use a probability in [0, 1)")
    if self.loss_file and self.loss_rate:
        _bad("loss_file", self.loss_file, "give either --loss-rate (every link) or --loss-file "
             "(per link), not both")


def _check_compute(self) -> None:
    """Compute spread and jitter, churn, a trace, latencies and the numpy seeds."""
    if not (math.isfinite(self.compute_spread) and 0 <= self.compute_spread <= 3):
        _bad("compute_spread", self.compute_spread,
             "use a log-normal sigma in [0, 3] (0 = equal compute times)")
    if not (math.isfinite(self.compute_jitter) and 0 <= self.compute_jitter <= 2):
        _bad("compute_jitter", self.compute_jitter,
             "use a log-normal sigma in [0, 2] (0 = every iteration takes compute_s)")
    if not (math.isfinite(self.churn_rate) and 0 <= self.churn_rate <= 0.9):
        _bad("churn_rate", self.churn_rate, "use an offline fraction in [0, 0.9] (0 = none)")
    if not (math.isfinite(self.churn_mean_s) and self.churn_mean_s > 0):
        _bad("churn_mean_s", self.churn_mean_s, "use a positive, finite number of seconds")
    if self.compute_jitter and self.algorithm not in MODELLED_BY["compute_jitter"]:
        _bad("compute_jitter", self.compute_jitter, f"algorithm={self.algorithm!r} runs "
             "synchronous rounds of one length: use --compute-jitter 0, or an asynchronous "
             f"algorithm ({modelled_by('compute_jitter')})")
    if self.trace_file:
        check_trace_fields(self, _bad)
    if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
        _bad("latency_ms", self.latency_ms, "use a finite latency >= 0")
    for name in ("fragment_seed", "data_seed", "compute_seed"):   # numpy seeds
        if getattr(self, name) < 0:
            _bad(name, getattr(self, name), "use a seed >= 0")
    if not (math.isfinite(self.validation_share) and 0 <= self.validation_share < 1):
        _bad("validation_share", self.validation_share, "use a fraction in [0, 1) of each "
             "node's training samples (0 = no validation split: evaluate on the test set)")
    if not 1 <= self.latency_regions <= self.n_nodes:
        _bad("latency_regions", self.latency_regions, f"use 1..n_nodes={self.n_nodes}")
    if not (math.isfinite(self.inter_region_ms) and self.inter_region_ms >= 0):
        _bad("inter_region_ms", self.inter_region_ms, "use a finite latency >= 0")


def _check_clock(self) -> None:
    """The tick, the eval interval and the duration fit one another in whole numbers."""
    if self.eval_every_s < self.tick_s:
        _bad("eval_every_s", self.eval_every_s, f"must be at least tick_s={self.tick_s}")
    ratio = self.eval_every_s / self.tick_s
    if abs(ratio - round(ratio)) > 1e-6:
        _bad("eval_every_s", self.eval_every_s,
             f"must be a whole number of ticks (tick_s={self.tick_s})")
    chunks = self.duration_s / self.eval_every_s
    if abs(chunks - round(chunks)) > 1e-6:
        _bad("duration_s", self.duration_s,
             f"must be a whole number of eval intervals (eval_every_s={self.eval_every_s})")


def _check_engine(self) -> None:
    """The engine's choices and sizes (delivery, inbox, rings, chunks) and the optimizer."""
    if self.delivery not in ("arrival_tick", "receiver_iteration"):
        _bad("delivery", self.delivery, "use 'arrival_tick' or 'receiver_iteration'")
    if self.inbox not in ("latest", "sum"):
        _bad("inbox", self.inbox, "use 'latest' (the authors' rule) or 'sum'")
    for name in ("inbox_history", "ping_slots", "ring_ticks", "delay_ticks",
                 "iteration_slots"):   # sizes: 0 = auto
        if getattr(self, name) < 0:
            _bad(name, getattr(self, name), "use 0 (auto) or a positive size")
    if self.link_resolution < 1:
        _bad("link_resolution", self.link_resolution, "use a positive number of sub-ticks")
    if not 0 <= self.train_capacity <= self.n_nodes:
        _bad("train_capacity", self.train_capacity, f"use 0 (auto) .. n_nodes={self.n_nodes}")
    if self.train_chunk < 0:
        _bad("train_chunk", self.train_chunk, "use 0 (all at once) or a positive chunk size")
    if self.iteration_chunk < -1:
        _bad("iteration_chunk", self.iteration_chunk,
             "use -1 (auto), 0 (all at once) or a positive chunk size")
    if self.eval_chunk < 1:
        _bad("eval_chunk", self.eval_chunk, "use a positive chunk size")
    if not (math.isfinite(self.lr) and self.lr >= 0):
        _bad("lr", self.lr, "the learning rate must be a finite number >= 0")
    if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
        _bad("momentum", self.momentum, "SGD momentum must be in [0, 1)")
    if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
        _bad("weight_decay", self.weight_decay, "weight decay must be a finite number >= 0")


def _check_algorithm(self) -> None:
    """What the algorithm needs: one bandwidth per straggler, and a fanout that exchanges."""
    if 1 < len(self.straggler_mbps) < self.n_stragglers:
        _bad("straggler_mbps", self.straggler_mbps,
             f"{len(self.straggler_mbps)} bandwidths for n_stragglers={self.n_stragglers}: "
             f"give one bandwidth per straggler, or a single value that every straggler gets "
             f"(values are never cycled)")
    need = FANOUT_NEEDED.get(self.algorithm)
    if need is not None and self.fanout < need[0]:
        _bad("fanout", self.fanout,
             f"algorithm={self.algorithm!r} {need[1]}, so nothing would ever be exchanged: "
             f"use fanout >= {need[0]}, or algorithm='local' (--algorithm local) for a run "
             f"without communication")


def check_trace_fields(self, bad) -> None:
    """A trace (`divjax.network.traces`, read when the engine is built) gives every node's compute
    time: refuse what would draw or scale compute times as well, and the synchronous rounds."""
    import os

    if not os.path.isfile(self.trace_file):
        bad("trace_file", self.trace_file, "no such file: give a CSV trace (format: "
            "divjax/network/traces.py; scripts/make_trace.py writes one)")
    if self.algorithm not in MODELLED_BY["trace_file"]:
        bad("trace_file", self.trace_file, f"algorithm={self.algorithm!r} runs synchronous "
            f"rounds of one length: use an asynchronous algorithm ({modelled_by('trace_file')}) "
            "with a trace")
    for name, flag in (("compute_jitter", "--compute-jitter 0"), ("churn_rate",
                       "--churn-rate 0"), ("compute_spread", "--compute-spread 0")):
        if getattr(self, name):
            bad(name, getattr(self, name), f"a trace (trace_file={self.trace_file!r}) gives "
                f"every node's compute time and availability: use {flag}, or no trace")
    if self.n_stragglers and self.straggler_compute_factor != 1:
        bad("straggler_compute_factor", self.straggler_compute_factor, "a trace gives every "
            "node's compute time: use --straggler-compute-factor 1, or no trace")


def check_types(self) -> None:
    """Every field holds its declared type (an int field refuses 16.5 and "16"); numpy
    scalars become Python ones, so configs stay hashable and JSON-writable."""
    for f in dataclasses.fields(self):
        v, default = getattr(self, f.name), f.default
        if isinstance(default, bool):
            ok = isinstance(v, bool | np.bool_)
            fixed = bool(v) if ok else v
            want = "True or False"
        elif isinstance(default, int):
            ok = isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)
            fixed = int(v) if ok else v
            want = "a whole number"
        elif isinstance(default, float):
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
            fixed = float(v) if ok else v
            want = "a number"
        elif isinstance(default, str):
            ok = isinstance(v, str)
            fixed = v
            want = "a string"
        elif isinstance(default, tuple):
            ok = (isinstance(v, tuple | list | np.ndarray) and len(v) > 0
                  and all(isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)
                          for x in v))
            fixed = tuple(float(x) for x in v) if ok else v
            want = "a non-empty tuple of numbers, e.g. (12.0,)"
        else:
            continue
        if not ok:
            raise ConfigError(f"{f.name}={v!r} is invalid: {f.name} takes {want}, not "
                              f"{type(v).__name__}")
        if fixed is not v:
            object.__setattr__(self, f.name, fixed)


def clock_messages(cfg) -> int:
    """The most messages one link may hold at once in the int32 clock bound of
    `network.clock_fits` (and of a trace's rows, `trace_checks.check_trace_rows`)."""
    return max(1, cfg.messages_per_iteration, cfg.n_nodes * max(1, cfg.fanout // 2))


def check_link_clock(cfg, hp, fragment_bytes) -> None:
    """ConfigError, before anything compiles, when a bandwidth is so low that one message's
    transfer overflows the int32 link clock (the bound `network.clock_fits` checks inside
    the run): names the flags and the smallest bandwidth that fits. cfg a SimConfig, hp its
    HParams (leaves may carry sweep axes), fragment_bytes (K,) the bytes of each fragment."""
    limit = 2.0**30
    R, tick = cfg.link_resolution, cfg.tick_s
    M = clock_messages(cfg)
    biggest = float(np.max(fragment_bytes))
    room = limit - (cfg.num_ticks + 1.0) * R   # uploads share the clock with the run's ticks
    if room <= 0:
        raise ConfigError(f"duration_s={cfg.duration_s:g} is {cfg.num_ticks} ticks of "
                          f"{R} link sub-ticks, too long for the int32 link clock: raise "
                          f"--tick-s, lower --link-resolution or shorten --duration-s")
    links = [("upload_bps", room, "--fast-mbps / --straggler-mbps")]
    if cfg.download_mbps > 0 or any(m > 0 for m in cfg.straggler_download_mbps):
        links.append(("download_bps", limit, "--download-mbps / --straggler-download-mbps"))
    for name, space, flags in links:
        bps = np.asarray(getattr(hp, name), np.float64)
        need = biggest * R * M / (tick * space) if space > 0 else math.inf   # bytes/s
        slow = float(np.min(bps))
        if slow > 0 and math.isfinite(slow) and slow <= need:
            where = f"a trace ({cfg.trace_file}) gives" if cfg.trace_file else "the run has"
            raise ConfigError(
                f"{flags}: {where} a link of {slow * 8 / 1e6:.3g} Mbit/s, too slow for the "
                f"int32 link clock (a {biggest:.0f}-byte message would take "
                f"{biggest / slow:.3g} s): every bandwidth must be above "
                f"{_round_up(need * 8 / 1e6)} Mbit/s here (or raise --tick-s / lower "
                f"--link-resolution)")


def _round_up(x: float) -> str:
    """x rounded up to 3 significant digits, as text."""
    if not (x > 0 and math.isfinite(x)):
        return f"{x:g}"
    e = math.floor(math.log10(x)) - 2
    return f"{math.ceil(x / 10**e * (1 + 1e-9)) * 10**e:.3g}"
