"""`scripts/reproduction_grid.py`'s command line: run / resume parts of the grid, then regenerate
the document."""

from __future__ import annotations

import argparse
import json
import datetime
import time
from pathlib import Path

from divjax.reproduction import grid
from divjax.reproduction.cells import cell_path, git_commit, load_cells, run_group
from divjax.reproduction.configs import ALL_PARTS, ROOT
from divjax.reproduction.doc import write_doc
from divjax.reproduction.text import claims
from divjax.reproduction.tuning import has_validation_share

DESCRIPTION = "The DivShare reproduction as a seeded, per-cell, resumable grid (issue 19)."


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=DESCRIPTION)
    ap.add_argument("--scale", choices=("cpu", "paper", "tiny"), default="cpu")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--parts", default=",".join(ALL_PARTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reproduction")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "reproduction.md")
    ap.add_argument("--doc-only", action="store_true", help="regenerate the document only")
    ap.add_argument("--algos", default="", help="only these algorithms (comma-separated)")
    ap.add_argument("--deadline", default="", help="UTC HH:MM: start no new group after it")
    ap.add_argument("--rerun-dirty", action="store_true",
                    help="delete the cells made with uncommitted engine edits (git.engine_dirty) "
                         "and rerun just those (run it from a clean checkout)")
    ap.add_argument("--with-algorithm", action="append", default=[], metavar="NAME=SPEC",
                    help="also run your own algorithm (SPEC: MODULE:ATTR or PATH.py:ATTR, as in "
                         "`divjax run --algorithm`) wherever the parts run DivShare, as cells "
                         "named NAME (repeatable)")
    return ap.parse_args(argv)


def plugin_algorithms(pairs: list[str], out: Path) -> dict[str, str]:
    """--with-algorithm NAME=SPEC values -> {NAME: SPEC}; SystemExit naming a bad one. Each
    spec is imported here, so a path that does not import fails before anything runs, and a
    NAME whose cells in `out` were made by another spec or another version of its source is
    refused (the skipped old cells and the new ones would mix two algorithms under one name)."""
    import re

    from divjax import plugins
    from divjax.algorithms import ALGORITHMS

    found: dict[str, str] = {}
    for pair in pairs:
        name, _, spec = pair.partition("=")
        if not (re.fullmatch(r"[a-z][a-z0-9_]*", name) and plugins.is_plugin(spec)):
            raise SystemExit(f"--with-algorithm {pair!r}: give NAME=MODULE:ATTR or "
                             f"NAME=PATH.py:ATTR, NAME in lower case letters, digits and _")
        if name in ALGORITHMS or name in found:
            raise SystemExit(f"--with-algorithm {pair!r}: the name {name!r} is taken (a "
                             f"built-in algorithm or given twice): choose another")
        plugins.load(spec, "algorithm")   # ConfigError now if it does not import
        now = plugins.source_record(spec, "algorithm")
        for cell in sorted(Path(out).glob(f"cells/*/*/{name}-seed*.json")):
            was = json.loads(cell.read_text()).get("plugin", {}).get("algorithm", {})
            if (was.get("spec"), was.get("sha256")) != (spec, now["sha256"]):
                raise SystemExit(f"--with-algorithm {pair!r}: {cell} was made by "
                                 f"{was.get('spec')!r} (sha256 {str(was.get('sha256'))[:12]}), "
                                 f"not this source: use another NAME, or delete its cells")
        found[name] = spec
    return found


def dirty_groups(args, seeds: tuple, log) -> list:
    """The groups holding a cell made with uncommitted engine edits; those cells are deleted
    (the other cells of the groups exist, so only the deleted ones run again)."""
    dirty = {(c["task"], c["regime"], c["algorithm"], c["seed"])
             for c in load_cells(args.out) if c["git"]["engine_dirty"]}
    groups = [g for g in grid.build_groups(list(ALL_PARTS), args.scale, args.data_dir, seeds)
              if any((g.task, r, g.algo, s) in dirty for r in g.regimes for s in g.seeds)]
    found = {(g.task, r, g.algo, s) for g in groups for r in g.regimes for s in g.seeds}
    if dirty - found:
        raise SystemExit(f"--rerun-dirty: no group of the grid holds {sorted(dirty - found)}")
    if git_commit()["engine_dirty"]:
        raise SystemExit("--rerun-dirty: the engine (divjax/) has uncommitted edits; commit or "
                         "stash them first, or the new cells are dirty too")
    for t, r, a, s in sorted(dirty):
        cell_path(args.out, t, r, a, s).unlink()
        log(f"deleted {t}/{r}/{a}-seed{s} (made with uncommitted engine edits)")
    return groups


def run_groups(groups: list, args, parts: list, seeds: tuple, log) -> None:
    """Run the missing cells of `groups` in order, regenerating the document after each."""
    t0 = time.perf_counter()
    total = sum(len(g.regimes) * len(g.seeds) for g in groups)
    done = sum(cell_path(args.out, g.task, r, g.algo, s).exists()
               for g in groups for r in g.regimes for s in g.seeds)
    log(f"grid: {total} cells in {len(groups)} groups, {done} already there")
    for g in groups:
        if args.deadline:
            now = datetime.datetime.now(datetime.UTC).strftime("%H:%M")
            if now >= args.deadline:
                log(f"deadline {args.deadline} UTC passed: no new groups")
                break
        try:
            done += run_group(g, args.out, log)
        except Exception as e:   # e.g. out of memory: the cells stay missing, go on
            log(f"    FAILED {g.task} {g.algo} {g.regimes}: {type(e).__name__}: "
                f"{str(e).splitlines()[0][:300]}")
        log(f"    progress: {done}/{total} cells, {time.perf_counter() - t0:.0f} s")
        write_doc(args.out, args.doc, args.scale, args.data_dir, parts, seeds)


def main(argv=None) -> dict:
    args = parse(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    seeds = tuple(range(args.seeds))
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.rerun_dirty:
        run_groups(dirty_groups(args, seeds, log), args, parts, seeds, log)
    elif not args.doc_only:
        if "tune" in parts and args.scale != "tiny" and not has_validation_share():
            raise SystemExit("--parts tune needs SimConfig.validation_share (branch "
                             "h/validation): without it the rates would be chosen on the test set")
        groups = grid.with_plugins(grid.build_groups(parts, args.scale, args.data_dir, seeds),
                                   plugin_algorithms(args.with_algorithm, args.out))
        if args.algos:
            groups = [g for g in groups if g.algo in args.algos.split(",")]
        run_groups(groups, args, parts, seeds, log)
    res = write_doc(args.out, args.doc, args.scale, args.data_dir, parts, seeds)
    for row in claims(res, args.scale, "")[:]:
        log(f"  {row[0]}: {row[2]} -> {row[3]}; size {row[4]}")
    log(f"wrote {args.doc}; {res['cells']} cells, {len(res['missing'])} missing")
    return res
