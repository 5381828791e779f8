"""The engine's NaN check reads the averaged models alone for the algorithms that declare
`keeps_nonfinite` (one pass over the models less per tick): a NaN in one trained coordinate must
still be caught at the same tick, on the same node, as by a check of the trained models too."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

import divjax
from divjax.algorithms import ALGORITHMS
from divjax.algorithms.base import average_with_inbox
from divjax.config import default_hparams
from divjax.engine.local import make_train_one
from divjax.engine.sim import make_run
from divjax.engine.state import ERR_NONFINITE
from divjax.tasks.base import make_synthetic_task

BAD_NODE = 1


def nan_once_trained_task(cfg):
    """The synthetic task, but node 1's trained model gets a NaN in one coordinate (fragment
    0) at every iteration end: nothing else in the run is non-finite."""
    base = make_synthetic_task(cfg)

    def make_local_train(cfg_, layout, tx):
        train = make_train_one(cfg_, base, layout, tx)

        def train_one(params, opt_state, key, node):
            params, opt_state = train(params, opt_state, key, node)
            poisoned = params.at[0, 0].set(jnp.nan)
            return jnp.where(node == BAD_NODE, poisoned, params), opt_state

        return train_one

    return base._replace(make_local_train=make_local_train)


@pytest.mark.parametrize("name", ["divshare", "swift", "adpsgd", "local"])
def test_nan_in_one_trained_coordinate__caught_at_the_same_tick_as_checking_trained(name):
    cfg = tiny_config(algorithm=name, duration_s=1.0)
    # node 1 computes 3x longer: by its first iteration end its inbox holds fragment 0 from
    # others, so an average that replaced own coordinates by what arrived would hide the NaN
    hp = default_hparams(cfg).replace(
        compute_s=jnp.array([0.1, 0.3, 0.1, 0.1, 0.1], jnp.float32))
    algo = ALGORITHMS[name](cfg)
    assert algo.keeps_nonfinite
    out = {}
    for keeps in (True, False):
        run = make_run(cfg, nan_once_trained_task(cfg), algo._replace(keeps_nonfinite=keeps), hp)
        state, _ = divjax.jit(run)(jax.random.key(0), hp)
        out[keeps] = (int(state.errors) & ERR_NONFINITE, int(state.first_error_node),
                      int(state.first_error_tick))
    assert out[True] == out[False]
    assert out[True][0] and out[True][1] == BAD_NODE
    assert out[True][2] == round(0.3 / cfg.tick_s)    # node 1's first iteration end


def test_average_with_inbox__a_nonfinite_own_coordinate_stays_nonfinite():
    own = jnp.array([[[jnp.nan, 1.0], [jnp.inf, -jnp.inf]]], jnp.float32)      # (1, K=2, F=2)
    for got in (0.0, 5.0, jnp.inf, -jnp.inf, jnp.nan, -3e38):
        for count in (0.0, 1.0, 7.0):
            out = average_with_inbox(own, jnp.full_like(own, got), jnp.full((1, 2), count))
            assert not np.isfinite(np.asarray(out)[0, 0, 0])
            assert not np.isfinite(np.asarray(out)[0, 1]).any()


@pytest.mark.parametrize("name", ["dpsgd", "epidemic"])
def test_synchronous_mixing_keeps_checking_the_trained_models(name):
    """D-PSGD and Epidemic Learning mix with weights that may leave a node's own model out."""
    assert not ALGORITHMS[name](tiny_config(algorithm=name)).keeps_nonfinite
