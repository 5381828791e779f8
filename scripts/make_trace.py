"""Write a small synthetic trace (format: divjax/network/traces.py) for `divjax run --trace FILE`.

Every node starts online at time 0 with a compute time drawn from `--compute` (seconds); then,
every `--step` seconds, each node independently changes state with probability `--change`: it
goes offline with probability `--offline` (when online; an offline node always comes back at
its next change) and draws a new compute time. A node's bandwidth is constant (time-varying
bandwidth is not modelled yet): the last `--stragglers` nodes upload and download at
`--slow-mbps`, the others at `--fast-mbps`. Seeded: the same flags write the same file.

    python scripts/make_trace.py --out tests/data/trace_tiny.csv

(tests/data/trace_tiny.csv, which the tests use, is this command's output with the defaults;
tests/test_traces.py checks that it still is.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make_trace(n: int = 5, duration: float = 1.5, step: float = 0.2, change: float = 0.6,
               offline: float = 0.35, compute: tuple = (0.05, 0.08, 0.1, 0.13, 0.2),
               fast_mbps: float = 0.8, slow_mbps: float = 0.03, stragglers: int = 2,
               seed: int = 0) -> str:
    """The trace's text (times and compute times rounded to 0.01 s, whole ticks of 10 ms)."""
    rng = np.random.default_rng(seed)
    mbps = [slow_mbps if i >= n - stragglers else fast_mbps for i in range(n)]
    lines = [f"# divjax trace: make_trace.py n={n} duration={duration} step={step} "
             f"change={change} offline={offline} seed={seed}",
             "time_s,node,compute_s,online,upload_mbps,download_mbps"]
    online = [True] * n
    for k in range(int(round(duration / step)) + 1):
        t = round(k * step, 2)
        for i in range(n):
            if k and rng.random() >= change:
                continue
            online[i] = True if (k == 0 or not online[i]) else rng.random() >= offline
            c = compute[rng.integers(len(compute))]
            lines.append(f"{t:g},{i},{c:g},{int(online[i])},{mbps[i]:g},{mbps[i]:g}")
    return "\n".join(lines) + "\n"


def bad_args(a: argparse.Namespace) -> str | None:
    """What is wrong with the flags (the flag, the value and the fix), or None."""
    import math

    def whole_ticks(x):   # times are written rounded to 0.01 s
        return abs(x * 100 - round(x * 100)) < 1e-6

    if a.n < 1:
        return f"--n {a.n}: give at least 1 node"
    for flag, v in (("--duration", a.duration), ("--step", a.step),
                    ("--fast-mbps", a.fast_mbps), ("--slow-mbps", a.slow_mbps)):
        if not (math.isfinite(v) and v > 0):
            return f"{flag} {v:g}: give a positive, finite number"
    if not whole_ticks(a.step):
        return (f"--step {a.step:g}: times are written in whole 0.01 s (10-ms ticks): give a "
                f"multiple of 0.01 s")
    for flag, v in (("--change", a.change), ("--offline", a.offline)):
        if not 0 <= v <= 1:
            return f"{flag} {v:g}: give a probability in [0, 1]"
    if not 0 <= a.stragglers <= a.n:
        return f"--stragglers {a.stragglers}: give 0..--n ({a.n})"
    return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=5, help="nodes")
    p.add_argument("--duration", type=float, default=1.5,
                   help="seconds the trace covers (its last change is at round(duration / "
                   "step) steps)")
    p.add_argument("--step", type=float, default=0.2, help="seconds between possible changes")
    p.add_argument("--change", type=float, default=0.6, help="probability a node changes")
    p.add_argument("--offline", type=float, default=0.35,
                   help="probability a change takes an online node offline")
    p.add_argument("--stragglers", type=int, default=2, help="the last nodes are slow")
    p.add_argument("--fast-mbps", type=float, default=0.8)
    p.add_argument("--slow-mbps", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    problem = bad_args(a)
    if problem:
        p.error(problem)   # one line "make_trace.py: error: ...", exit code 2
    if a.out.is_dir():
        p.error(f"--out {a.out} is a directory: give a file name, e.g. {a.out / 'trace.csv'}")
    try:
        a.out.parent.mkdir(parents=True, exist_ok=True)   # a new folder is created
    except OSError as e:
        p.error(f"--out {a.out}: cannot create its folder ({e.strerror or e})")
    a.out.write_text(make_trace(a.n, a.duration, a.step, a.change, a.offline,
                                fast_mbps=a.fast_mbps, slow_mbps=a.slow_mbps,
                                stragglers=a.stragglers, seed=a.seed))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
