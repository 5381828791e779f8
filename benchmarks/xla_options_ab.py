"""Do divjax's XLA options cost the least-squares task time? An A/B of the engine's time per
node-iteration with divjax's XLA options (as `divjax run` compiles) and with XLA's defaults
(`DIVJAX_XLA_DEFAULTS=1`), each in a fresh process (`scaling.py --one`), alternating A and B
--pairs times so that the shared host's drift falls on both alike.

Each process also times the plain single jitted call (no network, XLA's defaults: it never uses
divjax's options) right after the engine, so engine / plain is measured in one process. The
verdict is on the paired differences of engine / plain (B - A per pair): their mean with a 95%
t interval; "holds" only when the interval excludes zero.

    python benchmarks/xla_options_ab.py [--n 16384] [--algorithm divshare] [--pairs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
RESULTS = HERE / "results"
# two-sided 95% t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228}


def one(n: int, algorithm: str, xla_defaults: bool) -> dict:
    """One `scaling.py --one` process; its row (engine and plain times)."""
    env = dict(os.environ)
    env.pop("DIVJAX_XLA_DEFAULTS", None)
    if xla_defaults:
        env["DIVJAX_XLA_DEFAULTS"] = "1"
    cmd = [sys.executable, str(HERE / "scaling.py"), "--one", str(n), "--algorithms", algorithm,
           "--tasks", "synthetic", "--eval-max", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent,
                          check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"xla_defaults": xla_defaults, "us_per_node_iter": row["us_per_node_iter"],
            "plain_us_per_node_iter": row["plain_us_per_node_iter"],
            "ratio": row["us_per_node_iter"] / row["plain_us_per_node_iter"],
            "compile_s": row["compile_s"]}


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the paired differences and its 95% t interval."""
    m = statistics.mean(diffs)
    if len(diffs) < 2:
        return m, float("-inf"), float("inf")
    half = T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return m, m - half, m + half


def verdict(low: float, high: float) -> str:
    if low > 0:
        return "holds: XLA's defaults are slower than divjax's options for this task"
    if high < 0:
        return "holds: divjax's options are slower than XLA's defaults for this task"
    return "not established: the interval includes no difference"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16384)
    p.add_argument("--algorithm", default="divshare")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--shared", default="", help="a note on other load on the machine")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    from bench_common import run_meta, write_result

    meta = run_meta("xla_options_ab.py", argv if argv is not None else sys.argv[1:],
                    shared=args.shared, cpus=os.cpu_count())
    pairs = []
    for i in range(args.pairs):   # A then B, then B then A: the order alternates too
        first = bool(i % 2)
        a, b = one(args.n, args.algorithm, first), one(args.n, args.algorithm, not first)
        opts, defaults = (b, a) if first else (a, b)
        pairs.append({"divjax_options": opts, "xla_defaults": defaults})
        print(json.dumps(pairs[-1]), flush=True)
    diffs = [q["xla_defaults"]["ratio"] - q["divjax_options"]["ratio"] for q in pairs]
    m, lo, hi = interval(diffs)
    out = {"meta": meta, "n": args.n, "algorithm": args.algorithm, "pairs": pairs,
           "ratio_difference": {"mean": m, "low95": lo, "high95": hi},
           "verdict": verdict(lo, hi)}
    name = f"xla-options-ab-{meta['device'].lower()}-{meta['date']}{args.tag}"
    write_result(RESULTS / f"{name}.json", out)
    lines = [f"# divjax's XLA options vs XLA's defaults ({meta['date']}, commit {meta['commit']})",
             "", f"{args.algorithm}, least squares, n = {args.n:,}; engine / plain single call "
             "in each process", "", "| pair | divjax options: us / node-iter (engine / plain) | "
             "XLA defaults: us / node-iter (engine / plain) | difference of ratios |",
             "|---|---|---|---|"]
    for i, (q, d) in enumerate(zip(pairs, diffs)):
        o, x = q["divjax_options"], q["xla_defaults"]
        lines.append(f"| {i + 1} | {o['us_per_node_iter']:,.1f} ({o['ratio']:.3f}) | "
                     f"{x['us_per_node_iter']:,.1f} ({x['ratio']:.3f}) | {d:+.3f} |")
    lines += ["", f"Mean difference (XLA defaults - divjax options) of engine / plain: {m:+.3f}, "
              f"95% t interval [{lo:+.3f}, {hi:+.3f}] over {len(diffs)} pairs: {out['verdict']}.",
              "", f"Machine: {meta['platform']}, {meta['cpus']} CPUs"
              f"{'; shared: ' + args.shared if args.shared else ''}. Command: `{meta['command']}`"]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
