"""A sweep's finished points on disk, written as they finish, so a stopped sweep resumes.

    OUT/config.json                 the sweep's recorded arguments (`sweep_record`: the config,
                                    the grid, seeds, base seed, chunk size) from its start
    OUT/points/g0003.json           group 3: its static values, resolved config, primary metric
                                    and chunk geometry (written before its first chunk runs),
                                    then its timings (when its last chunk is done)
    OUT/points/g0003-b0001-0000.json  one finished chunk of group 3 (config block 1, seed block
                                    0): every metric of its configs x seeds, and error flags

Each file is written atomically (`outdir.write_output`: a temporary file, then os.replace), so a
sweep killed at any moment leaves whole chunks or none. `divjax sweep --resume OUT` reruns only
the chunks without a file, with the same chunk geometry, so its rows equal an uninterrupted
sweep's. Host-side only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from divjax.frontends import outdir
from divjax.config import ConfigError, SimConfig
from divjax.frontends.sweep_outputs import jsonable

POINTS = "points"
RECORD_KEYS = ("config", "grid", "seeds", "base_seed", "chunk_size", "plugins")


def sweep_record(cfg: SimConfig, grid: dict, seeds: int, base_seed: int,
                 chunk_size: int | None) -> dict:
    """What a sweep's results depend on, as config.json records it."""
    from divjax.plugins import plugin_record

    return jsonable({"config": dataclasses.asdict(cfg), "grid": grid, "seeds": seeds,
                     "base_seed": base_seed, "chunk_size": chunk_size,
                     "plugins": plugin_record(cfg)})   # a changed plug-in cannot resume


def record_difference(saved: dict, now: dict) -> list[str]:
    """'what: X there, Y here' for every recorded argument that differs (empty if none)."""
    diff = []
    for key in RECORD_KEYS:
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(dict.fromkeys([*a, *b])):
                if a.get(k, "(absent)") != b.get(k, "(absent)"):
                    what = f"--grid {k}" if key == "grid" else k
                    diff.append(f"{what}: {a.get(k, '(absent)')!r} there, "
                                f"{b.get(k, '(absent)')!r} here")
        elif a != b:
            diff.append(f"{key}: {a!r} there, {b!r} here")
    return diff


def read_record(out: Path) -> dict:
    """The recorded arguments of the sweep in `out`; ConfigError if it is not a sweep folder."""
    path = Path(out) / "config.json"
    if not Path(out).is_dir():
        raise ConfigError(f"--resume {out}: no such directory; give the --out of a sweep")
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        saved = None
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume {out}: {path} is unreadable ({e}): start the sweep "
                          f"again in a new --out") from e
    if not (isinstance(saved, dict) and all(k in saved for k in RECORD_KEYS)
            and (Path(out) / POINTS).is_dir()):
        raise ConfigError(f"--resume {out}: it is not a sweep folder that can be resumed (no "
                          f"{POINTS}/ and recorded grid in config.json); only sweeps started "
                          f"with --out can be resumed")
    return {k: saved[k] for k in RECORD_KEYS}


def config_of(record: dict) -> SimConfig:
    """The SimConfig a record holds (lists back to tuples)."""
    fields = {f.name: f for f in dataclasses.fields(SimConfig)}
    return SimConfig(**{k: tuple(v) if isinstance(fields[k].default, tuple) else v
                        for k, v in record["config"].items() if k in fields})


def start(out: Path, record: dict, resume: bool) -> None:
    """Begin (or, with `resume`, check and continue) the point store of a sweep in `out`."""
    out = Path(out)
    if resume:
        diff = record_difference(read_record(out), record)
        if diff:
            raise ConfigError(f"--resume {out}: this sweep differs from the one recorded there "
                              f"({'; '.join(diff)}): resume it with its own arguments (give "
                              f"none), or start a new sweep in another --out")
        return
    outdir.record(out, POINTS)
    (out / POINTS).mkdir(exist_ok=True)
    outdir.write_output(out, "config.json", json.dumps({**record, "status": "running"},
                                                       indent=1))


# ----------------------------------------------------------------------------- groups, chunks


def _group_path(out: Path, g: int) -> Path:
    return Path(out) / POINTS / f"g{g:04d}.json"


def _block_path(out: Path, g: int, i: int, j: int) -> Path:
    return Path(out) / POINTS / f"g{g:04d}-b{i:04d}-{j:04d}.json"


def save_group(out: Path, g: int, info: dict) -> None:
    outdir.write_text(_group_path(out, g), json.dumps(jsonable(info), indent=1))


def load_group(out: Path, g: int) -> dict | None:
    """Group g's recorded info, or None if it never started (or its file is unreadable)."""
    try:
        return json.loads(_group_path(out, g).read_text())
    except (OSError, ValueError):
        return None


def save_block(out: Path, g: int, i: int, j: int, metrics: dict, errs: tuple) -> None:
    """One finished chunk: metrics leaves (Hb, Sb, C), errs three (Hb, Sb) int arrays."""
    payload = {"group": g, "block": [i, j],
               "metrics": {k: {"dtype": str(np.asarray(v).dtype), "data": np.asarray(v).tolist()}
                           for k, v in metrics.items()},
               "errs": [np.asarray(e).tolist() for e in errs]}
    outdir.write_text(_block_path(out, g, i, j), json.dumps(payload))


def load_blocks(out: Path, g: int, blocks: tuple[int, int], shape: tuple[int, int]) -> dict:
    """{(i, j): (metrics, errs)} of group g's finished chunks (files of another geometry or
    unreadable ones are left out: those chunks run again)."""
    got = {}
    for i in range(blocks[0]):
        for j in range(blocks[1]):
            try:
                d = json.loads(_block_path(out, g, i, j).read_text())
                metrics = {k: np.asarray(v["data"], dtype=v["dtype"])
                           for k, v in d["metrics"].items()}
                errs = tuple(np.asarray(e, np.int32) for e in d["errs"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if all(m.shape[:2] == shape for m in metrics.values()) and len(errs) == 3 and all(
                    e.shape == shape for e in errs):
                got[(i, j)] = (metrics, errs)
    return got
