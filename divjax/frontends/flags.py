"""Command-line pieces every subcommand shares: one flag per SimConfig field, the config those
flags give, and the output directory, created before anything is computed.

Used by `divjax run` (`divjax.frontends.cli`), `divjax compare` and `divjax sweep`; this module imports
neither of them, so the subcommands need not import the command line that lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

from divjax.frontends import outdir, presets
from divjax.config import ConfigError, SimConfig, field_help
from divjax.frontends.outdir import KNOWN


def _parse_tuple(text: str) -> tuple:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers (e.g. 12,12,13)") from None


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{x:g}" for x in value)
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return f"{value:g}" if isinstance(value, float) else str(value)


# Extra spellings of some fields' flags.
FLAG_ALIASES = {"trace_file": ("--trace",)}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One --flag per SimConfig field; unset flags keep the preset's value.

    Each flag's help is the field's documentation in divjax/config.py (`config.field_help`),
    with the value the default preset gives it."""
    help_of = field_help()
    try:
        base = presets.get_preset(presets.DEFAULT_PRESET)
    except ConfigError:
        base = SimConfig()
    group = parser.add_argument_group(
        "configuration (override the preset)",
        f"Defaults are those of the default preset {presets.DEFAULT_PRESET}; --preset changes "
        f"them. Times are simulated seconds.")
    for f in dataclasses.fields(SimConfig):
        flags = ("--" + f.name.replace("_", "-"),) + FLAG_ALIASES.get(f.name, ())
        default = f.default
        text = (help_of.get(f.name, "") + f" (default: {_show(getattr(base, f.name))})")
        text = text.replace("%", "%%")
        if isinstance(default, bool):
            group.add_argument(*flags, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        elif isinstance(default, tuple):
            group.add_argument(*flags, type=_parse_tuple, default=argparse.SUPPRESS,
                               metavar="X[,X...]", help=text + "; comma-separated")
        else:
            group.add_argument(*flags, type=type(default), default=argparse.SUPPRESS,
                               metavar="TEXT" if isinstance(default, str) else None, help=text)


# Files and folders divjax may write into a run, sweep or compare directory (outdir.KNOWN).
RESULT_FILES = tuple(sorted(KNOWN))


def prepare_out(out: Path | None, default_name: str, overwrite: bool = False,
                writes: tuple = RESULT_FILES, resume: bool = False,
                adopt: bool = False) -> Path:
    """Create and claim (return) the output directory of a command before anything is computed.

    Without `out`: runs/<default_name>, or -2, -3, ... when that exists (each name claimed with
    an atomic mkdir, so two runs started in the same second never share a directory). With
    `out`: `outdir.claim` (an exclusive lock on OUT/.divjax-lock, so a second run into it is
    refused while the first runs; results divjax recorded there refused unless `overwrite`,
    which removes exactly those; files of `writes` that divjax did not write never replaced).
    The claim ends with the command (`cli.main` releases it). A path that cannot be created is
    a ConfigError. `resume` (`--resume DIR`): DIR is claimed without refusing its results;
    `adopt` records the `writes` an older divjax left there without a manifest."""
    try:
        if out is None:
            base = Path("runs") / default_name
            base.parent.mkdir(parents=True, exist_ok=True)
            for i in itertools.count(1):
                cand = base if i == 1 else base.with_name(f"{base.name}-{i}")
                try:
                    cand.mkdir()
                except FileExistsError:
                    continue
                return outdir.claim(cand, writes)
        return outdir.claim(Path(out), writes, overwrite=overwrite, resume=resume, adopt=adopt)
    except OSError as e:
        raise ConfigError(f"--out {out if out is not None else Path('runs') / default_name}: "
                          f"cannot write there ({e.strerror or e}): choose a writable "
                          f"directory") from e


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The preset's config with the flags given; flags that the result would silently ignore
    are refused (`check_flag_combinations`)."""
    base = presets.get_preset(args.preset)
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    cfg = dataclasses.replace(base, **overrides)
    swept = {g.split("=", 1)[0].strip().replace("-", "_") for g in getattr(args, "grid", [])}
    if getattr(args, "algorithms", None):   # divjax compare: several algorithms
        swept.add("algorithm")
    check_flag_combinations(cfg, set(overrides), swept)
    return cfg


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_flag_combinations(cfg: SimConfig, given: set, swept: set = frozenset()) -> None:
    """ConfigError for a flag in `given` (SimConfig field names set on the command line) or a
    field in `swept` (a sweep's --grid; compare's algorithms) whose value the run would drop
    without a word: straggler values beyond the stragglers, region latencies without regions,
    regions next to a latency file, flags nothing reads (UNUSED_UNLESS, GRID_UNUSED_UNLESS),
    flags a trace replaces; and a run that ends before any iteration. What a swept field
    decides is not judged from the base config."""
    if not swept & {"n_stragglers", "straggler_share"}:
        _check_straggler_counts(cfg, given)
    _check_unused(cfg, given, swept)
    if cfg.trace_file:
        _check_trace_overrides(cfg, given - swept)
    elif not (cfg.compute_spread or cfg.compute_jitter) and not swept & {   # drawn times may
            "duration_s", "compute_s", "n_stragglers", "straggler_compute_factor",   # be shorter
            "compute_spread", "compute_jitter", "straggler_share"}:
        _check_someone_finishes(cfg)
    if "latency_regions" in swept or "latency_file" in swept:
        return
    if cfg.latency_file and cfg.latency_regions > 1:
        raise ConfigError(
            f"--latency-file {cfg.latency_file} gives every pair's latency and replaces the "
            f"regions, but --latency-regions is {cfg.latency_regions}"
            f"{'' if 'latency_regions' in given else ' (from the preset)'}: add "
            f"--latency-regions 1 --inter-region-ms 0, or drop --latency-file")
    if ("inter_region_ms" in given and cfg.inter_region_ms > 0 and cfg.latency_regions == 1
            and "inter_region_ms" not in swept):
        fix = ("--latency-file replaces it: drop --inter-region-ms" if cfg.latency_file else
               "add --latency-regions G (G >= 2 regions), or drop --inter-region-ms")
        raise ConfigError(f"--inter-region-ms {cfg.inter_region_ms:g} is the latency between "
                          f"regions, but --latency-regions is 1 (no regions): {fix}")


# field -> (the fields that make it matter, whether they are on, the fix): a flag given (or a
# field swept) while they are off changes nothing.
UNUSED_UNLESS = {
    "momentum": (("momentum_buffer",), lambda c: c.momentum_buffer,
                 "add --momentum-buffer (without it the optimizer is plain SGD)"),
    "compute_seed": (("compute_spread",), lambda c: c.compute_spread > 0,
                     "it seeds --compute-spread's draws: add --compute-spread S"),
    "churn_mean_s": (("churn_rate",), lambda c: c.churn_rate > 0,
                     "it is churn's mean offline time: add --churn-rate R"),
    "inbox_history": (("algorithm",), lambda c: c.algorithm == "adpsgd",
                      "it sizes AD-PSGD's snapshots: use --algorithm adpsgd"),
    "ping_slots": (("algorithm",), lambda c: c.algorithm == "adpsgd",
                   "it sizes AD-PSGD's ping table: use --algorithm adpsgd"),
    "inbox": (("algorithm",), lambda c: c.algorithm not in ("dpsgd", "epidemic"),
              "only DivShare, Swift and AD-PSGD keep inboxes (D-PSGD and Epidemic average what "
              "their round received): use one of them"),
    # (local accepts what only senders read, like --loss-rate: a baseline keeps the flags)
    "fanout": (("algorithm",), lambda c: c.algorithm != "dpsgd",
               "D-PSGD averages with all its --topology neighbours: change --topology"),
    "data_dir": (("task",), lambda c: c.task.startswith(("cifar10", "movielens"))
                 and c.task != "movielens-synthetic",
                 "this --task generates its data: use a cifar10 or movielens task"),
}


# The same for a --grid over these fields (given as flags, they have their own checks above).
_STRAGGLERS = (("n_stragglers", "straggler_share"), lambda c: c.n_stragglers > 0,
               "only the stragglers read it: add --n-stragglers N")
GRID_UNUSED_UNLESS = {
    "straggler_mbps": _STRAGGLERS, "straggler_download_mbps": _STRAGGLERS,
    "straggler_compute_factor": _STRAGGLERS,
    "inter_region_ms": (("latency_regions", "latency_file"), lambda c: c.latency_regions > 1,
                        "it is the latency between regions: add --latency-regions G (G >= 2)"),
}


def _check_unused(cfg: SimConfig, given: set, swept: set) -> None:
    """A flag given with a non-default value, or a field swept by --grid, that this config
    never reads."""
    defaults = {f.name: f.default for f in dataclasses.fields(SimConfig)}
    for name, (needs, on, fix) in [*UNUSED_UNLESS.items(), *GRID_UNUSED_UNLESS.items()]:
        if swept & set(needs) or on(cfg):
            continue
        if name in swept:
            raise ConfigError(f"--grid {name}=... would change nothing here: {fix}, or drop it")
        if name in given and name in UNUSED_UNLESS and getattr(cfg, name) != defaults[name]:
            raise ConfigError(f"{_flag(name)} {_show(getattr(cfg, name))} would change nothing "
                              f"here: {fix}, or drop it")


def _check_someone_finishes(cfg: SimConfig) -> None:
    """A run that ends before any node finishes an iteration sends nothing and trains nothing
    that is ever evaluated as learning: refuse it."""
    times = [cfg.compute_s] if cfg.n_stragglers < cfg.n_nodes else []
    if cfg.n_stragglers:
        times.append(cfg.compute_s * cfg.straggler_compute_factor)
    if min(times) > cfg.duration_s:
        raise ConfigError(f"--duration-s {cfg.duration_s:g} ends before any node finishes its "
                          f"first iteration ({min(times):g} s: --compute-s "
                          f"{cfg.compute_s:g}): raise --duration-s or lower --compute-s")


def _trace_columns(path: str) -> list[str]:
    """The column names of a trace's header line ([] if it cannot be read: the trace's own
    checks say why, later)."""
    try:
        with open(path) as f:
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    return [c.strip() for c in line.split(",")]
    except OSError:
        pass
    return []


def _check_trace_overrides(cfg: SimConfig, given: set) -> None:
    """Flags whose values a trace replaces (divjax/network/traces.py): every node's compute time, and
    the uploads when it has an upload_mbps column."""
    replaced = ["compute_s"]
    if "upload_mbps" in _trace_columns(cfg.trace_file):
        replaced += ["fast_mbps", "straggler_mbps"]
    hit = [_flag(k) for k in replaced if k in given]
    if hit:
        raise ConfigError(f"--trace {cfg.trace_file} gives every node's "
                          f"{'compute time and upload' if len(replaced) > 1 else 'compute time'}"
                          f", so {' '.join(hit)} would change nothing: drop "
                          f"{'them' if len(hit) > 1 else 'it'}, or edit the trace")


def _check_straggler_counts(cfg: SimConfig, given: set) -> None:
    """Straggler flags given with more values than stragglers, or with no stragglers at all."""
    k = cfg.n_stragglers
    for name in ("straggler_mbps", "straggler_download_mbps"):
        values = getattr(cfg, name)
        if name not in given or (name == "straggler_download_mbps" and not any(values)):
            continue
        if k == 0:
            raise ConfigError(f"{_flag(name)} {_show(values)} is unused: --n-stragglers is 0 "
                              f"(no stragglers): add --n-stragglers N, or drop {_flag(name)}")
        if len(values) > 1 and len(values) != k:
            raise ConfigError(
                f"{_flag(name)} has {len(values)} values but --n-stragglers is {k}: give one "
                f"value per straggler ({k}), or a single value that every straggler gets")
    if "straggler_compute_factor" in given and cfg.straggler_compute_factor != 1 and k == 0:
        raise ConfigError(f"--straggler-compute-factor {cfg.straggler_compute_factor:g} is "
                          f"unused: --n-stragglers is 0 (no stragglers): add --n-stragglers N")
