"""Command-line pieces every subcommand shares: one flag per SimConfig field, the config those
flags give, and the output directory, created before anything is computed.

Used by `divjax run` (`divjax.cli`), `divjax compare` and `divjax sweep`; this module imports
neither of them, so the subcommands need not import the command line that lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

from divjax import outdir, presets
from divjax.config import ConfigError, SimConfig, field_help
from divjax.outdir import KNOWN


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
    base = presets.get_preset(args.preset)
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields}
    return dataclasses.replace(base, **overrides)
