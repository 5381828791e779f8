"""Latency between pairs of nodes (issue 18): regions and a latency matrix from a file.

The engine equals the reference simulators with a latency that depends on the (sender,
receiver) pair; with no extra latency the results are bit for bit those of a run without it;
a malformed matrix file is refused with its line and column."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_equals_reference, reference_of, run_checked

from divjax.config import ConfigError, SimConfig, default_hparams
from divjax.engine.sim import make_run


def regional_config(**changes) -> SimConfig:
    """6 nodes in 3 regions, 23.4 ms between regions (not a whole 10 ms tick), uneven links."""
    base = SimConfig(n_nodes=6, n_fragments=3, fanout=2, local_steps=2, batch_size=4,
                     tick_s=0.01, duration_s=1.5, eval_every_s=0.5, compute_s=0.1,
                     latency_regions=3, inter_region_ms=23.4, same_init=False)
    return base.replace(**changes)


def uneven_hparams(cfg):
    return default_hparams(cfg).replace(
        compute_s=jnp.array([0.05, 0.1, 0.13, 0.1, 0.07, 0.1], jnp.float32),
        upload_bps=jnp.array([1e5, 1e4, 1e4, 4e3, 1e3, 3e4], jnp.float32))


@pytest.mark.parametrize("algorithm,delivery", [
    ("divshare", "receiver_iteration"), ("divshare", "arrival_tick"),
    ("swift", "receiver_iteration"), ("adpsgd", "arrival_tick")])
def test_regions__engine_equals_reference_simulator(algorithm, delivery):
    cfg = regional_config(algorithm=algorithm, delivery=delivery,
                          fanout=4 if algorithm == "adpsgd" else 2)
    hp = uneven_hparams(cfg)
    run, state, _ = run_checked(cfg, hp, seed=0)
    ref = reference_of(run, hp, seed=0)
    assert_equals_reference(state, ref)
    assert ref.sent.sum() > 0


def test_regions__change_arrivals_and_zero_extra_latency_changes_nothing(tmp_path):
    """Regions with 0 ms between them, and a file of zeros, give the bits of a run without
    them; 23.4 ms between regions gives other results (so the tests above can fail)."""
    plain = regional_config(latency_regions=1, inter_region_ms=0.0)
    hp = uneven_hparams(plain)
    _, base, _ = run_checked(plain, hp, seed=0)
    _, zero, _ = run_checked(plain.replace(latency_regions=3), hp, seed=0)
    path = tmp_path / "zeros.csv"
    path.write_text("\n".join(",".join(["0"] * 6) for _ in range(6)) + "\n")
    _, from_file, _ = run_checked(plain.replace(latency_file=str(path)), hp, seed=0)
    _, far, _ = run_checked(plain.replace(latency_regions=3, inter_region_ms=23.4), hp, seed=0)
    for other in (zero, from_file):
        np.testing.assert_array_equal(np.asarray(other.params), np.asarray(base.params))
        np.testing.assert_array_equal(np.asarray(other.counters.delivered),
                                      np.asarray(base.counters.delivered))
    assert not np.array_equal(np.asarray(far.params), np.asarray(base.params))


def test_latency_file__a_matrix_equals_the_same_regions(tmp_path):
    """A file holding the 3-region matrix of 23.4 ms gives the regions' results exactly."""
    cfg = regional_config()
    hp = uneven_hparams(cfg)
    _, regions, _ = run_checked(cfg, hp, seed=0)
    region = np.arange(6) % 3
    matrix = np.where(region[:, None] == region[None, :], 0.0, 23.4)
    path = tmp_path / "lat.csv"
    path.write_text("# one-way ms, row = sender\n"
                    + "\n".join(",".join(f"{v:g}" for v in row) for row in matrix) + "\n")
    _, from_file, _ = run_checked(cfg.replace(latency_regions=1, latency_file=str(path)), hp,
                                  seed=0)
    np.testing.assert_array_equal(np.asarray(from_file.params), np.asarray(regions.params))


@pytest.mark.parametrize("text,match", [
    ("0,1,2\n1,0,x\n2,1,0\n", r"lat.csv:2:3: 'x' is not a latency"),
    ("0,1,2\n1,0,-4\n2,1,0\n", r"lat.csv:2:3: '-4'"),
    ("0,1,2\n1,0\n2,1,0\n", r"lat.csv:2: 2 values, expected 3"),
    ("0,1,2\n1,0,2\n", r"2 rows, expected 3"),
])
def test_latency_file__malformed_names_line_and_column(tmp_path, text, match):
    path = tmp_path / "lat.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        make_run(regional_config(n_nodes=3, latency_regions=1, fanout=1,
                                 latency_file=str(path)))


def test_regions__bad_values_are_refused():
    with pytest.raises(ConfigError, match="latency_regions"):
        regional_config(latency_regions=0)
    with pytest.raises(ConfigError, match="inter_region_ms"):
        regional_config(inter_region_ms=-1.0)
    with pytest.raises(ConfigError, match="does not exist"):
        make_run(regional_config(latency_file="/no/such/file.csv"))
    with pytest.raises(ConfigError, match="link sub-ticks"):   # 10 us sub-ticks: 0.0234 ms
        make_run(regional_config(inter_region_ms=0.0234))
