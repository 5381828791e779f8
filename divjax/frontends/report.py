"""Run outputs people can look at: config, metrics (JSON, CSV), a plot and a Markdown summary.

Host-side only (file I/O); nothing here is traced.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from divjax.frontends import outdir

SCALAR_SKIP = ("node",)


def scalar_columns(metrics: dict) -> list[str]:
    cols = [k for k in metrics if k not in SCALAR_SKIP]
    return ["time_s"] + sorted(c for c in cols if c != "time_s")


def metrics_rows(metrics: dict) -> list[dict]:
    cols = scalar_columns(metrics)
    C = len(metrics["time_s"])
    return [{c: float(np.asarray(metrics[c])[i]) for c in cols} for i in range(C)]


def format_table(metrics: dict, columns: list[str], max_rows: int = 25) -> str:
    """A plain-text table of the chosen columns against simulated time."""
    rows = metrics_rows(metrics)
    if len(rows) > max_rows:
        step = int(np.ceil(len(rows) / max_rows))
        rows = rows[step - 1::step] if rows[-1] is rows[step - 1::step][-1] else \
            rows[step - 1::step] + [rows[-1]]
    widths = [max(len(c), 10) for c in columns]
    head = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
    lines = [head, "  ".join("-" * w for w in widths)]
    for r in rows:
        lines.append("  ".join(f"{r[c]:>{w}.4g}" for c, w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


def write_run_dir(out: Path, cfg, hp, metrics: dict, task_info: dict, extra: dict) -> None:
    """Write config.json, metrics.json, metrics.csv and plot.png into `out`, each recorded in
    its manifest and written atomically (`divjax.frontends.outdir`)."""
    from divjax.plugins import label, plugin_record

    out.mkdir(parents=True, exist_ok=True)
    config = {"config": dataclasses.asdict(cfg),
              "hparams": {f.name: np.asarray(getattr(hp, f.name)).tolist()
                          for f in dataclasses.fields(hp)},
              "task": task_info, "plugins": plugin_record(cfg), **extra}
    outdir.write_output(out, "config.json", json.dumps(config, indent=1, default=str))
    jm = {k: np.asarray(v).tolist() for k, v in metrics.items() if k != "node"}
    jm["node"] = {k: np.asarray(v).tolist() for k, v in metrics.get("node", {}).items()}
    outdir.write_output(out, "metrics.json", json.dumps(jm))
    rows = metrics_rows(metrics)
    outdir.write_output(out, "metrics.csv", csv_text(rows, list(rows[0])))
    outdir.record(out, "plot.png")
    plot_runs([(label(cfg.algorithm), metrics)], task_info.get("primary", "loss"), out / "plot.png")


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """`rows` as CSV text with a header (lists as JSON)."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return buf.getvalue()


def plot_runs(runs: list[tuple[str, dict]], primary: str, path: Path,
              secondary: str = "loss") -> None:
    """Overlay runs: primary metric (node mean, min-max band, average model) and consensus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [primary] + ([secondary] if secondary != primary else [])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(5 * (len(names) + 1), 3.8))
    for label, m in runs:
        t = np.asarray(m["time_s"])
        for ax, name in zip(axes, names, strict=False):
            if f"{name}_mean" not in m:
                continue
            line, = ax.plot(t, m[f"{name}_mean"], label=f"{label} (node mean)")
            ax.fill_between(t, m[f"{name}_min"], m[f"{name}_max"], alpha=0.15,
                            color=line.get_color())
            ax.plot(t, m[f"{name}_avgmodel"], "--", color=line.get_color(),
                    label=f"{label} (average model)")
            ax.set_xlabel("simulated time (s)")
            ax.set_ylabel(name)
        axes[-1].semilogy(t, np.maximum(np.asarray(m["consensus"]), 1e-12), label=label)
        axes[-1].set_xlabel("simulated time (s)")
        axes[-1].set_ylabel("consensus distance")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig, path: Path) -> None:
    """Save `fig` at `path` atomically (a temporary file, then os.replace)."""
    with outdir.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
