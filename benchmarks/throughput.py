"""Throughput of the three tasks (synthetic, MovieLens MF, CIFAR-10 CNN): node-iterations/s,
simulated seconds per wall second, ratios (a) (b) (c) and memory. Same code as
benchmarks/engine.py (`--suite throughput`); see its docstring for how each figure is measured.

    python benchmarks/throughput.py [--mf-ns 16 256] [--cnn-ns 16 64] [--big-mf 4096]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import main  # noqa: E402

if __name__ == "__main__":
    main(["--suite", "throughput", *sys.argv[1:]])
