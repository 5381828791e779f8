"""Your own Flax model on your own numpy arrays, as a divjax task (a plug-in by import path).

    divjax run   --task examples/own_model_task.py:make_task --algorithm divshare
    divjax sweep --task examples/own_model_task.py:make_task --grid lr=0.02,0.1,0.5 --seeds 2

`make_task(cfg)` is all divjax needs: it receives the run's SimConfig (n_nodes, batch_size, ...)
and returns a `divjax.Task`. Here the data are two interleaved spirals made with numpy (replace
`spirals` by loading your own arrays) and the model is a small Flax MLP.
"""

import flax.linen as nn
import numpy as np

from divjax.tasks.base import classification_task


class MLP(nn.Module):
    hidden: int = 32
    classes: int = 2

    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(self.hidden)(x))
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(self.classes)(x)


def spirals(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals in 2-D: inputs (count, 2) float32, labels (count,) int32."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, count)
    r = rng.uniform(0.1, 1.0, count)
    angle = 3 * np.pi * r + np.pi * label
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], 1) + 0.03 * rng.normal(size=(count, 2))
    return x.astype(np.float32), label.astype(np.int32)


def make_task(cfg):
    x_train, y_train = spirals(2000, seed=cfg.data_seed)
    x_test, y_test = spirals(500, seed=cfg.data_seed + 1)
    return classification_task("spirals-mlp", MLP(), x_train, y_train, x_test, y_test, cfg,
                               seed=cfg.data_seed)
