"""Registry of decentralized learning algorithms: name -> factory(SimConfig) -> Algorithm."""

from __future__ import annotations

from typing import Callable

from divjax.algorithms.base import Algorithm, Context
from divjax.algorithms.divshare import divshare_routes, make_divshare
from divjax.config import SimConfig

ALGORITHMS: dict[str, Callable[[SimConfig], Algorithm]] = {
    "divshare": make_divshare,
}

__all__ = ["ALGORITHMS", "Algorithm", "Context", "divshare_routes", "make_divshare"]
