"""divjax: asynchronous decentralized learning, n nodes as one array program on a simulated clock."""

from divjax.algorithms import ALGORITHMS, Algorithm
from divjax.config import ConfigError, HParams, SimConfig, default_hparams, product
from divjax.tasks.registry import TASKS, make_task
from divjax.engine.sim import SimulationError, check_state, make_engine, make_run
from divjax.engine.sizing import resolve
from divjax.tasks.base import Task
from divjax.engine.xla_options import compiler_options, jit

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS", "Algorithm", "ConfigError", "HParams", "SimConfig", "SimulationError", "TASKS",
    "Task", "check_state", "compiler_options", "default_hparams", "jit", "make_engine", "make_run",
    "make_task", "product", "resolve",
]
