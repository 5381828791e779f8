"""`divjax plot RUN_DIR... [--out FILE]`: overlay runs from their metrics.json.

Each RUN_DIR is a directory written by `divjax run` (config.json + metrics.json); runs are
labelled by directory name unless `--labels` is given. The primary metric is taken from the first
run's config (`task.primary`) unless `--metric` names one. Host-side only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from divjax.config import ConfigError


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """(metrics with numpy leaves, config.json contents) of one run directory.

    Anything that is not a finished `divjax run` directory (missing, a sweep or compare output,
    an unfinished run, an unreadable metrics.json) is a ConfigError that says what to do."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not run_dir.exists():
        raise ConfigError(f"plot: {run_dir} does not exist; give directories written by "
                          f"`divjax run` (its --out)")
    if not run_dir.is_dir():
        raise ConfigError(f"plot: {run_dir} is a file; give directories written by `divjax run`")
    if not path.exists():
        if (run_dir / "metrics.jsonl").exists():
            why = (f"it is a `divjax sweep` output: its curves are in {run_dir / 'plot.png'} "
                   f"(metrics in metrics.csv)")
        elif (run_dir / "compare.json").exists():
            why = (f"it is a `divjax compare` output: its overlay is "
                   f"{run_dir / 'compare.png'} (metrics in compare.json)")
        elif (run_dir / "run.json").exists():
            why = (f"the run has not finished: continue it with `divjax run --resume {run_dir}`")
        else:
            why = "is it a `divjax run` output?"
        raise ConfigError(f"plot: {run_dir} holds no metrics.json; {why}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"plot: {path} is unreadable ({e}): rerun that run") from e
    metrics = {k: np.asarray(v, np.float32) for k, v in raw.items() if k != "node"}
    metrics["node"] = {k: np.asarray(v, np.float32) for k, v in raw.get("node", {}).items()}
    cfg_path = run_dir / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    return metrics, config


def plot_dirs(run_dirs: list, out: Path, labels: list | None = None,
              metric: str | None = None) -> Path:
    from divjax.frontends import report

    runs, primary = [], metric
    for i, d in enumerate(run_dirs):
        metrics, config = load_run(d)
        if primary is None:
            primary = (config.get("task", {}).get("primary") or config.get("task_primary")
                       or "loss")
        if metric is not None and f"{metric}_mean" not in metrics:
            names = sorted(k[:-5] for k in metrics if k.endswith("_mean"))
            raise ConfigError(f"plot: {d} has no metric {metric!r}: choose --metric from "
                              f"{names}")
        label = labels[i] if labels and i < len(labels) else Path(d).name
        runs.append((label, metrics))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        report.plot_runs(runs, primary, out)
    except OSError as e:
        raise ConfigError(f"plot: cannot write {out} ({e.strerror or e}): choose another "
                          f"--out") from e
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
    if labels is not None and len(labels) != len(args.runs):
        raise ConfigError(f"plot: --labels has {len(labels)} label(s) for {len(args.runs)} "
                          f"run(s): give one label per RUN_DIR")
    out = plot_dirs(args.runs, args.out, labels, args.metric)
    print(f"divjax: wrote {out}")
    return 0
