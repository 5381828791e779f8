"""One model as a flat `(K, F)` array in fragment order, and the fixed fragment partition.

The partition follows the DivShare authors' code (paper.md): every parameter tensor is permuted
on its own (one permutation stream from a seed that every node shares), cut into K parts of
floor(size / K) coordinates (the last part takes the remainder), and fragment k is part k of every
tensor, concatenated. Inside a fragment the coordinates sit in their raveled order (which
coordinates a fragment holds is the authors' rule; their order inside it is ours): the
coordinates of one model row that share a fragment are then neighbours, so a sparse step
(matrix factorisation) touches a few cache lines per row, not one per coordinate (0.40 ->
0.32 ms per step of 60 nodes in a throwaway comparison). Fragments are padded to the largest
one (F); padding coordinates are zero forever, never trained and never counted in message
sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from divjax.config import ConfigError

BYTES_PER_PARAM = 4  # float32 on the wire
# Which (K, F) array layout `make_layout` builds; checkpoints record it, and a checkpoint of
# another layout is refused (its (K, F) arrays would put coordinates in the wrong places).
LAYOUT_VERSION = "fragments-sorted-2"


@dataclass(frozen=True, eq=False)
class FragmentLayout:
    """Where each coordinate of the raveled model lives in the `(K, F)` fragment array."""

    K: int                       # number of fragments (Omega)
    F: int                       # padded fragment length
    D: int                       # number of real parameters
    position: np.ndarray         # (D,) int32: flat index into K*F of raveled coordinate d
    fragment_sizes: np.ndarray   # (K,) int64: real coordinates in each fragment
    unravel_flat: Callable       # (D,) -> pytree of one model

    @property
    def fragment_bytes(self) -> np.ndarray:
        """(K,) bytes on the wire of each fragment."""
        return self.fragment_sizes * BYTES_PER_PARAM

    def unflatten(self, params_kf: jax.Array) -> Any:
        """(K, F) -> model pytree (a gather; its gradient is a scatter-add back)."""
        return self.unravel_flat(params_kf.reshape(-1)[self.position])

    def flatten(self, tree: Any) -> jax.Array:
        """model pytree -> (K, F), padding zero."""
        flat, _ = ravel_pytree(tree)
        out = jnp.zeros(self.K * self.F, flat.dtype).at[self.position].set(flat)
        return out.reshape(self.K, self.F)

    def real_mask(self) -> np.ndarray:
        """(K, F) bool: True where a real (non-padding) coordinate sits."""
        mask = np.zeros(self.K * self.F, bool)
        mask[self.position] = True
        return mask.reshape(self.K, self.F)


def make_layout(template: Any, n_fragments: int, seed: int) -> FragmentLayout:
    """Build the fixed, shared partition of a model with the structure of `template`."""
    flat, unravel = ravel_pytree(template)
    D = int(flat.size)
    K = int(n_fragments)
    if K < 1 or K > D:
        raise ConfigError(
            f"n_fragments={K} is invalid: Omega must be between 1 and the model's parameter "
            f"count D={D}; lower --n-fragments")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(K)]
    offset = 0
    for leaf in jax.tree_util.tree_leaves(template):
        size = int(np.size(leaf))
        perm = rng.permutation(size) + offset
        base = size // K
        for k in range(K):
            stop = (k + 1) * base if k < K - 1 else size
            parts[k].append(perm[k * base:stop])
        offset += size
    fragments = [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]
    sizes = np.array([f.size for f in fragments], np.int64)
    F = int(sizes.max())
    position = np.empty(D, np.int64)
    for k, coords in enumerate(fragments):
        position[coords] = k * F + np.arange(coords.size)
    return FragmentLayout(K=K, F=F, D=D, position=position.astype(np.int32),
                          fragment_sizes=sizes, unravel_flat=unravel)
