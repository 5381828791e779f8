"""Sweeps: a grid of hyperparameters x seeds as one compiled, vmapped program.

    from divjax.sweep import sweep
    res = sweep(cfg, {"lr": [0.01, 0.05, 0.1], "n_nodes": [16, 32]}, seeds=4, out="runs/lr")
    res.summary["best"]            # the config with the best final primary metric

    divjax sweep --preset synthetic-small --grid lr=0.01,0.05,0.1 --seeds 4 --out runs/lr

Grid fields are split in two (STYLE.md 3.3):
- shape-preserving fields become `HParams` leaves with a sweep axis and run under `jax.vmap`
  (a vmap over seeds of a vmap over configs, so a seed's configs share its mini-batches,
  routes and schedule), in chunks that fit in memory (one compilation per group): the
  optimizer (`lr`, `momentum`, `weight_decay`) and the network description the per-node arrays
  are built from (`fast_mbps`, `straggler_mbps`, `n_stragglers`, `straggler_share` (fraction of
  the nodes), `latency_ms`, `compute_s`, `straggler_compute_factor`);
- every other `SimConfig` field (n_nodes, n_fragments, fanout, task, algorithm, ...) changes
  shapes or code, so it is a Python loop over groups, each compiled once.

Only the leaves that actually vary are batched: an lr sweep keeps the per-node timing unbatched,
so the engine's "no node finishes at this tick" skip survives `vmap` (a batched predicate would
turn `lax.cond` into a select that always trains). Sweeping compute times batches the timing.

Outputs (`out=`): config.json, metrics.csv and metrics.jsonl (tidy: one row per config, seed and
evaluation time), summary.json and summary.md (mean and 95% confidence interval across seeds per
config, the best config), plot.png (curves with confidence bands; final metric against the swept
value(s): a line plot for one field, a heat-map for two). Seeds are
`jax.random.split(jax.random.key(base_seed), S)`; seed s is the same key in every config.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import ConfigError, HParams, SimConfig, default_hparams
from divjax.state import ERR_NONFINITE

# SimConfig fields that only build HParams values (no shape, no code path): vmapped.
HP_FIELDS = ("lr", "momentum", "weight_decay", "fast_mbps", "straggler_mbps", "n_stragglers",
             "latency_ms", "compute_s", "straggler_compute_factor")
ALIASES = ("straggler_share",)  # fraction of the nodes that are stragglers -> n_stragglers


class SweepResult(NamedTuple):
    rows: list          # tidy rows: dict per (config, seed, eval time)
    summary: dict       # per-config mean / CI95 of the final metrics, best config, timings
    configs: list       # per config: {"config": id, "group": g, <grid values>}
    metrics: list       # per group: metrics dict, leaves (H_g, S, C) (node-level leaves dropped)
    out: Path | None


# ----------------------------------------------------------------------------- grid handling


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


def resolve_grid(cfg: SimConfig, hps: list[HParams], task, algo):
    """One config (ring, delay, train capacity) that fits every grid point's network."""
    from divjax.sizing import model_layout, resolve

    layout = model_layout(cfg, task)
    got = [resolve(cfg, h, layout, check_memory=False, algo=algo) for h in hps]
    return cfg.replace(ring_ticks=max(c.ring_ticks for c in got),
                       delay_ticks=max(c.delay_ticks for c in got),
                       train_capacity=max(c.train_capacity for c in got))


# ----------------------------------------------------------------------------- running


def auto_chunk(engine, points: int, configs: int | None = None, fraction: float = 0.4,
               platform: str | None = None, cpu_budget_bytes: int = 256 << 20) -> int:
    """Points per chunk: the most whose states fit in `fraction` of the device memory (x3 for
    buffers); on a CPU, no more than `cpu_budget_bytes` of state unless one seed's `configs`
    need more.

    On a CPU the exchange is bound by memory bandwidth once the working set leaves the caches:
    benchmarks/sweep_vs_loop.py measured a 4 x 4 MovieLens grid (about 110 MiB of state per
    point) faster in chunks of one seed's 4 configs (which still share the seed's batches and
    schedule) than all 16 points at once (16.6 s against 18.1 s, best of 3). Small models (a seed
    sweep of the synthetic task) keep whole chunks.
    """
    from divjax.sizing import memory_estimate
    from divjax.memory import available_memory_bytes

    per = max(1, memory_estimate(engine.cfg, engine.layout, engine.cfg.ring_ticks)["total"])
    fit = int(max(1, min(points, fraction * available_memory_bytes() // (3 * per))))
    platform = platform or jax.devices()[0].platform
    if platform == "cpu":
        return min(fit, max(configs or 1, cpu_budget_bytes // per))
    return fit


def make_batched(run: Callable, hp_axes: HParams, configs: int) -> Callable:
    """grid(keys (S,), hp with a config axis where hp_axes is 0) -> (errors, first_error,
    metrics), leaves (S, H, ...): a vmap over seeds of a vmap over configs.

    The configs of one seed share its key, so everything random (mini-batches, routes,
    fragment masks) and, for optimizer-only grids, the whole schedule is unbatched inside the
    inner vmap: scatters and gathers keep unbatched indices, and the sparse matrix-factorisation
    steps serve all of a seed's learning rates with one row access (`models.mf_sgd_steps`).
    """

    def point(key, hp):
        state, metrics = run(key, hp)
        metrics = {k: v for k, v in metrics.items() if k != "node"}
        return state.errors, state.first_error_tick, metrics

    over_configs = jax.vmap(point, in_axes=(None, hp_axes), axis_size=configs)
    return jax.vmap(over_configs, in_axes=(0, None))


def grid_blocks(H: int, S: int, chunk_size: int, multiple: int = 1) -> tuple[int, int]:
    """(configs, seeds) per chunk for at most `chunk_size` points: all configs of as many seeds
    as fit (a multiple of `multiple` when possible, for sharding seeds), else fewer configs."""
    B = max(1, chunk_size)
    if B < H:
        return B, 1
    Sb = max(1, min(S, B // H))
    if multiple > 1 and Sb >= multiple:
        Sb -= Sb % multiple
    return H, Sb


def run_points(run: Callable, cfg: SimConfig, keys: jax.Array, hp: HParams, hp_axes: HParams,
               chunk_size: int, progress: Callable | None = None,
               shard: bool = True, status: dict | None = None) -> tuple[dict, dict]:
    """Run H configs (hp leaves (H, ...) where batched) x S seeds (keys (S,)) in chunks.

    A chunk is a block of configs x seeds of one compiled shape (`grid_blocks`), at most
    `chunk_size` points; the last block along each axis is padded by repeating its last entry,
    so the program compiles once. With several devices (and `shard`), each chunk's seeds are
    split over all of them when their count allows it.
    Returns (metrics leaves (H, S, C), timings). A point whose training diverged (NaN/inf) raises
    SimulationError, unless `status` (a dict) is given: then the run goes on and `status` gets
    "errors" (H, S) int32 (state.ERR_* flags) and "first_error_tick" (H, S) int32 (-1 if none);
    the diverged points' metrics are NaN from that time. Other error flags always raise.
    """
    from divjax.sim import check_state

    S = keys.shape[0]
    H = max(jax.tree.leaves(jax.tree.map(lambda x, a: 1 if a is None else x.shape[0], hp,
                                         hp_axes, is_leaf=lambda x: x is None)))
    devices = jax.devices()
    Hb, Sb = grid_blocks(H, S, chunk_size, len(devices) if shard else 1)
    sharded = shard and len(devices) > 1 and Sb % len(devices) == 0
    h_blocks, s_blocks = math.ceil(H / Hb), math.ceil(S / Sb)
    h_idx = np.minimum(np.arange(h_blocks * Hb), H - 1).reshape(h_blocks, Hb)
    s_idx = np.minimum(np.arange(s_blocks * Sb), S - 1).reshape(s_blocks, Sb)
    if sharded:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("points",))
        split, whole = NamedSharding(mesh, PartitionSpec("points")), NamedSharding(mesh,
                                                                                   PartitionSpec())

    def take(hi, si):
        k = keys[si]
        h = jax.tree.map(lambda x, a: x if a is None else x[hi], hp, hp_axes,
                         is_leaf=lambda x: x is None)
        if sharded:
            k = jax.device_put(k, split)
            h = jax.tree.map(lambda x: jax.device_put(x, whole), h)
        return k, h

    fn = jax.jit(make_batched(run, hp_axes, Hb))
    t0 = time.perf_counter()
    compiled = fn.lower(*take(h_idx[0], s_idx[0])).compile()
    compile_s = time.perf_counter() - t0
    blocks = [[None] * s_blocks for _ in range(h_blocks)]
    err_blocks = [[None] * s_blocks for _ in range(h_blocks)]
    t0, done = time.perf_counter(), 0
    for i, hi in enumerate(h_idx):
        for j, si in enumerate(s_idx):
            errors, first, metrics = jax.block_until_ready(compiled(*take(hi, si)))
            errors, first = np.asarray(errors), np.asarray(first)
            if status is None:
                check_state(_Errs(errors, first), cfg)
            else:   # divergence is marked per point; ring or capacity overflows still raise
                check_state(_Errs(errors & ~ERR_NONFINITE, first), cfg)
            err_blocks[i][j] = (errors.T, first.T)
            # (Sb, Hb, C) -> (Hb, Sb, C)
            blocks[i][j] = jax.tree.map(lambda x: np.swapaxes(x, 0, 1), jax.device_get(metrics))
            done += Hb * Sb
            if progress is not None:
                progress(min(done, H * S), H * S)
    run_s = time.perf_counter() - t0
    rows = [jax.tree.map(lambda *xs: np.concatenate(xs, axis=1)[:, :S], *b) for b in blocks]
    metrics = jax.tree.map(lambda *xs: np.concatenate(xs)[:H], *rows)
    if status is not None:
        for n, name in enumerate(("errors", "first_error_tick")):
            status[name] = np.concatenate([np.concatenate([b[n] for b in row], axis=1)[:, :S]
                                           for row in err_blocks])[:H]
    return metrics, {"compile_s": compile_s, "run_s": run_s, "chunk_size": Hb * Sb,
                     "chunk_configs": Hb, "chunk_seeds": Sb, "chunks": h_blocks * s_blocks,
                     "devices": len(devices) if sharded else 1}


class _Errs(NamedTuple):
    errors: jax.Array
    first_error_tick: jax.Array


def sweep(cfg: SimConfig, grid: dict, seeds: int = 4, base_seed: int = 0,
          chunk_size: int | None = None, out: str | Path | None = None,
          progress: Callable | None = None, verbose: bool = False) -> SweepResult:
    """Run every grid point x `seeds` seeds; vmapped per group of shape-preserving points.

    grid: SimConfig field (or "straggler_share") -> list of values. Returns a SweepResult and, if
    `out` is given, writes the sweep directory described in the module docstring.
    """
    if seeds < 1:
        raise ConfigError(f"seeds={seeds} is invalid: use at least one seed")
    static, dynamic = split_grid(grid)
    keys = jax.random.split(jax.random.key(base_seed), seeds)                    # (S,)
    rows, configs, group_metrics, groups = [], [], [], []
    primary, higher = None, True
    t_start = time.perf_counter()
    state = {"primary": None, "higher": True}
    statics = _combos(static) if static else [{}]
    for st in statics:   # every grid point's config is valid before anything runs
        for p in _combos(dynamic) if dynamic else [{}]:
            cfg.replace(**st).replace(**config_values(cfg.replace(**st), p))
    try:
        _sweep_groups(cfg, statics, dynamic, keys, seeds, chunk_size, progress, verbose, rows,
                      configs, group_metrics, groups, state)
    except BaseException as e:   # a failure or Ctrl-C/SIGTERM: keep what is done
        if out is not None and rows:
            summary = summarize(rows, configs, state["primary"], state["higher"], seeds)
            summary.update(base_seed=base_seed, seeds=seeds, groups=groups,
                           wall_s=time.perf_counter() - t_start,
                           device=jax.devices()[0].device_kind, jax=jax.__version__,
                           complete=False, stopped_by=f"{type(e).__name__}: {e}",
                           groups_done=len(groups), groups_total=len(statics))
            write_sweep_dir(Path(out), cfg, grid, rows, configs, summary, state["primary"])
            print(f"divjax sweep: stopped ({type(e).__name__}) after {len(groups)} of "
                  f"{len(statics)} group(s); wrote the finished points to {out}/",
                  file=sys.stderr, flush=True)
        raise
    primary, higher = state["primary"], state["higher"]
    total_s = time.perf_counter() - t_start
    summary = summarize(rows, configs, primary, higher, seeds)
    summary.update(base_seed=base_seed, seeds=seeds, groups=groups, wall_s=total_s,
                   device=jax.devices()[0].device_kind, jax=jax.__version__, complete=True)
    out_path = None
    if out is not None:
        out_path = Path(out)
        write_sweep_dir(out_path, cfg, grid, rows, configs, summary, primary)
    return SweepResult(rows, summary, configs, group_metrics, out_path)


def _sweep_groups(cfg, statics, dynamic, keys, seeds, chunk_size, progress, verbose, rows,
                  configs, group_metrics, groups, state) -> None:
    """The loop over shape-changing groups of `sweep`; appends to rows, configs, group_metrics
    and groups as each group finishes (so a stopped sweep keeps the finished groups)."""
    from divjax.algorithms import ALGORITHMS
    from divjax.registry import make_task
    from divjax.sim import make_run

    for g, st in enumerate(statics):
        cfg_g = cfg.replace(**st)
        points = _combos(dynamic) if dynamic else [{}]
        hps = [hparams_for(cfg_g, p) for p in points]
        task = make_task(cfg_g)
        if cfg_g.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm={cfg_g.algorithm!r} is unknown: choose one of "
                              f"{sorted(ALGORITHMS)}")
        algo = ALGORITHMS[cfg_g.algorithm](cfg_g)
        cfg_r = resolve_grid(cfg_g, hps, task, algo)
        run = make_run(cfg_r, task, algo)
        state["primary"], state["higher"] = task.primary, task.higher_is_better
        H, S = len(points), seeds
        hp, hp_axes = stack_hparams(hps)
        B = chunk_size or auto_chunk(run.engine, H * S, configs=H)
        Hb, Sb = grid_blocks(H, S, B, len(jax.devices()))
        if verbose:
            print(f"divjax sweep: group {g + 1} {st or ''}: {H} configs x {S} seeds in "
                  f"{math.ceil(H / Hb) * math.ceil(S / Sb)} chunk(s) of {Hb} x {Sb}", flush=True)
        status: dict = {}
        metrics, timing = run_points(run, run.engine.cfg, keys, hp, hp_axes, B, progress,
                                     status=status)
        tick_s = run.engine.cfg.tick_s
        diverged = (status["errors"] & ERR_NONFINITE) != 0                       # (H, S)
        at_s = np.where(diverged, status["first_error_tick"] * tick_s, np.nan)
        group_metrics.append(metrics)
        groups.append({"static": st, "resolved": dataclasses.asdict(run.engine.cfg),
                       "configs": H, "seeds": S, **timing})
        for h, p in enumerate(points):
            cid = len(configs)
            configs.append({"config": cid, "group": g, **st, **_plain(p)})
            C = metrics["time_s"].shape[-1]
            for s in range(S):
                when = float(at_s[h, s]) if diverged[h, s] else None
                for c in range(C):
                    rows.append({**configs[-1], "seed": s,
                                 **{k: float(v[h, s, c]) for k, v in metrics.items()},
                                 "diverged": bool(diverged[h, s]), "diverged_at_s": when})
            if diverged[h].any() and verbose:
                print(f"divjax sweep: config {cid} ({_label(configs[-1], {**st, **p})}) "
                      f"diverged (NaN/inf in a node model) in {int(diverged[h].sum())}/{S} "
                      f"seed(s), first at simulated t={np.nanmin(at_s[h]):.3g}s; its metrics "
                      f"are NaN from then on; continuing", file=sys.stderr, flush=True)


def _plain(point: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple | list) else v) for k, v in point.items()}


# ----------------------------------------------------------------------------- statistics


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def ci95(values) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t confidence interval); half-width NaN for 1 value."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan")
    t = _T975[v.size - 2] if v.size - 1 <= len(_T975) else 1.960
    return m, float(t * v.std(ddof=1) / math.sqrt(v.size))


def summarize(rows: list, configs: list, primary: str, higher: bool, seeds: int) -> dict:
    """Per config: mean and CI95 across seeds of the final metrics; the best config."""
    metric_cols = [k for k in rows[0] if k.endswith(("_mean", "_avgmodel")) or k == "consensus"]
    final = {}
    for r in rows:  # the last eval time of each (config, seed) wins
        final[(r["config"], r["seed"])] = r
    per_config = []
    for c in configs:
        last = [final[(c["config"], s)] for s in range(seeds) if (c["config"], s) in final]
        entry = {**c, "time_s": last[0]["time_s"]}
        for k in metric_cols:
            m, hw = ci95([r[k] for r in last])   # over the seeds that stayed finite
            entry[k] = m
            entry[k + "_ci95"] = hw
        when = [r["diverged_at_s"] for r in last if r.get("diverged")]
        entry["diverged_seeds"] = len(when)
        entry["diverged_at_s"] = min(when) if when else None
        per_config.append(entry)
    key = f"{primary}_mean"
    # the best config: finite, and among those, one that never diverged when there is one
    finite = [e for e in per_config if np.isfinite(e[key])]
    pool = [e for e in finite if not e["diverged_seeds"]] or finite
    best = None
    if pool:
        best = (max if higher else min)(pool, key=lambda e: e[key])
    return {"primary": primary, "higher_is_better": higher, "final": per_config,
            "best": best, "diverged_configs": [e["config"] for e in per_config
                                               if e["diverged_seeds"]]}


# ----------------------------------------------------------------------------- outputs


def write_sweep_dir(out: Path, cfg: SimConfig, grid: dict, rows: list, configs: list,
                    summary: dict, primary: str) -> None:
    """config.json, metrics.csv, metrics.jsonl, summary.json, summary.md, plot.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(
        {"config": dataclasses.asdict(cfg),
         "grid": {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in grid.items()},
         "seeds": summary["seeds"], "base_seed": summary["base_seed"],
         "seed_keys": f"jax.random.split(jax.random.key({summary['base_seed']}), "
                      f"{summary['seeds']})",
         "configs": configs}, indent=1, default=str))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    with open(out / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(summary_markdown(cfg, grid, summary, primary))
    plot_sweep(rows, configs, summary, grid, primary, out / "plot.png")


def _label(c: dict, grid: dict) -> str:
    return ", ".join(f"{k}={c[k]}" for k in grid if k in c)


def _diverged_text(e: dict, seeds: int) -> str:
    if not e.get("diverged_seeds"):
        return "-"
    return f"{e['diverged_seeds']}/{seeds} seeds, first at t={e['diverged_at_s']:.3g} s"


def summary_markdown(cfg: SimConfig, grid: dict, summary: dict, primary: str) -> str:
    key = f"{primary}_mean"
    best = summary["best"]
    seeds = summary["seeds"]
    lines = [f"# Sweep: {cfg.algorithm} on {cfg.task}", ""]
    if not summary.get("complete", True):
        lines += [f"**Incomplete:** stopped by {summary.get('stopped_by')} after "
                  f"{summary.get('groups_done')} of {summary.get('groups_total')} group(s); the "
                  f"tables hold the finished points only.", ""]
    best_line = (f"- best config ({'highest' if summary['higher_is_better'] else 'lowest'} final "
                 f"{key}): **{_label(best, grid) or 'the only one'}**: {best[key]:.4g} "
                 f"± {best[key + '_ci95']:.2g} (95% CI across seeds)" if best is not None else
                 "- best config: none (every config diverged)")
    lines += [f"- grid: {', '.join(f'{k} in {list(v)}' for k, v in grid.items())}",
              f"- {seeds} seeds (`jax.random.split(jax.random.key("
              f"{summary['base_seed']}), {seeds})`), {cfg.duration_s:g} simulated s",
              best_line]
    diverged = [e for e in summary["final"] if e.get("diverged_seeds")]
    if diverged:
        lines.append("- diverged (a node model became NaN/inf; the time is the first at which "
                     "any node did; metrics of those seeds are NaN afterwards and left out of "
                     "the means): " + "; ".join(
                         f"config {e['config']} ({_label(e, grid) or '-'}): "
                         f"{_diverged_text(e, seeds)}" for e in diverged))
    lines += [f"- wall time {summary['wall_s']:.1f} s on {summary['device']}: "
              + "; ".join(f"group {i}: compile {g['compile_s']:.1f} s, run {g['run_s']:.1f} s "
                          f"({g['chunks']} chunk(s) of {g['chunk_size']})"
                          for i, g in enumerate(summary["groups"])),
              "", f"| config | {key} (final, mean ± 95% CI) | {primary}_avgmodel | consensus "
                  f"| diverged |",
              "|---|---|---|---|---|"]
    for e in summary["final"]:
        mark = " **(best)**" if best is not None and e["config"] == best["config"] else ""
        lines.append(f"| {e['config']}: {_label(e, grid) or '-'}{mark} | {e[key]:.4g} ± "
                     f"{e[key + '_ci95']:.2g} | {e[primary + '_avgmodel']:.4g} | "
                     f"{e['consensus']:.3g} | {_diverged_text(e, seeds)} |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list, configs: list, summary: dict, grid: dict, primary: str,
               path: Path) -> None:
    """Curves (mean across seeds, 95% CI band) and the final metric against the swept values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"{primary}_mean"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for c in configs:
        mine = [r for r in rows if r["config"] == c["config"]]
        times = sorted({r["time_s"] for r in mine})
        stats = [ci95([r[key] for r in mine if r["time_s"] == t]) for t in times]
        m = np.array([s[0] for s in stats])
        hw = np.nan_to_num(np.array([s[1] for s in stats]))
        line, = ax.plot(times, m, label=_label(c, grid) or "run")
        ax.fill_between(times, m - hw, m + hw, alpha=0.15, color=line.get_color())
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"{key} (mean over seeds, 95% CI)")
    ax.grid(alpha=0.3)
    if len(configs) <= 12:
        ax.legend(fontsize=7)
    ax = axes[1]
    final = summary["final"]
    numeric = [k for k, v in grid.items() if len(v) > 1 and
               all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)]
    if len(numeric) == 2:
        xs, ys = list(grid[numeric[0]]), list(grid[numeric[1]])
        img = np.full((len(ys), len(xs)), np.nan)
        for e in final:  # other fields (if any): the best entry per cell
            i, j = ys.index(e[numeric[1]]), xs.index(e[numeric[0]])
            v = e[key]
            if np.isnan(img[i, j]) or (v > img[i, j]) == summary["higher_is_better"]:
                img[i, j] = v
        im = ax.imshow(img, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys])
        for i in range(len(ys)):
            for j in range(len(xs)):
                light = img[i, j] > np.nanmean(img)
                ax.text(j, i, f"{img[i, j]:.3g}", ha="center", va="center", fontsize=7,
                        color="k" if light else "w")
        ax.set_xlabel(numeric[0])
        ax.set_ylabel(numeric[1])
        fig.colorbar(im, ax=ax, label=f"final {key}")
    elif len(numeric) >= 1:
        x = numeric[0]
        rest = {k: v for k, v in grid.items() if k != x}
        others = sorted({_label(e, rest) for e in final})
        for o in others:
            sel = [e for e in final if _label(e, rest) == o]
            sel.sort(key=lambda e: e[x])
            ax.errorbar([e[x] for e in sel], [e[key] for e in sel],
                        yerr=np.nan_to_num([e[key + "_ci95"] for e in sel]), marker="o",
                        capsize=3, label=o or None)
        if all(v > 0 for v in grid[x]) and max(grid[x]) / min(grid[x]) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(f"final {key}")
        if any(others):
            ax.legend(fontsize=7)
    else:
        ax.bar([str(e["config"]) for e in final], [e[key] for e in final],
               yerr=np.nan_to_num([e[key + "_ci95"] for e in final]), capsize=3)
        ax.set_xlabel("config")
        ax.set_ylabel(f"final {key}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
