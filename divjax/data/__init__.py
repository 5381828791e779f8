"""Real data: CIFAR-10 and MovieLens, loaded once, partitioned as the DivShare authors do.

One module per concern, each importing only the ones above it:

    cifar10_files    CIFAR-10 local copies (npz, binary records, python pickles, tar archives)
    movielens_files  MovieLens local copies (ratings.csv, u.data) and the embedded copy
    sources          load_cifar10 / load_movielens: local copy, embedded copy or TFDS
    partitions       kshard / iid / Dirichlet, MovieLens user blocks, padded index tables
    cifar10          the CIFAR-10 task (GN-LeNet)
    movielens        the MovieLens task (matrix factorisation), incl. synthetic ratings

Task names and presets are listed in `divjax.tasks.registry` and `divjax.frontends.presets`; nothing here
registers anything. The names below are re-exported for convenience.
"""

from divjax.data.cifar10 import make_cifar10_task
from divjax.data.cifar10_files import CifarArrays
from divjax.data.movielens import make_movielens_task, synthetic_ratings
from divjax.data.movielens_files import Ratings
from divjax.data.partitions import (
    MovieLensSplit,
    chunked_sums,
    padded_table,
    partition_labels,
    split_movielens,
)
from divjax.data.sources import load_cifar10, load_movielens

__all__ = [
    "CifarArrays", "MovieLensSplit", "Ratings", "chunked_sums", "load_cifar10", "load_movielens",
    "make_cifar10_task", "make_movielens_task", "padded_table", "partition_labels",
    "split_movielens", "synthetic_ratings",
]
