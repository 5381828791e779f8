"""Messages lost on the way (issue 18): each sent message is lost with probability loss_rate,
drawn from the run's key; the engine equals the reference simulators, parameters and counters
(lost ones included), and the "latest" inbox rule never lets a lost message replace one."""

import numpy as np
import pytest
from conftest import (
    assert_equals_reference,
    assert_lost_and_replaced_equal,
    reference_of,
    run_checked,
    uneven_hparams,
)

from divjax.config import ConfigError, SimConfig
from divjax.engine.sim import make_run


def lossy_config(**changes) -> SimConfig:
    base = SimConfig(n_nodes=5, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     loss_rate=0.3, same_init=False)
    return base.replace(**changes)




@pytest.mark.parametrize("algorithm,delivery", [("divshare", "receiver_iteration"),
                                                ("divshare", "arrival_tick"),
                                                ("swift", "receiver_iteration")])
def test_loss__engine_equals_reference_simulator(algorithm, delivery):
    cfg = lossy_config(algorithm=algorithm, delivery=delivery)
    hp = uneven_hparams(cfg)
    run, state, metrics = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    # the engine counts a replaced full model (Swift) once per fragment, as it counts deliveries
    assert_lost_and_replaced_equal(state, ref, 1 if algorithm == "divshare"
                                   else run.engine.layout.K)
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
    # every algorithm models loss now (baselines: tests/test_baseline_churn_loss.py)


def write_loss_file(tmp_path, p: np.ndarray) -> str:
    path = tmp_path / "loss.csv"
    path.write_text("# per-link loss probabilities, row = sender\n"
                    + "\n".join(",".join(f"{v:g}" for v in row) for row in p) + "\n")
    return str(path)


@pytest.mark.parametrize("delivery", ["receiver_iteration", "arrival_tick"])
def test_loss_file__per_link_loss_equals_reference_simulator(tmp_path, delivery):
    """Links from node 1 lose 70%, links to node 0 lose 40%, the rest nothing: engine ==
    reference, and the losses fall where the file puts them."""
    p = np.zeros((5, 5))
    p[1, :], p[:, 0] = 0.7, 0.4
    np.fill_diagonal(p, 0.0)
    cfg = lossy_config(loss_rate=0.0, loss_file=write_loss_file(tmp_path, p), delivery=delivery)
    hp = uneven_hparams(cfg)
    run, state, _ = run_checked(cfg, hp)
    ref = reference_of(run, hp)
    assert_equals_reference(state, ref)
    assert_lost_and_replaced_equal(state, ref)
    assert ref.lost[0] > 0 and ref.lost.sum() > ref.lost[0]   # to node 0, and from node 1


def test_loss_file__a_uniform_file_gives_the_bits_of_the_same_loss_rate(tmp_path):
    """Every link 0.3 in the file draws the same uniforms as --loss-rate 0.3."""
    cfg = lossy_config(loss_rate=0.3)
    hp = uneven_hparams(cfg)
    _, rate, _ = run_checked(cfg, hp)
    file_cfg = cfg.replace(loss_rate=0.0,
                           loss_file=write_loss_file(tmp_path, np.full((5, 5), 0.3)))
    _, per_link, _ = run_checked(file_cfg, hp)
    np.testing.assert_array_equal(np.asarray(per_link.params), np.asarray(rate.params))
    np.testing.assert_array_equal(np.asarray(per_link.counters.lost),
                                  np.asarray(rate.counters.lost))


def test_loss_file__malformed_and_unsupported_are_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("0,0.1,0,0,0\n0,0,1.5,0,0\n" + "0,0,0,0,0\n" * 3)
    with pytest.raises(ConfigError, match=r"bad.csv:2:3: '1.5' is not a loss probability"):
        make_run(lossy_config(loss_rate=0.0, loss_file=str(bad)))
    short = tmp_path / "short.csv"
    short.write_text("0,0,0\n")
    with pytest.raises(ConfigError, match=r"short.csv:1: 3 values, expected 5"):
        make_run(lossy_config(loss_rate=0.0, loss_file=str(short)))
    with pytest.raises(ConfigError, match="does not exist"):
        make_run(lossy_config(loss_rate=0.0, loss_file=str(tmp_path / "none.csv")))
    with pytest.raises(ConfigError, match="not both"):
        lossy_config(loss_rate=0.1, loss_file=str(short))
