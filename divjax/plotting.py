"""`divjax plot RUN_DIR... [--out FILE]`: overlay runs from their metrics.json.

Each RUN_DIR is a directory written by `divjax run` (config.json + metrics.json); runs are
labelled by directory name unless `--labels` is given. The primary metric is taken from the first
run's config (`task.primary`) unless `--metric` names one. Host-side only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """(metrics with numpy leaves, config.json contents) of one run directory."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no metrics.json: is it a `divjax run` output?")
    raw = json.loads(path.read_text())
    metrics = {k: np.asarray(v, np.float32) for k, v in raw.items() if k != "node"}
    metrics["node"] = {k: np.asarray(v, np.float32) for k, v in raw.get("node", {}).items()}
    cfg_path = run_dir / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    return metrics, config


def plot_dirs(run_dirs: list, out: Path, labels: list | None = None,
              metric: str | None = None) -> Path:
    from divjax import report

    runs, primary = [], metric
    for i, d in enumerate(run_dirs):
        metrics, config = load_run(d)
        if primary is None:
            primary = (config.get("task", {}).get("primary") or config.get("task_primary")
                       or "loss")
        label = labels[i] if labels and i < len(labels) else Path(d).name
        runs.append((label, metrics))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.plot_runs(runs, primary, out)
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="overlay the metrics of several run directories")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=Path("runs/compare.png"), help="image file")
    p.add_argument("--labels", default=None, help="comma-separated labels, one per run")
    p.add_argument("--metric", default=None, help="metric to plot (default: the task's primary)")
    p.set_defaults(handler=cmd_plot)


def cmd_plot(args) -> int:
    labels = args.labels.split(",") if args.labels else None
    out = plot_dirs(args.runs, args.out, labels, args.metric)
    print(f"divjax: wrote {out}")
    return 0
