"""Named configurations: plain functions returning a SimConfig (`--preset NAME`)."""

from __future__ import annotations

from typing import Callable

from divjax.config import ConfigError, SimConfig


def synthetic_small() -> SimConfig:
    """16 nodes on the least-squares task, 3 communication stragglers; seconds on a CPU."""
    return SimConfig(task="synthetic", n_nodes=16, n_fragments=4, fanout=3, n_stragglers=3,
                     fast_mbps=0.05, straggler_mbps=(0.005,), compute_s=0.1, tick_s=0.005,
                     duration_s=10.0, eval_every_s=0.5, local_steps=4, batch_size=8, lr=0.05)


PRESETS: dict[str, Callable[[], SimConfig]] = {
    "synthetic-small": synthetic_small,
}

DEFAULT_PRESET = "movielens-default"  # embedded MovieLens: a real run offline


def register_preset(name: str, fn: Callable[[], SimConfig]) -> None:
    PRESETS[name] = fn


def get_preset(name: str) -> SimConfig:
    _load_data_presets()
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is unknown: choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def _load_data_presets() -> None:
    import importlib
    import importlib.util

    if importlib.util.find_spec("divjax.data") is not None:
        importlib.import_module("divjax.data")  # registers the real-data presets
