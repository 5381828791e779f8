"""CSV inputs: the line reader of every CSV file divjax reads (`csv_lines`, `number`; traces
use it too), and the per-pair matrices: the latency file and the per-link loss file.

Those two are n rows of n comma-separated numbers (row i: from node i to each node j), `#` comments
and blank lines skipped; every error names the file, line and column. A latency file's diagonal
(a node to itself: no message takes that path) is ignored, read as 0, with a warning when it is
not 0 (before, it lengthened every D-PSGD round, whose length takes the largest latency of a
row).

Every cache of a file's contents here and in `divjax.network.traces` is keyed on its contents' sha256
(`file_digest`), never on its path, modification time or size alone: a file rewritten at the
same path (even with the same size and time stamp) is read again. `divjax.engine.fingerprint` stores
the same digests, so a run never resumes on other inputs.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os

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


def file_digest(path: str) -> str:
    """The sha256 (hex) of a file's contents: the key of every cache of an input file and what
    a checkpoint's fingerprint stores of it. OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _valid_latency(v: float) -> bool:
    return v >= 0


def read_latency_file(path: str, n: int) -> np.ndarray:
    """An n x n latency matrix (ms) from a CSV file, with errors naming the line and column;
    its diagonal is read as 0 (a warning names a nonzero one: see the module docstring)."""
    m = read_square_csv(path, n, "latency_file", "one-way latencies in ms (row i: from node "
                        "i to each node j)", _valid_latency,
                        "a latency: use a finite number of milliseconds >= 0")
    diag = np.diagonal(m)
    if diag.any():
        import warnings

        i = int(np.flatnonzero(diag)[0])
        warnings.warn(f"latency_file={path!r}: the diagonal (a node to itself) is ignored, read "
                      f"as 0: no message goes from a node to itself (node {i}: "
                      f"{diag[i]:g} ms)", stacklevel=2)
        m = m.copy()
        np.fill_diagonal(m, 0.0)
        m.flags.writeable = False
    return m


def read_square_csv(path: str, n: int, field: str, what: str, valid, not_valid: str
                    ) -> np.ndarray:
    """An n x n float64 matrix (read-only) from a CSV file of n rows of n comma-separated
    numbers (`#` comments, blank lines skipped); every error names the file, line and column.
    `valid(v)` checks a finite cell; `not_valid` completes "'cell' is not ..." in the error.
    Cached on the file's contents (`file_digest`): a file rewritten at the same path is read
    again."""
    if not os.path.isfile(path):
        raise ConfigError(f"{field}={path!r} does not exist: give a CSV of {n} rows of {n} "
                          f"{what}")
    return _read_square(path, file_digest(path), n, field, valid, not_valid)


@functools.lru_cache(maxsize=16)
def _read_square(path: str, _digest: str, n: int, field: str, valid, not_valid: str
                 ) -> np.ndarray:
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
    out = np.asarray(rows, np.float64)
    out.flags.writeable = False   # cached: shared by every caller
    return out


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
