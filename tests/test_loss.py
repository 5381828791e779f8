"""Messages lost on the way (issue 18): each sent message is lost with probability loss_rate,
drawn from the run's key; the engine equals the reference simulators, parameters and counters
(lost ones included), and the "latest" inbox rule never lets a lost message replace one."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_equals_reference, reference_of, run_checked

from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.sim import make_run


def lossy_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     loss_rate=0.3, same_init=False)
    return base.replace(**changes)


def uneven_hparams(cfg):
    """Fast senders and a slow receiver: copies pile up in one inbox window, so replacements
    (and lost would-be replacements) happen."""
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.27, 0.07], jnp.float32),
        upload_bps=jnp.array([1e5, 3e4, 1e4, 4e3, 1e3], jnp.float32))


@pytest.mark.parametrize("algorithm,delivery", [("divshare", "receiver_iteration"),
                                                ("divshare", "arrival_tick"),
                                                ("swift", "receiver_iteration")])
def test_loss__engine_equals_reference_simulator(algorithm, delivery):
    cfg = lossy_config(algorithm=algorithm, delivery=delivery)
    hp = uneven_hparams(cfg)
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    np.testing.assert_array_equal(np.asarray(state.counters.lost), ref.lost)
    # the engine counts a replaced full model (Swift) once per fragment, as it counts deliveries
    per = 1 if algorithm == "divshare" else run.engine.layout.K
    assert int(state.counters.replaced.sum()) == per * ref.replaced
    assert ref.lost.sum() > 0 and metrics["msgs_lost"][-1] == ref.lost.sum()
    assert 0.15 < ref.lost.sum() / ref.sent.sum() < 0.45       # about loss_rate of what left


def test_loss__a_rate_that_loses_nothing_changes_nothing():
    """loss_rate 1e-9 (the lossy code path, nothing lost) gives the bits of loss_rate 0."""
    cfg = lossy_config(loss_rate=0.0)
    hp = uneven_hparams(cfg)
    _, base, _ = run_checked(cfg, hp)
    _, tiny, _ = run_checked(cfg.replace(loss_rate=1e-9), hp)
    np.testing.assert_array_equal(np.asarray(tiny.params), np.asarray(base.params))
    assert int(tiny.counters.lost.sum()) == 0


def test_loss__bad_values_and_unsupported_algorithms_are_refused():
    for value in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match="loss_rate"):
            lossy_config(loss_rate=value)
    for algorithm in ("adpsgd", "dpsgd", "epidemic"):
        with pytest.raises(ConfigError, match="not modelled for"):
            make_run(lossy_config(algorithm=algorithm, fanout=2))
