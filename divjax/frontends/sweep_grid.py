"""A sweep's grid: which fields are vmapped and which loop, each point's HParams, the size.

Grid fields are split in two (`split_grid`, see `divjax.frontends.sweep`): fields that only build HParams
values (`HP_FIELDS`, and the alias `straggler_share`) are stacked along a vmapped axis
(`hparams_for`, `stack_hparams`); every other SimConfig field changes shapes or code and loops
in Python, one compilation per group (`sweep_plan` says how many before anything runs).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax.numpy as jnp
import numpy as np

from divjax.config import ConfigError, HParams, SimConfig, default_hparams

# SimConfig fields that only build HParams values (no shape, no code path): vmapped.
HP_FIELDS = ("lr", "momentum", "weight_decay", "fast_mbps", "straggler_mbps", "n_stragglers",
             "latency_ms", "compute_s", "straggler_compute_factor", "compute_spread",
             "compute_seed")
ALIASES = ("straggler_share",)  # fraction of the nodes that are stragglers -> n_stragglers


# A sweep's size check (`sweep_plan`): each group of shape-changing values compiles once; a
# rough compile time per group from issue 30 (392 groups took 85 minutes to compile on a CPU).
COMPILE_S_PER_GROUP = 13.0
LARGE_GROUPS = 16           # more groups than this, or
LARGE_COMPILE_S = 30 * 60   # a compile estimate over this, needs --yes


def split_grid(grid: dict) -> tuple[dict, dict]:
    """(static fields -> values, vmappable fields -> values); raises on unknown names."""
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    static, dynamic = {}, {}
    for name, values in grid.items():
        values = list(values)
        if not values:
            raise ConfigError(f"grid field {name!r} has no values")
        if name in HP_FIELDS or name in ALIASES:
            dynamic[name] = values
        elif name in fields:
            static[name] = values
        else:
            raise ConfigError(f"grid field {name!r} is neither a SimConfig field nor one of "
                              f"{ALIASES}: choose from {sorted(fields | set(ALIASES))}")
    if "straggler_share" in dynamic and "n_stragglers" in dynamic:
        raise ConfigError("sweep either straggler_share or n_stragglers, not both")
    return static, dynamic


def sweep_plan(grid: dict, seeds: int) -> dict:
    """The size of a sweep before anything runs: groups (one compilation each), configs per
    group, points, a rough compile time, and `large` (over LARGE_GROUPS groups or
    LARGE_COMPILE_S of compiling: `divjax sweep` then asks for --yes)."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} is invalid: use at least one seed")
    static, dynamic = split_grid(grid)
    groups = math.prod(len(v) for v in static.values())
    configs = math.prod(len(v) for v in dynamic.values())
    compile_s = groups * COMPILE_S_PER_GROUP
    text = (f"{groups} group(s) x {configs} config(s) x {seeds} seed(s) = "
            f"{groups * configs * seeds} points, {groups} compilation(s): roughly "
            f"{_duration(compile_s)} of compiling ({COMPILE_S_PER_GROUP:g} s per group, a CPU "
            f"figure) plus the run time")
    return {"groups": groups, "configs_per_group": configs, "points": groups * configs * seeds,
            "compilations": groups, "compile_s": compile_s, "text": text,
            "large": groups > LARGE_GROUPS or compile_s > LARGE_COMPILE_S}


def _duration(s: float) -> str:
    return f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def _combos(values: dict) -> list[dict]:
    return [dict(zip(values, c, strict=True)) for c in itertools.product(*values.values())]


def config_values(cfg: SimConfig, point: dict) -> dict:
    """SimConfig replacements for one grid point's vmappable values."""
    out = {}
    for name, v in point.items():
        if name == "straggler_share":
            if not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"straggler_share={v!r} is invalid: use a fraction in [0, 1]")
            out["n_stragglers"] = int(round(float(v) * cfg.n_nodes))
        elif name == "straggler_mbps":
            out[name] = tuple(float(x) for x in np.atleast_1d(v))
        elif name == "n_stragglers":
            out[name] = int(v)
        else:
            out[name] = float(v)
    return out


def hparams_for(cfg: SimConfig, point: dict) -> HParams:
    """The HParams of one grid point: `default_hparams` of the config with its values."""
    return default_hparams(cfg.replace(**config_values(cfg, point)))


def stack_hparams(hps: list[HParams]) -> tuple[HParams, HParams]:
    """(stacked HParams, in_axes): leaves that differ get a leading axis, equal leaves do not."""
    leaves, axes = {}, {}
    for f in dataclasses.fields(HParams):
        vals = [np.asarray(getattr(h, f.name)) for h in hps]
        if all(np.array_equal(vals[0], v) for v in vals[1:]):
            leaves[f.name], axes[f.name] = jnp.asarray(vals[0]), None
        else:
            leaves[f.name], axes[f.name] = jnp.asarray(np.stack(vals)), 0
    return HParams(**leaves), HParams(**axes)
