"""The DivShare reproduction as a seeded, per-cell, resumable grid (issues 19, 31).

The code is the package `divjax.reproduction`; this file is its command line.

A cell is (task, regime, algorithm, seed). Each cell writes one JSON file,
`<out>/cells/<task>/<regime>/<algorithm>-seed<k>.json` (its config, the curve of every metric
against simulated time, the message counters, wall time, the git commit), and is skipped when
that file exists, so the grid fills up over several invocations. The cells of one algorithm
and one shape run as one vmapped program (`divjax.frontends.sweep.run_points`: seeds x regime points that
only change HParams, such as the share of stragglers). `docs/reproduction.md` and its figures
are regenerated from whatever cells exist; missing cells are listed there.

Parts (run in this order by default; CPU time is the constraint):
  main   MovieLens, 60 nodes, the paper's network, every algorithm, 3 seeds, one regime
         (compute time per iteration 1.5x the time a fast node needs to send its 6 models).
  map    MovieLens regime map: compute time per iteration 0.1x ... 10x that send time (5
         log-spaced values) x stragglers (0, 7, 30 of 60); DivShare, AD-PSGD, Swift; 3 seeds.
  cifar  CIFAR-10 at 60 nodes, shortened (see `cifar_config`); 3 seeds.
  downloads  the main setting with the testbed's download limits (DivShare, AD-PSGD, Swift;
         issue 18).
  cifar-downloads  the CIFAR-10 setting with them (the same three).
  omega, omega-map  the Omega ablation (DivShare at Omega 1-64 and Swift) on the main setting
         and in a saturated and an unsaturated map regime.
  cifar-map  CIFAR-10 regime map: compute 0.1x and 10x the send time x 0 and 7 stragglers.
  tune   the main setting on a 10% validation split, DivShare / Swift / AD-PSGD / local-only
         at lr 0.05-0.4 (HParams points of one program), 3 seeds.
  pilot  seed 99 of DivShare and local-only as tuned: the tuned comparison's targets.
  tuned  each algorithm at its chosen rate (divjax.reproduction.tuning.TUNED_LR) on the test
         set, run longer, to a plateau where memory allows.
  tuned-long  the tuned DivShare run to 1,200 iterations: its plateau (tuning.TUNED_LONG_ITERS).

Seed k is `jax.random.key(k)` (model init, mini-batches, routes); the data partition is fixed
(`data_seed` 0) in every cell. Statistics (one place, `divjax.frontends.stats`, tested against
hand-computed cases in tests/test_stats.py): mean and 95% Student-t interval over seeds; time
to a FIXED target per seed (censored when never reached); DivShare vs a baseline paired by
seed; a direction verdict and, separately, where the paper's figure lies against the interval;
a one-sided plateau rule.

    python scripts/reproduction_grid.py --data-dir ../shared/data             # run / resume all
    python scripts/reproduction_grid.py --parts main --data-dir ../shared/data
    python scripts/reproduction_grid.py --doc-only                            # regenerate doc
    python scripts/reproduction_grid.py --rerun-dirty     # rerun cells made with engine edits
    python scripts/reproduction_grid.py --scale paper --data-dir DATA         # GPU-sized
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this checkout's divjax (the one whose commit the cells record), not an installed copy
sys.path.insert(0, str(ROOT))

if __name__ == "__main__":
    import jax

    from divjax.reproduction.cli import main

    # reruns of the grid (same programs) skip most compilation
    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "divjax-jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    sys.exit(0 if main() is not None else 1)
