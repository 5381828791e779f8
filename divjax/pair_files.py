"""CSV inputs: the line reader of every CSV file divjax reads (`csv_lines`, `number`; traces
use it too), and the per-pair matrices: the latency file and the per-link loss file.

Those two are n rows of n comma-separated numbers (row i: from node i to each node j), `#` comments
and blank lines skipped; every error names the file, line and column.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from divjax.config_checks import ConfigError


def csv_lines(path: str):
    """(line number, stripped cells) of every line of a CSV file that is not blank once its
    `#` comment is cut (the one line reader of divjax's CSV inputs)."""
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if text:
                yield line_no, [c.strip() for c in text.split(",")]


def number(cell: str) -> float:
    """The cell as a float; nan if it is not a number (callers name the line and column)."""
    try:
        return float(cell)
    except ValueError:
        return math.nan


def read_latency_file(path: str, n: int) -> np.ndarray:
    """An n x n latency matrix (ms) from a CSV file, with errors naming the line and column."""
    return read_square_csv(path, n, "latency_file", "one-way latencies in ms (row i: from node "
                           "i to each node j)", lambda v: v >= 0,
                           "a latency: use a finite number of milliseconds >= 0")


@functools.cache
def read_square_csv(path: str, n: int, field: str, what: str, valid, not_valid: str
                    ) -> np.ndarray:
    """An n x n float64 matrix from a CSV file of n rows of n comma-separated numbers (`#`
    comments, blank lines skipped); every error names the file, line and column. `valid(v)`
    checks a finite cell; `not_valid` completes "'cell' is not ..." in the error."""
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"{field}={path!r} does not exist: give a CSV of {n} rows of {n} "
                          f"{what}")
    rows = []
    for line_no, cells in csv_lines(path):
        if len(cells) != n:
            raise ConfigError(f"{path}:{line_no}: {len(cells)} values, expected {n} (one "
                              f"per node, comma-separated)")
        row = []
        for col, cell in enumerate(cells, 1):
            v = number(cell)
            if not (math.isfinite(v) and valid(v)):
                raise ConfigError(f"{path}:{line_no}:{col}: {cell!r} is not {not_valid}")
            row.append(v)
        rows.append(row)
    if len(rows) != n:
        raise ConfigError(f"{path}: {len(rows)} rows, expected {n} (one per node)")
    return np.asarray(rows, np.float64)


def _valid_probability(v: float) -> bool:
    return 0 <= v < 1


def loss_matrix(cfg) -> np.ndarray | None:
    """(n, n) float32 per-link loss probabilities of `loss_file` (row = sender), or None."""
    if not cfg.loss_file:
        return None
    return read_square_csv(cfg.loss_file, cfg.n_nodes, "loss_file",
                           "loss probabilities (row i: from node i to each node j)",
                           _valid_probability, "a loss probability: use a number in [0, 1)"
                           ).astype(np.float32)
