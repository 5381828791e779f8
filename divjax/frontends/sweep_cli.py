"""`divjax sweep`: the command-line plugin (grid parsing, flags) around `divjax.frontends.sweep.sweep`."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from divjax.frontends import sweep_store
from divjax.config import ConfigError, SimConfig
from divjax.plugins import label
from divjax.frontends.sweep import ALIASES, LARGE_COMPILE_S, LARGE_GROUPS, sweep, sweep_plan

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


def grid_from_items(items: list[str]) -> dict:
    """--grid items -> {field: values}; a field given twice is a ConfigError (never one of
    the two kept silently)."""
    grid, given = {}, {}
    for item in items:
        name, values = parse_grid_item(item)
        if name in grid:
            raise ConfigError(f"--grid {name} is given twice ({given[name]!r} and {item!r}): "
                              f"give all its values in one --grid {name}=V1,V2,...")
        grid[name], given[name] = values, item
    return grid


def add_parser(subparsers) -> None:
    from divjax.frontends import presets
    from divjax.frontends.flags import add_config_flags

    p = subparsers.add_parser(
        "sweep", help="run a grid of hyperparameters x seeds as one vmapped program",
        description="Shape-preserving fields (lr, momentum, weight_decay, straggler_mbps, "
                    "latency_ms, n_stragglers, straggler_share, ...) are vmapped with the seeds; "
                    "other fields (n_nodes, n_fragments, fanout, task, ...) loop in Python, one "
                    "compilation per combination (a group). Finished chunks of points are "
                    "written to OUT/points/ as they finish; --resume OUT continues a stopped "
                    "sweep.")
    p.add_argument("--preset", default=None,
                   help=f"named configuration (default: {presets.DEFAULT_PRESET})")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a swept field (repeatable, once per field); also log:LO:HI:K and "
                        "lin:LO:HI:K")
    p.add_argument("--seeds", type=int, default=None, help="seeds per config (default: 4)")
    p.add_argument("--base-seed", type=int, default=None, help="(default: 0)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="points (config x seed) per compiled call; 0 (default) = as many as "
                        "fit (on a CPU: about 256 MB of state, at least one seed's configs)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: a new runs/<date>-<time>-sweep-...[-N]); "
                        "refused if it already holds results, see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace the results divjax wrote there (only files listed "
                        "in its .divjax-manifest.json)")
    p.add_argument("--resume", type=Path, default=None, metavar="SWEEP_DIR",
                   help="finish the sweep stopped in SWEEP_DIR: its recorded grid, config and "
                        "seeds (flags given must match them); finished points are not rerun")
    p.add_argument("--yes", action="store_true",
                   help=f"start a large sweep (over {LARGE_GROUPS} groups, i.e. compilations, "
                        f"or roughly {LARGE_COMPILE_S // 60} min of compiling) without asking")
    add_config_flags(p)
    p.set_defaults(handler=cmd_sweep)


def _resumed(args) -> tuple[SimConfig, dict, int, int, int | None]:
    """(cfg, grid, seeds, base_seed, chunk_size) recorded in --resume DIR; flags given on the
    command line must agree with them (ConfigError naming each difference)."""
    from divjax.frontends.flags import config_from_args

    if args.out is not None or args.overwrite:
        raise ConfigError("--resume SWEEP_DIR writes into SWEEP_DIR and keeps its results: drop "
                          "--out and --overwrite")
    saved = sweep_store.read_record(args.resume)
    cfg = sweep_store.config_of(saved)
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    if args.preset is not None:
        cfg_now = config_from_args(args)
    else:
        cfg_now = cfg.replace(**{k: v for k, v in vars(args).items() if k in fields})
    grid = grid_from_items(args.grid) if args.grid else saved["grid"]
    seeds = saved["seeds"] if args.seeds is None else args.seeds
    base = saved["base_seed"] if args.base_seed is None else args.base_seed
    chunk = saved["chunk_size"] if args.chunk_size is None else (args.chunk_size or None)
    diff = sweep_store.record_difference(
        saved, sweep_store.sweep_record(cfg_now, grid, seeds, base, chunk))
    if diff:
        raise ConfigError(f"--resume {args.resume}: the flags differ from the sweep recorded "
                          f"there ({'; '.join(diff)}): give no flags but --resume, or start a "
                          f"new sweep with another --out")
    return cfg, saved["grid"], seeds, base, chunk


def cmd_sweep(args) -> int:
    from divjax.frontends import outdir, presets
    from divjax.frontends.flags import config_from_args, prepare_out

    if args.resume is not None:
        cfg, grid, seeds, base_seed, chunk = _resumed(args)
    else:
        args.preset = args.preset or presets.DEFAULT_PRESET
        cfg = config_from_args(args)
        grid = grid_from_items(args.grid)
        seeds = 4 if args.seeds is None else args.seeds
        base_seed = 0 if args.base_seed is None else args.base_seed
        chunk = args.chunk_size or None
    plan = sweep_plan(grid, seeds)
    print(f"divjax sweep: {plan['text']}", flush=True)
    if plan["large"] and not args.yes and args.resume is None:
        raise ConfigError(f"this sweep is large ({plan['groups']} groups, each compiled once: "
                          f"roughly {plan['compile_s'] / 60:.0f} min of compiling before any "
                          f"run time): add --yes to start it, or sweep fewer shape-changing "
                          f"values (n_nodes, n_fragments, fanout, task, ...)")
    if args.resume is not None:
        out = prepare_out(args.resume, "", writes=outdir.SWEEP_OUTPUTS, resume=True)
    else:
        out = prepare_out(args.out, time.strftime(f"%Y%m%d-%H%M%S-sweep-{label(cfg.algorithm)}-"
                                                  f"{label(cfg.task)}"), args.overwrite,
                          writes=outdir.SWEEP_OUTPUTS)
    tty = sys.stdout.isatty()

    lead = "\r" if tty else ""

    def progress(done, total):
        print(f"{lead}divjax sweep: {done}/{total} points", end="" if tty else "\n", flush=True)

    res = sweep(cfg, grid, seeds=seeds, base_seed=base_seed, chunk_size=chunk, out=out,
                progress=progress, verbose=True, resume=args.resume is not None)
    if tty:
        print()
    print((out / "summary.md").read_text())
    print(f"divjax: wrote {res.out}/ (config.json, metrics.csv, metrics.jsonl, summary.json, "
          f"summary.md, plot.png, points/)")
    if res.summary["diverged_configs"]:
        print(f"divjax sweep: {len(res.summary['diverged_configs'])} config(s) diverged (see "
              f"summary.md)", file=sys.stderr)
    return 0
