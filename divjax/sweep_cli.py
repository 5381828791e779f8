"""`divjax sweep`: the command-line plugin (grid parsing, flags) around `divjax.sweep.sweep`."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from divjax.config import ConfigError, SimConfig
from divjax.sweep import ALIASES, split_grid, sweep

# ----------------------------------------------------------------------------- CLI plugin


def parse_grid_item(text: str) -> tuple[str, list]:
    """'lr=0.01,0.05' -> ('lr', [0.01, 0.05]); values typed by the SimConfig field.

    straggler_mbps takes one bandwidth per value (every straggler gets it);
    ranges: 'lr=log:0.001:0.1:5' (5 log-spaced values), 'lr=lin:0:1:3'.
    Anything that does not parse is a ConfigError naming the item and the expected form."""
    if "=" not in text:
        raise ConfigError(f"--grid {text!r} is invalid: use FIELD=v1,v2,...")
    name, vals = text.split("=", 1)
    name = name.strip().replace("-", "_")
    fields = {f.name: f for f in dataclasses.fields(SimConfig)}
    if name not in fields and name not in ALIASES:
        raise ConfigError(f"--grid field {name!r} is not a SimConfig field: choose from "
                          f"{sorted(set(fields) | set(ALIASES))}")
    numeric = name in ALIASES or name == "straggler_mbps" or (
        not isinstance(fields[name].default, bool | str))
    if vals.strip().startswith(("log:", "lin:")):
        try:
            kind, a, b, k = vals.strip().split(":")
            lo, hi, count = float(a), float(b), int(k)
            if count < 1 or not (math.isfinite(lo) and math.isfinite(hi)) or (
                    kind == "log" and (lo <= 0 or hi <= 0)):
                raise ValueError
        except ValueError:
            raise ConfigError(f"--grid {text!r} is invalid: a range is log:LO:HI:K or "
                              f"lin:LO:HI:K with numbers LO, HI (positive for log) and a whole "
                              f"K >= 1") from None
        space = np.geomspace if kind == "log" else np.linspace
        raw = [float(f"{x:.6g}") for x in space(lo, hi, count)]
    else:
        raw = [v.strip() for v in vals.split(",") if v.strip()]
    if not raw:
        raise ConfigError(f"--grid {text!r} has no values: use FIELD=v1,v2,...")
    default = None if name in ALIASES or name == "straggler_mbps" else fields[name].default
    if isinstance(default, bool):
        conv, want = _parse_bool, "true or false"
    elif isinstance(default, int):
        conv, want = _parse_int, "a whole number"
    elif isinstance(default, str):
        conv, want = str, "text"
    else:
        conv, want = float, "a number"
    out = []
    for v in raw:
        try:
            x = conv(v)
        except ValueError:
            raise ConfigError(f"--grid {text!r}: {v!r} is not {want}; {name} takes {want} "
                              f"(FIELD=v1,v2,... or log:LO:HI:K)") from None
        if numeric and not math.isfinite(float(x)):
            raise ConfigError(f"--grid {text!r}: {v!r} is not a finite number")
        out.append(x)
    return name, out


def _parse_int(v) -> int:
    x = float(v)
    if not (math.isfinite(x) and x == int(x)):
        raise ValueError(v)
    return int(x)


def _parse_bool(v) -> bool:
    low = str(v).lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise ValueError(v)


def add_parser(subparsers) -> None:
    from divjax import presets
    from divjax.flags import add_config_flags

    p = subparsers.add_parser(
        "sweep", help="run a grid of hyperparameters x seeds as one vmapped program",
        description="Shape-preserving fields (lr, momentum, weight_decay, straggler_mbps, "
                    "latency_ms, n_stragglers, straggler_share, ...) are vmapped with the seeds; "
                    "other fields (n_nodes, n_fragments, fanout, task, ...) loop in Python.")
    p.add_argument("--preset", default=presets.DEFAULT_PRESET)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a swept field (repeatable); also log:LO:HI:K and lin:LO:HI:K")
    p.add_argument("--seeds", type=int, default=4, help="seeds per config")
    p.add_argument("--base-seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=0,
                   help="points (config x seed) per compiled call; 0 = as many as fit (on a "
                        "CPU: about 256 MB of state, at least one seed's configs)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: a new runs/<date>-<time>-sweep-...[-N]); "
                        "refused if it already holds results, see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace the results already there")
    add_config_flags(p)
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args) -> int:
    from divjax.flags import config_from_args, prepare_out

    cfg = config_from_args(args)
    grid = dict(parse_grid_item(g) for g in args.grid)
    split_grid(grid)
    out = prepare_out(args.out, time.strftime(f"%Y%m%d-%H%M%S-sweep-{cfg.algorithm}-"
                                              f"{cfg.task}"), args.overwrite)
    tty = sys.stdout.isatty()

    lead = "\r" if tty else ""

    def progress(done, total):
        print(f"{lead}divjax sweep: {done}/{total} points", end="" if tty else "\n", flush=True)

    res = sweep(cfg, grid, seeds=args.seeds, base_seed=args.base_seed,
                chunk_size=args.chunk_size or None, out=out, progress=progress, verbose=True)
    if tty:
        print()
    print((out / "summary.md").read_text())
    print(f"divjax: wrote {res.out}/ (config.json, metrics.csv, metrics.jsonl, summary.json, "
          f"summary.md, plot.png)")
    if res.summary["diverged_configs"]:
        print(f"divjax sweep: {len(res.summary['diverged_configs'])} config(s) diverged (see "
              f"summary.md)", file=sys.stderr)
    return 0
