"""Learning problems: the `Task` contract, the task registry and the models.

`base` (`Task`, `classification_task`, the synthetic task), `registry` (`TASKS`, `make_task`:
every name `--task` takes), `models` (Flax models of the real-data tasks) and `conv` (layers
with fast backward passes). The data behind the real tasks lives in `divjax.data`.
"""
