"""The public API: every name users may import from `divjax`, in one list (`__all__`).

    from divjax import SimConfig, default_hparams, jit, make_run
    run = jit(make_run(SimConfig(n_nodes=16)))
    state, metrics = run(jax.random.key(0), default_hparams(SimConfig(n_nodes=16)))

`divjax/__init__.py` re-exports exactly these names. Anything else is internal and may move:
the subpackages (`divjax/engine/`, `divjax/network/`, `divjax/tasks/`, `divjax/reference/`,
`divjax/frontends/`; docs/concepts/architecture.md) are the implementation. Besides the names
below, users import from the modules in `PUBLIC_MODULES` (a sweep's function, the conformance
checks, plug-ins, statistics) and call the `divjax` command (`divjax.frontends.cli.main`).

No name here equals a former top-level module's (`sweep`, `stats`, `presets`, ...): the layout
script (issue 32) reads such a name, imported from `divjax`, as that module.
"""

from divjax import plugins, testing
from divjax.algorithms import ALGORITHMS, make_algorithm
from divjax.algorithms.base import Algorithm, Context, average_with_inbox, sample_peers
from divjax.config import (ConfigError, HParams, SimConfig, default_hparams, download_limited,
                           product)
from divjax.engine.sharding import fetch, initialize_distributed, make_sharded_run, node_mesh
from divjax.engine.sim import SimulationError, check_state, make_engine, make_run, simulate
from divjax.engine.sizing import resolve
from divjax.engine.state import ERR_RING_TOO_SHORT, flag_error
from divjax.engine.xla_options import compiler_options, jit
from divjax.network.compute_schedule import end_tick, has_offline, is_offline, stop_tick
from divjax.network.links import message_lost, schedule_replaced_queue, units_at
from divjax.network.messages import collect, push
from divjax.tasks.base import Task, classification_task
from divjax.tasks.registry import TASKS, make_task
from divjax.testing import ConformanceError, check_algorithm

# Modules whose documented functions are public too (docs/api.md documents them).
PUBLIC_MODULES = (
    "divjax.frontends.sweep",    # sweep(cfg, grid, seeds): a grid x seeds as one vmapped program
    "divjax.testing",            # check_algorithm: the conformance checks any algorithm passes
    "divjax.plugins",            # algorithms and tasks named by import path (MODULE:ATTR)
    "divjax.frontends.stats",    # intervals, verdicts and plateaus of seeded comparisons
)

__all__ = [
    # configure and run
    "SimConfig", "HParams", "ConfigError", "default_hparams", "product", "resolve",
    "make_run", "make_engine", "simulate", "check_state", "SimulationError", "jit",
    "compiler_options",
    # several devices or processes
    "make_sharded_run", "node_mesh", "fetch", "initialize_distributed",
    # tasks
    "Task", "TASKS", "make_task", "classification_task",
    # algorithms, and the building blocks of your own
    "Algorithm", "Context", "ALGORITHMS", "make_algorithm", "sample_peers", "average_with_inbox",
    "push", "collect", "schedule_replaced_queue", "message_lost", "units_at", "end_tick",
    "stop_tick", "is_offline", "has_offline", "flag_error", "ERR_RING_TOO_SHORT",
    "download_limited",
    # checks and plug-ins
    "testing", "check_algorithm", "ConformanceError", "plugins",
]
