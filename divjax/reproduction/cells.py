"""Running a group and writing its cells: one JSON per (task, regime, algorithm, seed), written
atomically and skipped when it exists; reading them back."""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from divjax.reproduction.configs import ROOT, Group


def cell_path(out: Path, task: str, regime: str, algo: str, seed: int) -> Path:
    return out / "cells" / task / regime / f"{algo}-seed{seed}.json"


# The engine's files: divjax/ without this package (a document edit is not an engine edit)
ENGINE_PATHSPEC = ("divjax", ":(exclude)divjax/reproduction")


def git(*a) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True,
                          text=True).stdout.strip()


def git_commit() -> dict:
    """The checkout's commit and whether the engine's files have uncommitted edits."""
    return {"commit": git("rev-parse", "HEAD"),
            "engine_dirty": bool(git("status", "--porcelain", "--", *ENGINE_PATHSPEC))}


def engine_tree(commit: str) -> str:
    """The git tree hash of `divjax/` at `commit` without `divjax/reproduction` (10 hex digits):
    for a commit made before the package existed, exactly `git rev-parse commit:divjax`; equal
    between two commits when their engines are equal, whatever the grid's code did."""
    import hashlib

    rows = git("ls-tree", "-z", f"{commit}:divjax").split("\0")
    body = b""
    for row in filter(None, rows):
        meta, name = row.split("\t", 1)
        mode, _, sha = meta.split(" ")
        if name == "reproduction":
            continue
        body += mode.lstrip("0").encode() + b" " + name.encode() + b"\0" + bytes.fromhex(sha)
    if not body:
        return ""
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()[:10]


CURVE_KEYS = ("time_s", "consensus", "bytes_sent", "msgs_sent", "msgs_delivered",
              "msgs_dropped", "msgs_replaced", "msgs_lost", "iterations_mean", "errors")


def run_group(g: Group, out: Path, log) -> int:
    """Run the missing cells of one group (all its missing points x seeds in one vmapped
    program); write one JSON per missing cell. Returns the number of cells written."""
    import jax

    from divjax.algorithms import make_algorithm
    from divjax.plugins import plugin_record
    from divjax.tasks.registry import make_task
    from divjax.engine.sim import make_run
    from divjax.engine.state import ERR_NONFINITE
    from divjax.frontends.sweep import (
        auto_chunk,
        config_values,
        hparams_for,
        resolve_grid,
        run_points,
        stack_hparams,
    )
    from divjax.engine.xla_options import program_options

    missing = [(i, s) for i, r in enumerate(g.regimes) for s in g.seeds
               if not cell_path(out, g.task, r, g.algo, s).exists()]
    if not missing:
        return 0
    pts = sorted({i for i, _ in missing})
    seeds = sorted({s for _, s in missing})
    hps = [hparams_for(g.cfg, g.points[i]) for i in pts]
    task = make_task(g.cfg)
    algo = make_algorithm(g.cfg)   # g.cfg.algorithm: a built-in name or a plug-in's spec
    cfg_r = resolve_grid(g.cfg, hps, task, algo)
    run = make_run(cfg_r, task, algo)
    hp, axes = stack_hparams(hps)
    keys = jax.numpy.stack([jax.random.key(s) for s in seeds])
    B = g.chunk or auto_chunk(run.engine, len(pts) * len(seeds), configs=len(pts))
    log(f"[{g.part}] {g.task} {g.algo}: {len(pts)} regime point(s) "
        f"({', '.join(g.regimes[i] for i in pts)}) x seeds {seeds} ...")
    t0 = time.perf_counter()
    status: dict = {}
    metrics, timing = run_points(run, run.engine.cfg, keys, hp, axes, B, status=status)
    wall = time.perf_counter() - t0
    primary = task.primary
    commit = git_commit()
    written = 0
    for h, i in enumerate(pts):
        cfg_i = g.cfg.replace(**config_values(g.cfg, g.points[i]))
        for j, s in enumerate(seeds):
            path = cell_path(out, g.task, g.regimes[i], g.algo, s)
            if path.exists():
                continue
            diverged = bool(status["errors"][h, j] & ERR_NONFINITE)
            curve = {k: np.asarray(v[h, j]).round(6).tolist() for k, v in metrics.items()
                     if k in CURVE_KEYS or k.endswith(("_mean", "_avgmodel", "_min", "_max"))}
            cell = {
                "task": g.task, "regime": g.regimes[i], "algorithm": g.algo, "seed": s,
                "seed_key": f"jax.random.key({s})", "part": g.part, "primary": primary,
                "higher_is_better": bool(task.higher_is_better),
                "point": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in g.points[i].items()},
                "config": dataclasses.asdict(cfg_i),
                "resolved": {k: getattr(run.engine.cfg, k) for k in
                             ("ring_ticks", "delay_ticks", "train_capacity")},
                "curve": curve,
                "diverged": diverged,
                "diverged_at_s": (float(status["first_error_tick"][h, j] * cfg_r.tick_s)
                                  if diverged else None),
                "wall_s_shared": wall, "cells_in_call": len(pts) * len(seeds),
                "compile_s": timing["compile_s"],
                "git": commit, "jax": jax.__version__,
                "xla_compiler_options": program_options(run),
                "device": jax.devices()[0].device_kind,
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
            if plugin_record(g.cfg):   # a plug-in's file and sha256: what code made the cell
                cell["plugin"] = plugin_record(g.cfg)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cell, default=str))
            tmp.replace(path)    # atomic: a killed run never leaves half a cell
            written += 1
    log(f"    {written} cell(s) in {wall:.0f} s wall (compile {timing['compile_s']:.0f} s); "
        f"final {primary}: " + ", ".join(
            f"{g.regimes[i]}/seed{s}={metrics[primary + '_mean'][h, j, -1]:.4g}"
            for h, i in enumerate(pts) for j, s in enumerate(seeds)))
    return written


def load_cells(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/*/*.json"))]


def index(cells: list[dict]) -> dict:
    """(task, regime, algorithm) -> {seed: cell}."""
    idx: dict = {}
    for c in cells:
        idx.setdefault((c["task"], c["regime"], c["algorithm"]), {})[c["seed"]] = c
    return idx
