"""GN-LeNet in the engine at the paper's 128 local steps per iteration, against one single step
and the matmul rate (issue 20, target 1), in one process.

`benchmarks/cnn_training.py` measures the engine with 8 local steps per iteration, so the
exchange and averaging of every iteration weigh 16x more there than in `cifar10-paper`. Here:
the matmul rate, GN-LeNet's FLOPs, and `bench_engine` (DivShare on CIFAR-10, 60 nodes, no
evaluation) with `--steps` local steps, each interval right after a single step compiled with
the same options (round by round, under the same load).

    python benchmarks/cnn_engine_steps.py --data-dir ../shared/data [--steps 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from bench_common import run_meta, write_result
from cnn_training import RESULTS, bench_engine, gnlenet_flops, matmul_gflops


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data", help="folder with cifar10.npz")
    ap.add_argument("--nodes", type=int, default=60)
    ap.add_argument("--steps", type=int, default=128, help="local steps per iteration")
    ap.add_argument("--rounds", type=int, default=3, help="timed engine intervals")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    mm = matmul_gflops(repeats=10)
    allowed = mm["gflops"] * 1e9 / gnlenet_flops()["total"]
    e = bench_engine(True, args.nodes, args.steps, args.rounds, args.data_dir,
                     single_between=True)
    ratios = [eng / single for single, eng in e["rounds"]]
    best_single = max(single for single, _ in e["rounds"])
    out = {"meta": run_meta("cnn_engine_steps.py", argv),
           "matmul_gflops": mm["gflops"], "matmul_allowed_samples_per_s": allowed,
           "engine": e, "engine_over_best_single": e["samples_per_s"] / best_single,
           "engine_over_single_rounds": ratios,
           "engine_over_single_rounds_median": float(np.median(ratios)),
           "engine_over_matmul_allowed": e["samples_per_s"] / allowed}
    print(f"matmul {mm['gflops']:.1f} GFLOP/s -> {allowed:.0f} samples/s allowed")
    print(f"engine, {args.nodes} nodes, {args.steps} local steps: {e['samples_per_s']:.0f} "
          f"samples/s (best interval)")
    print(f"single step (divjax's options) per round: {[round(s) for s, _ in e['rounds']]}")
    print(f"engine / single step per round {[round(x, 2) for x in ratios]}, median "
          f"{out['engine_over_single_rounds_median']:.2f}; engine / best single "
          f"{out['engine_over_best_single']:.2f}; engine / matmul-allowed "
          f"{out['engine_over_matmul_allowed']:.2f}")
    path = Path(args.out) / (f"cnn_engine_steps-{jax.default_backend()}-"
                             f"{out['meta']['date']}-steps{args.steps}.json")
    write_result(path, out)
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
