"""Local-only training: every node trains on its own data and never communicates (a baseline)."""

from __future__ import annotations

from divjax.algorithms.base import Algorithm, Context
from divjax.config import SimConfig


def make_local_only(cfg: SimConfig) -> Algorithm:
    del cfg  # nothing to configure

    def init(ctx: Context, params):
        del ctx, params  # no state
        return ()

    def iteration_end(ctx: Context, state, node, valid, trained, keys, t):
        del ctx, node, valid, keys, t  # nothing is sent or received
        return state, trained

    def longest_delay(cfg, table) -> int:
        del cfg, table  # no message is ever in flight
        return 1

    return Algorithm("local", init, iteration_end, longest_delay=longest_delay,
                     keeps_nonfinite=True)
