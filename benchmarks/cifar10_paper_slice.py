"""`cifar10-paper` itself, evaluation included: a measured slice and its extrapolation (issue 20,
target 4).

`cnn_training.py` and `cnn_engine_steps.py` extrapolate the paper's CIFAR-10 run from the
engine's training rate alone. Here the preset runs as a user runs it (60 nodes, 7 stragglers,
the paper's network, 128 local steps of batch 8, compute 5 s per iteration, an evaluation every
20 simulated s: each node's model on 1,000 test images and the average model on 10,000), for
`--intervals` eval intervals after a warm-up interval, in one process beside the machine's matmul
rate:
  interval     wall s of one eval interval (`advance`: the ticks, then the evaluation), each
  evaluation   wall s of the evaluation alone (`evaluate` on the same state), timed after it
  800 s        the paper's 40 intervals at the median interval: hours on this machine
  allowed      the same work at the matmul rate: training samples x GN-LeNet's forward+backward
               FLOPs + evaluated images x its forward FLOPs, at the measured GFLOP/s

    python benchmarks/cifar10_paper_slice.py --data-dir ../shared/data [--intervals 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np
from bench_common import run_meta, write_result
from cnn_training import RESULTS, gnlenet_flops, matmul_gflops

from divjax.config import default_hparams
from divjax.frontends.presets import get_preset
from divjax.engine.sim import check_state, make_engine
from divjax.engine.xla_options import jit as divjax_jit


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data", help="folder with cifar10.npz")
    ap.add_argument("--intervals", type=int, default=2, help="timed eval intervals (20 s each)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    paper = get_preset("cifar10-paper")
    cfg = paper.replace(data_dir=args.data_dir,
                        duration_s=paper.eval_every_s * (args.intervals + 1))
    engine = make_engine(cfg)
    hp = default_hparams(engine.cfg)
    info = engine.task.info
    mm = matmul_gflops(repeats=10)

    state = divjax_jit(engine.init)(jax.random.key(0), hp)
    t0 = time.perf_counter()
    advance = divjax_jit(engine.advance, donate_argnums=0).lower(state, hp).compile()
    evaluate = divjax_jit(engine.evaluate).lower(state).compile()
    compile_s = time.perf_counter() - t0
    state, m = advance(state, hp)                              # warm-up: the first interval
    jax.block_until_ready(m)
    intervals, evaluations, samples = [], [], []
    for i in range(args.intervals):
        before = int(np.sum(np.asarray(state.iterations)))
        t0 = time.perf_counter()
        state, m = advance(state, hp)
        jax.block_until_ready(m)
        intervals.append(time.perf_counter() - t0)
        samples.append((int(np.sum(np.asarray(state.iterations))) - before)
                       * cfg.local_steps * cfg.batch_size)
        t0 = time.perf_counter()
        jax.block_until_ready(evaluate(state))
        evaluations.append(time.perf_counter() - t0)
        print(f"interval {i + 1}/{args.intervals}: {intervals[-1]:.1f} s wall "
              f"({samples[-1]} training samples; evaluation alone {evaluations[-1]:.1f} s)",
              flush=True)
    check_state(state, engine.cfg)

    n_intervals = round(paper.duration_s / paper.eval_every_s)
    per_interval = float(np.median(intervals))
    eval_images = cfg.n_nodes * info["eval_node_images"] + info["eval_global_images"]
    flops = gnlenet_flops()
    train_samples = float(np.mean(samples))
    allowed_s = (train_samples * flops["total"] + eval_images * flops["forward"]) \
        / (mm["gflops"] * 1e9)
    out = {"meta": run_meta("cifar10_paper_slice.py", argv),
           "preset": "cifar10-paper", "n_nodes": cfg.n_nodes, "local_steps": cfg.local_steps,
           "batch_size": cfg.batch_size, "eval_every_s": cfg.eval_every_s,
           "eval_images_per_interval": eval_images, "compile_s": compile_s,
           "matmul_gflops": mm["gflops"], "interval_wall_s": intervals,
           "evaluation_wall_s": evaluations, "training_samples_per_interval": samples,
           "samples_per_s_with_evaluation": train_samples / per_interval,
           "samples_per_s_training_only": train_samples / (per_interval
                                                           - float(np.median(evaluations))),
           "paper_intervals": n_intervals,
           "paper_wall_h": per_interval * n_intervals / 3600,
           "paper_evaluation_share": float(np.median(evaluations)) / per_interval,
           "paper_wall_h_at_matmul_rate": allowed_s * n_intervals / 3600,
           "interval_over_matmul_allowed": allowed_s / per_interval}
    print(f"cifar10-paper: {per_interval:.1f} s wall per 20-s interval (median of "
          f"{args.intervals}), evaluation {100 * out['paper_evaluation_share']:.0f}% of it; "
          f"{out['samples_per_s_with_evaluation']:.0f} training samples/s with evaluation, "
          f"{out['samples_per_s_training_only']:.0f} without")
    print(f"800 simulated s: {out['paper_wall_h']:.2f} h on this machine; "
          f"{out['paper_wall_h_at_matmul_rate']:.2f} h at the matmul rate "
          f"({mm['gflops']:.0f} GFLOP/s): {out['interval_over_matmul_allowed']:.2f} of it")
    write_result(Path(args.out) / f"cifar10_paper_slice-{jax.default_backend()}-"
                                  f"{out['meta']['date']}.json", out)
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
