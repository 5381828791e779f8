"""Algorithms and tasks that live outside divjax, named by import path.

    divjax run --algorithm my_pkg.my_mod:make_algo --task my_pkg.my_mod:make_task
    divjax run --algorithm examples/sgp.py:make_sgp            # a file path works too

A *spec* is `MODULE:ATTR` (a dotted module importable from the current directory or the Python
path) or `PATH.py:ATTR` (a file, loaded as a module of its own). For an algorithm, ATTR is a
factory `make_algo(cfg: SimConfig) -> divjax.Algorithm`; for a task, a builder
`make_task(cfg: SimConfig) -> divjax.Task`, exactly like the built-in ones
(`divjax.algorithms.ALGORITHMS`, `divjax.tasks.registry.TASKS`). A built-in name never contains a
colon, so the two cannot be confused.

A run records what code made it: `plugin_record(cfg)` gives, for each plug-in the config names,
the spec, the file it was loaded from and the sha256 of that file's source, written into the
run's config.json and the checkpoint fingerprint (a changed plug-in cannot resume an old run).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from divjax.config_checks import ConfigError


def is_plugin(name: str) -> bool:
    """True for an import-path spec (`MODULE:ATTR` or `PATH.py:ATTR`), False for a built-in."""
    return ":" in str(name)


def _split(spec: str, what: str) -> tuple[str, str]:
    module, _, attr = str(spec).rpartition(":")
    if not module or not attr or not attr.isidentifier():
        raise ConfigError(f"{what}={spec!r} is not an import path: write MODULE:ATTR "
                          f"(e.g. my_pkg.my_mod:make_{what}) or PATH.py:ATTR")
    return module, attr


def _import_module(module: str, what: str, spec: str):
    if module.endswith(".py"):
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"{what}={spec!r}: the file {path} does not exist")
        name = "divjax_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as e:
            del sys.modules[name]
            raise ConfigError(f"{what}={spec!r}: importing {path} failed: "
                              f"{type(e).__name__}: {e}") from e
        return mod
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))     # `python -m divjax.frontends.cli` from a project folder
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ConfigError(f"{what}={spec!r}: module {module!r} cannot be imported ({e}); run "
                          f"from the folder that holds it, add that folder to PYTHONPATH, or "
                          f"give a file path (PATH.py:ATTR)") from e
    except Exception as e:
        raise ConfigError(f"{what}={spec!r}: importing {module!r} failed: "
                          f"{type(e).__name__}: {e}") from e


def load(spec: str, what: str) -> Callable:
    """The callable named by `spec`; ConfigError naming the spec when it cannot be had."""
    module, attr = _split(spec, what)
    mod = _import_module(module, what, spec)
    obj = getattr(mod, attr, None)
    if obj is None:
        names = sorted(n for n in vars(mod) if not n.startswith("_") and callable(vars(mod)[n]))
        raise ConfigError(f"{what}={spec!r}: {module!r} has no attribute {attr!r}; its "
                          f"callables are {names}")
    if not callable(obj):
        raise ConfigError(f"{what}={spec!r} is a {type(obj).__name__}, not a factory: it must be "
                          f"a function taking a SimConfig")
    return obj


def built(spec: str, what: str, factory: Callable, cfg, kind: type) -> Any:
    """factory(cfg), checked to be a `kind` (Algorithm or Task) with a clear error otherwise."""
    try:
        obj = factory(cfg)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{what}={spec!r}: calling it with the SimConfig failed: "
                          f"{type(e).__name__}: {e}") from e
    if not isinstance(obj, kind):
        raise ConfigError(f"{what}={spec!r} returned a {type(obj).__name__}, not a divjax."
                          f"{kind.__name__}: build one with divjax.{kind.__name__}(...)")
    return obj


def source_record(spec: str, what: str) -> dict:
    """{"spec", "file", "sha256"} of the file a plug-in's module was loaded from."""
    module, _ = _split(spec, what)
    mod = _import_module(module, what, spec)
    path = getattr(mod, "__file__", None)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    return {"spec": spec, "file": path, "sha256": digest}


def label(name: str) -> str:
    """A short, file-name-safe name: a built-in name as it is; for a spec, the module's (or
    file's) last component and the attribute, e.g. "prioritized_divshare.make_prioritized"."""
    if not is_plugin(name):
        return name
    module, _, attr = str(name).rpartition(":")
    stem = Path(module).stem if module.endswith(".py") else module.rpartition(".")[2]
    return f"{stem}.{attr}"


def plugin_record(cfg) -> dict:
    """{"algorithm": source_record, "task": source_record} for the plug-ins `cfg` names."""
    return {what: source_record(getattr(cfg, what), what) for what in ("algorithm", "task")
            if is_plugin(getattr(cfg, what))}
