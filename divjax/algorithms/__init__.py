"""Registry of decentralized learning algorithms: name -> factory(SimConfig) -> Algorithm."""

from __future__ import annotations

from collections.abc import Callable

from divjax.algorithms.adpsgd import make_adpsgd
from divjax.algorithms.base import Algorithm, Context
from divjax.algorithms.divshare import divshare_routes, make_divshare
from divjax.algorithms.dpsgd import make_dpsgd
from divjax.algorithms.epidemic import make_epidemic
from divjax.algorithms.local_only import make_local_only
from divjax.algorithms.swift import make_swift
from divjax.config import ConfigError, SimConfig

ALGORITHMS: dict[str, Callable[[SimConfig], Algorithm]] = {
    "divshare": make_divshare,
    "adpsgd": make_adpsgd,
    "swift": make_swift,
    "dpsgd": make_dpsgd,
    "epidemic": make_epidemic,
    "local": make_local_only,
}



def make_algorithm(cfg: SimConfig) -> Algorithm:
    """The Algorithm `cfg.algorithm` names: a built-in name (`ALGORITHMS`) or a plug-in's
    import path `MODULE:ATTR` / `PATH.py:ATTR` (`divjax.plugins`)."""
    from divjax import plugins

    name = cfg.algorithm
    if plugins.is_plugin(name):
        return plugins.built(name, "algorithm", plugins.load(name, "algorithm"), cfg, Algorithm)
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm={name!r} is unknown: choose one of {sorted(ALGORITHMS)}, "
                          f"or name your own factory as MODULE:ATTR (divjax.plugins)")
    return ALGORITHMS[name](cfg)


__all__ = ["ALGORITHMS", "Algorithm", "Context", "divshare_routes", "make_adpsgd",
           "make_algorithm", "make_divshare", "make_dpsgd", "make_epidemic", "make_local_only",
           "make_swift"]
