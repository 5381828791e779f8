"""What a sweep writes: statistics across seeds (95% intervals), the summary, files and plots.

`summarize` reduces the tidy rows of `divjax.frontends.sweep.sweep` to one entry per config (final metric
mean and 95% t-interval across seeds, diverged points marked); `write_sweep_dir` writes
config.json, metrics.csv, metrics.jsonl, summary.json, summary.md and plot.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from divjax.frontends import outdir
from divjax.config import SimConfig
from divjax.frontends.report import csv_text, save_figure

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
        first = min((r for r in last if r.get("diverged")), key=lambda r: r["diverged_at_s"],
                    default=None)
        entry["diverged_node"] = first.get("diverged_node") if first is not None else None
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
                    summary: dict, primary: str, record: dict | None = None) -> None:
    """config.json, metrics.csv, metrics.jsonl, summary.json, summary.md, plot.png: each
    recorded in the folder's manifest and written atomically (`divjax.frontends.outdir`). `record`: the
    sweep's recorded arguments (`divjax.frontends.sweep.sweep_record`), kept in config.json for
    `divjax sweep --resume`."""
    out.mkdir(parents=True, exist_ok=True)
    head = record or {"config": dataclasses.asdict(cfg), "grid": jsonable(grid),
                      "seeds": summary["seeds"], "base_seed": summary["base_seed"]}
    outdir.write_output(out, "config.json", json.dumps(
        {**head, "seed_keys": f"jax.random.split(jax.random.key({summary['base_seed']}), "
                              f"{summary['seeds']})",
         "status": "complete" if summary.get("complete", True) else "incomplete",
         "configs": configs}, indent=1, default=str))
    cols = list(dict.fromkeys(k for r in rows for k in r))
    outdir.write_output(out, "metrics.csv", csv_text(rows, cols))
    outdir.write_output(out, "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    outdir.write_output(out, "summary.json", json.dumps(summary, indent=1, default=str))
    outdir.write_output(out, "summary.md", summary_markdown(cfg, grid, summary, primary))
    outdir.record(out, "plot.png")
    plot_sweep(rows, configs, summary, grid, primary, out / "plot.png")


def jsonable(value):
    """`value` as JSON gives it back (tuples become lists): what config.json records."""
    return json.loads(json.dumps(value, default=str))


def label(c: dict, grid: dict) -> str:
    return ", ".join(f"{k}={c[k]}" for k in grid if k in c)


def _diverged_text(e: dict, seeds: int) -> str:
    if not e.get("diverged_seeds"):
        return "-"
    node = e.get("diverged_node")
    where = f" (node {node})" if node is not None else ""
    return f"{e['diverged_seeds']}/{seeds} seeds, first at t={e['diverged_at_s']:.3g} s{where}"


def summary_markdown(cfg: SimConfig, grid: dict, summary: dict, primary: str) -> str:
    key = f"{primary}_mean"
    best = summary["best"]
    seeds = summary["seeds"]
    lines = [f"# Sweep: {cfg.algorithm} on {cfg.task}", ""]
    if not summary.get("complete", True):
        lines += [f"**Incomplete:** stopped by {summary.get('stopped_by')} after "
                  f"{summary.get('points_done')} of {summary.get('points_total')} points "
                  f"({summary.get('groups_done')} of {summary.get('groups_total')} group(s) "
                  f"complete); the tables hold the finished points only; `divjax sweep "
                  f"--resume DIR` runs the rest.", ""]
    best_line = (f"- best config ({'highest' if summary['higher_is_better'] else 'lowest'} final "
                 f"{key}): **{label(best, grid) or 'the only one'}**: {best[key]:.4g} "
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
                         f"config {e['config']} ({label(e, grid) or '-'}): "
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
        lines.append(f"| {e['config']}: {label(e, grid) or '-'}{mark} | {e[key]:.4g} ± "
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
        line, = ax.plot(times, m, label=label(c, grid) or "run")
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
        others = sorted({label(e, rest) for e in final})
        for o in others:
            sel = [e for e in final if label(e, rest) == o]
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
    save_figure(fig, path)
    plt.close(fig)
