"""The CIFAR-10 Omega ablation (part `cifar-omega`): its cells, their order and configs (the
`cifar` part's and the cifar-map r0.1-s7 regime's, Omega apart), the refusal of an Omega above
the model's size; its analysis and section on hand-made cells. No run: seconds."""

import dataclasses
import json
from pathlib import Path

import pytest

from divjax.config_checks import ConfigError
from divjax.reproduction import cifar_omega, configs, doc_cifar_omega, grid

ROOT = Path(__file__).resolve().parents[1]
D = 89_834   # GN-LeNet's parameters (6 models at 60 Mbit/s: 0.2875 s; r0.1: compute 0.0287 s)


@pytest.fixture
def params(monkeypatch):
    """model_params without reading CIFAR-10 (it builds the task): GN-LeNet's D."""
    for mod in (grid, cifar_omega):
        monkeypatch.setattr(mod, "model_params", lambda cfg: D)


def test_cifar_omega_cells__regimes_order_and_configs(params):
    seeds = (0, 1, 2)
    want = grid.expected_cells(["cifar-omega"], "cpu", "../shared/data", seeds)
    regs = [f"omega{k}" for k in (1, 2, 4, 8, 16, 64)] + [f"r0.1-s7-omega{k}" for k in (1, 8, 64)]
    assert len(want) == len(set(want)) == 27 and {r for _, r, _, _ in want} == set(regs)
    assert {(t, a) for t, _, a, _ in want} == {("cifar10", "divshare")}
    # the two gains' cells first, seed-major: a stopped run leaves complete paired seeds
    assert want[:6] == [("cifar10", f"omega{k}", "divshare", s) for s in seeds for k in (1, 8)]
    assert [r for _, r, _, _ in want[6:12]] == ["r0.1-s7-omega1", "r0.1-s7-omega8"] * 3
    groups = {(g.regimes[0], g.seeds): g for g in grid.build_groups(["cifar-omega"], "cpu",
                                                                     "../shared/data", seeds)}
    assert all(g.chunk == 1 and g.part == "cifar-omega" for g in groups.values())
    main = next(g for g in grid.build_groups(["cifar"], "cpu", "../shared/data", (0,))
                if g.algo == "divshare").cfg
    cmap = next(g for g in grid.build_groups(["cifar-map"], "cpu", "../shared/data", (0,))
                if g.algo == "divshare" and g.regimes == ("r0.1-s7",)).cfg
    assert main.n_fragments == 8 and groups[("omega8", (1,))].cfg == main
    assert groups[("omega64", (2,))].cfg == main.replace(n_fragments=64)
    assert groups[("r0.1-s7-omega1", (0,))].cfg == cmap.replace(n_fragments=1)
    # the regime is the one the cifar-map cells ran (their stored config, Omega 8)
    cell = json.loads((ROOT / "docs/reproduction/cells/cifar10/r0.1-s7/divshare-seed0.json")
                      .read_text())["config"]
    ours = json.loads(json.dumps(dataclasses.asdict(groups[("r0.1-s7-omega8", (0,))].cfg)))
    assert {k: ours[k] for k in cell} == cell
    assert "cifar-omega" in configs.ALL_PARTS
    assert [r for _, r, _, _ in grid.expected_cells(["cifar-omega"], "tiny", "", (0,))] == \
        ["omega1", "omega2"]


def test_cifar_omega_refuses_omega_above_the_model(monkeypatch):
    for mod in (grid, cifar_omega):
        monkeypatch.setattr(mod, "model_params", lambda cfg: 32)
    with pytest.raises(ConfigError, match="Omega 64 exceeds the model's 32 parameters"):
        grid.build_groups(["cifar-omega"], "cpu", "../shared/data", (0,))


def _cell(acc, avg, seed, K=8, delivered=2760, replaced=0, dropped=0):
    """A hand-made CIFAR-10 cell: 4 nodes, 23 iterations, final accuracies acc / avg."""
    curve = {"time_s": [0.0, 120.0], "acc_mean": [0.1, acc], "acc_avgmodel": [0.1, avg],
             "msgs_delivered": [0, delivered], "msgs_replaced": [0, replaced],
             "msgs_sent": [0, delivered], "msgs_dropped": [0, dropped],
             "iterations_mean": [0.0, 23.0]}
    return {"curve": curve, "primary": "acc", "higher_is_better": True, "seed": seed,
            "config": {"n_nodes": 4, "n_fragments": K},
            "git": {"commit": "a" * 40, "engine_dirty": False}}


def test_cifar_omega_analysis__paired_gains_verdicts_and_section(tmp_path):
    """Hand-computed: Omega 8 over Omega 1 (node mean) 100 x 0.02 / (0.20, 0.21, 0.22) =
    (10, 9.524, 9.091)%, mean 9.538: holds; the average model's (-3.226, 3.333, 0)%: not
    established; Omega 1 over Swift (-4.762, 5, -4.348)%: not established. Copies: (2760 - 460)
    / (23 x 4 x 8) = 3.125; dropped 100 x 240 / (2760 + 240) = 8%."""
    idx = {("cifar10", "omega1", "divshare"): {s: _cell(a, v, s, K=1, delivered=345) for s, (a, v)
                                               in enumerate([(.20, .31), (.21, .30), (.22, .30)])},
           ("cifar10", "omega8", "divshare"): {
               s: _cell(a, v, s, replaced=460, dropped=240)
               for s, (a, v) in enumerate([(.22, .30), (.23, .31), (.24, .30)])},
           ("cifar10", "main", "swift"): {s: _cell(a, .3, s) for s, a in
                                          enumerate([.21, .20, .23])},
           ("cifar10", "main", "divshare"): {1: _cell(.225, .3, 1, replaced=460, dropped=240)}}
    co = doc_cifar_omega.cifar_omega(idx)
    r8, r1 = co["settings"]["main"]["rows"][8], co["settings"]["main"]["rows"][1]
    assert r8["gain_omega1"]["mean"] == pytest.approx((10 + 2 / .21 + 2 / .22) / 3)
    assert r8["gain_omega1"]["verdict"] == "holds"
    assert r8["gain_omega1_avg"]["verdict"] == "not established"
    assert r8["gain_omega1_avg"]["mean"] == pytest.approx((-1 / .31 + 1 / .30) / 3)
    assert r1["gain_swift"]["mean"] == pytest.approx((-1 / .21 + 1 / .20 - 1 / .23) / 3)
    assert r1["gain_swift"]["verdict"] == "not established" and r1["gain_omega1"] is None
    assert r8["copies"]["mean"] == pytest.approx(3.125) and r8["dropped"]["mean"] == 8.0
    assert r8["final"]["mean"] == pytest.approx(23.0) and r8["gain_adpsgd"] is None
    assert len(co["missing"]) == 27 - 6 and "r0.1-s7-omega1/divshare-seed0" in co["missing"]
    res = {"idx": idx}
    text = "\n".join(doc_cifar_omega.cifar_omega_section(res, tmp_path, str, "cmd"))
    assert "**Fragmentation** (Omega 8 against Omega 1" in text and "(holds)" in text
    assert "message counts equal, final node-mean accuracy differs by at most 0.5 pp" in text
    assert "no message was delivered" not in text
    assert "Missing (21 of 27)" in text and (tmp_path / "cifar10_omega.png").exists()
    line = doc_cifar_omega.cifar_omega_summary(res)
    assert "fragmentation (Omega 8 vs 1) 9.54% [" in line and "21 cells missing" in line
    row = doc_cifar_omega.cifar_omega_front_row(res, "W")
    assert len(row) == 1 and "fragmenting (Omega 8 vs 1) 9.54% [" in row[0]
    assert row[0].endswith("| W |")
    assert "replacing the send queue (Omega 1 vs Swift) -1.37% [" in row[0]
    empty = {"idx": {}}
    assert doc_cifar_omega.cifar_omega_front_row(empty, "W") == []
    assert "No cells yet" in "\n".join(doc_cifar_omega.cifar_omega_section(empty, tmp_path,
                                                                           str, "cmd"))
    assert "not established" in doc_cifar_omega.cifar_omega_summary(empty)
