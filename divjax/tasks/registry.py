"""The task registry: every task name `cfg.task` can take, and the builder it calls.

`TASKS` is written out below; nothing adds to it by being imported. A new task is one more
line here (its builder lives in `divjax.tasks.base` for synthetic problems, `divjax.data.<dataset>`
for real data). Presets (`--preset NAME`) are listed the same way in `divjax.frontends.presets.PRESETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from divjax.config import ConfigError, SimConfig
from divjax.data.cifar10 import make_cifar10_task
from divjax.data.movielens import make_movielens_task
from divjax.tasks.base import Task, make_synthetic_task

TASKS: dict[str, Callable[[SimConfig], Task]] = {
    "synthetic": make_synthetic_task,
    "cifar10": make_cifar10_task,
    "cifar10-iid": partial(make_cifar10_task, partition="iid", name="cifar10-iid"),
    **{f"cifar10-dirichlet{alpha:g}": partial(make_cifar10_task, partition="dirichlet",
                                              alpha=alpha, name=f"cifar10-dirichlet{alpha:g}")
       for alpha in (0.1, 0.5, 1.0)},
    # CPU-sized evaluation: 200 test images per node model, 2000 for the average model
    "cifar10-quick": partial(make_cifar10_task, eval_node=200, eval_global=2000,
                             name="cifar10-quick"),
    "movielens": make_movielens_task,
    "movielens-100k": partial(make_movielens_task, variant="100k", name="movielens-100k"),
    "movielens-synthetic": partial(make_movielens_task, variant="synthetic",
                                   name="movielens-synthetic"),
}


def make_task(cfg: SimConfig) -> Task:
    """Build the task named by `cfg.task`: a built-in name (`TASKS`) or a plug-in's import path
    `MODULE:ATTR` / `PATH.py:ATTR` (`divjax.plugins`)."""
    from divjax import plugins

    if plugins.is_plugin(cfg.task):
        task = plugins.built(cfg.task, "task", plugins.load(cfg.task, "task"), cfg, Task)
        return check_validation_split(cfg, task)
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task!r} is unknown: choose one of {sorted(TASKS)}, or "
                          f"name your own builder as MODULE:ATTR (divjax.plugins)")
    if cfg.validation_share > 0 and not cfg.task.startswith(VALIDATION_TASKS):
        raise ConfigError(_no_split(cfg))   # before any data is built
    return check_validation_split(cfg, TASKS[cfg.task](cfg))


# Task names whose builders hold out `cfg.validation_share` of every node's training samples.
VALIDATION_TASKS = ("movielens", "cifar10")


def _no_split(cfg: SimConfig) -> str:
    return (f"validation_share={cfg.validation_share:g}: task {cfg.task!r} has no validation "
            f"split (it would be evaluated on its test set as usual); use a movielens* or "
            f"cifar10* task, or validation_share 0")


def check_validation_split(cfg: SimConfig, task: Task) -> Task:
    """`task`, unless cfg.validation_share > 0 and the task does not say (info["evaluated_on"],
    as `divjax.data.partitions.evaluated_on` writes it) that it evaluates on a validation
    split: a plug-in task that ignores the share is refused, never silently tested."""
    on = str(task.info.get("evaluated_on", "")) if isinstance(task.info, dict) else ""
    if cfg.validation_share > 0 and not on.startswith("validation split"):
        raise ConfigError(_no_split(cfg) + "; a task of your own honours it by holding out "
                          "that share and saying so in info['evaluated_on']")
    return task
