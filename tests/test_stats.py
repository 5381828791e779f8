"""divjax.frontends.stats against hand-computed cases: intervals, censoring, size verdicts, plateaus."""

import math

import numpy as np
import pytest

from divjax.frontends import stats


def cell(times, values, higher=False, primary="loss"):
    return {"curve": {"time_s": list(times), primary + "_mean": list(values)},
            "primary": primary, "higher_is_better": higher}


def test_mean_ci__hand_computed_three_values():
    # values 1, 2, 3: mean 2, sd 1, t(2) = 4.303 -> half-width 4.303 / sqrt(3)
    r = stats.mean_ci([1.0, 2.0, 3.0, None, float("nan")])
    assert r["n"] == 3 and r["mean"] == 2.0
    assert r["hi"] - 2.0 == pytest.approx(4.303 / math.sqrt(3))


def test_time_to__interpolates_and_censors():
    c = cell([0, 10, 20], [4.0, 3.0, 2.0])
    assert stats.time_to(c, 2.5) == pytest.approx(15.0)     # halfway between 3.0 and 2.0
    assert stats.time_to(c, 4.0) == 0.0
    assert stats.time_to(c, 1.0) is None                     # never reached: censored


def test_verdict__direction_only():
    assert stats.verdict(0.1, 0.5, 3) == "holds"
    assert stats.verdict(-0.5, -0.1, 3) == "opposite"
    assert stats.verdict(-0.1, 0.5, 3) == "not established"
    assert stats.verdict(0.1, 0.5, 1).startswith("not established (fewer")
    assert stats.verdict(0.1, 0.5, 3, can_hold=False) == "not established"


def test_speedup__censored_baseline_is_a_lower_bound():
    # DivShare reaches loss 2.5 at t=15 in every seed; the baseline never does (end t=20)
    div = {s: cell([0, 10, 20], [4.0, 3.0, 2.0]) for s in range(3)}
    base = {s: cell([0, 10, 20], [4.0, 3.5, 3.0]) for s in range(3)}
    r = stats.speedup(div, base, 2.5)
    assert r["censored_base"] == 3 and r["censored_div"] == 0
    assert r["mean"] == pytest.approx(20 / 15)               # end / t_div, a lower bound
    assert r["per_seed"] == [">=1.33"] * 3
    # the quoted 3.9x lies above a lower bound: its size is unknown, not "above"
    assert stats.size_verdict(r, 3.9).startswith("unknown")
    assert not stats.two_sided(r)


def test_speedup__a_shorter_censored_baseline_is_bounded_by_its_own_end():
    # DivShare runs to t=600 and reaches 2.5 at t=15; the baseline stops at t=40 without
    # reaching it: all that is known is t_base > 40, so the bound is 40 / 15, not 600 / 15
    div = {s: cell([0, 10, 20, 600], [4.0, 3.0, 2.0, 1.0]) for s in range(3)}
    base = {s: cell([0, 20, 40], [4.0, 3.5, 3.0]) for s in range(3)}
    r = stats.speedup(div, base, 2.5)
    assert r["censored_base"] == 3
    assert r["mean"] == pytest.approx(40 / 15)
    assert r["per_seed"] == [">=2.67"] * 3


def test_equal_accuracy_speedup__hand_computed():
    # the baseline ends at accuracy 0.30, first reached at t=40; DivShare reaches 0.30 halfway
    # between t=10 (0.20) and t=20 (0.40): t=15, so 40 / 15 in every seed
    div = {s: cell([0, 10, 20, 40], [0.1, 0.2, 0.4, 0.5], higher=True, primary="acc")
           for s in range(3)}
    base = {s: cell([0, 20, 40], [0.1, 0.2, 0.3], higher=True, primary="acc") for s in range(3)}
    r = stats.equal_accuracy_speedup(div, base)
    assert r["mean"] == pytest.approx(40 / 15) and r["per_seed"] == ["2.67"] * 3
    # DivShare never reaches the baseline's final accuracy: an upper bound, never "holds"
    slow = {s: cell([0, 20, 40], [0.1, 0.15, 0.2 + 0.01 * s], higher=True, primary="acc")
            for s in range(3)}
    r = stats.equal_accuracy_speedup(slow, base)
    assert r["censored_div"] == 3 and r["verdict"] != "holds"
    assert r["mean"] == pytest.approx(1.0)                    # t_base 40 / DivShare's end 40


def test_equal_accuracy_speedup__lower_is_better_hand_computed():
    """A loss (RMSE): the target is the baseline's final value, reached when the curve falls to
    it. DivShare falls 4.0, 3.2, 2.0, 1.5 at t = 0, 10, 20, 40. Baseline A ends at 2.5, first
    reached at its end t=40; DivShare reaches 2.5 at t = 10 + 10 x 0.7 / 1.2 = 15.833: 2.526x.
    Baseline B passed its best (2.5 at t=20) and ends at 2.9, first reached on the way down:
    t = 20 x 1.1 / 1.5 = 14.667; DivShare reaches 2.9 at t = 10 + 10 x 0.3 / 1.2 = 12.5:
    1.1733x (its best, 2.5, would give 20 / 15.833 = 1.263x)."""
    div = {s: cell([0, 10, 20, 40], [4.0, 3.2, 2.0, 1.5]) for s in range(3)}
    a = {s: cell([0, 20, 40], [4.0, 3.5, 2.5]) for s in range(3)}
    r = stats.equal_accuracy_speedup(div, a)
    assert r["mean"] == pytest.approx(40 / (10 + 10 * 0.7 / 1.2))
    assert r["per_seed"] == ["2.53"] * 3
    assert r["censored_div"] == r["censored_base"] == 0 and r["verdict"] == "holds"
    b = {s: cell([0, 20, 40, 60], [4.0, 2.5, 2.8, 2.9]) for s in range(3)}
    r = stats.equal_accuracy_speedup(div, b)
    assert r["mean"] == pytest.approx((20 * 1.1 / 1.5) / 12.5)
    # roles swapped: "A" never reaches the other's final 1.5, censored at its own end (40):
    # an upper bound, never "holds"
    r = stats.equal_accuracy_speedup(a, div)
    assert r["censored_div"] == 3 and r["verdict"] != "holds"


def test_speedup__censored_divshare_forbids_holds():
    div = {s: cell([0, 10, 20], [4.0, 3.5 - 0.1 * s, 3.0]) for s in range(3)}   # never 2.5
    base = {s: cell([0, 10, 20], [4.0, 3.0, 2.0 + 0.1 * s]) for s in range(3)}
    r = stats.speedup(div, base, 2.5)
    assert r["censored_div"] == 3 and r["verdict"] != "holds"


def test_size_verdict__two_sided_interval():
    r = {"mean": 1.5, "lo": 1.32, "hi": 1.73, "n": 3, "censored_base": 0, "censored_div": 0}
    assert stats.size_verdict(r, 3.9) == "above"            # the paper's 3.9x is not inside
    assert stats.size_verdict(r, 1.5) == "inside"
    assert stats.size_verdict(r, 1.1) == "below"
    assert stats.two_sided(r)


def test_gain__paired_by_seed_and_signed_for_loss():
    div = {0: cell([0, 1], [2.0, 0.9]), 1: cell([0, 1], [2.0, 0.8])}
    base = {0: cell([0, 1], [2.0, 1.0]), 1: cell([0, 1], [2.0, 1.0]), 2: cell([0, 1], [2, 9])}
    r = stats.gain(div, base)              # seed 2 has no DivShare cell: left out
    assert r["per_seed"] == pytest.approx([10.0, 20.0]) and r["n"] == 2


def test_plateau_status__one_sided():
    t = np.arange(11.0) * 10          # last 20%: from t=80 to t=100
    # loss that bottoms out at t=60 and rises by ~0.8% to the end: past its best, not improving
    y = [3, 2.5, 2.0, 1.5, 1.3, 1.2, 1.189, 1.19, 1.192, 1.195, 1.198]
    p = stats.plateau_status(t, y, higher_is_better=False)
    assert p["improvement_pct"] < 0 and p["status"] == "past its best"
    assert p["best"] == 1.189 and p["best_s"] == 60.0 and p["stopped"]
    # falling by 2% over the window: still improving
    y2 = [3, 2.5, 2.0, 1.5, 1.3, 1.2, 1.15, 1.12, 1.10, 1.09, 1.078]
    assert stats.plateau_status(t, y2, False)["status"] == "still improving"
    # accuracy (higher is better) flat within 0.5%: stopped
    acc = [0.1, 0.3, 0.5, 0.6, 0.65, 0.7, 0.7, 0.701, 0.7, 0.702, 0.701]
    assert stats.plateau_status(t, acc, True)["status"] == "stopped improving"


def test_plateau__picks_the_best_algorithm():
    idx = {("ml", "long", "a"): {0: cell(range(11), np.linspace(3, 2, 11))},
           ("ml", "long", "b"): {0: cell(range(11), np.linspace(3, 1, 11))}}
    p = stats.plateau(idx, "ml", "long", ["a", "b", "missing"])
    assert p["algorithm"] == "b" and p["status"] == "still improving"


def test_verdict_and_censoring_rules__small_curves():
    assert stats.verdict(-0.5, 1.0, 3) == "not established"   # the interval contains 0
    assert stats.verdict(0.1, 1.0, 3) == "holds"
    assert stats.verdict(-1.0, -0.1, 3) == "opposite"
    assert stats.verdict(0.1, 1.0, 1).startswith("not established")
    assert stats.verdict(0.1, 1.0, 3, can_hold=False) == "not established"

    def cell(times, values, seed):
        return {"primary": "rmse", "higher_is_better": False, "seed": seed,
                "curve": {"time_s": times, "rmse_mean": values}}

    t = [1.0, 2.0, 3.0, 4.0]
    div = {s: cell(t, [3.0, 2.0, 1.0, 1.0], s) for s in range(3)}
    never = {s: cell(t, [3.0, 3.0, 3.0, 3.0], s) for s in range(3)}
    assert stats.time_to(div[0], 2.0) == 2.0 and stats.time_to(never[0], 2.0) is None
    assert stats.time_to(div[0], 2.5) == 1.5     # interpolated between the samples
    r = stats.speedup(div, never, 2.0)    # the baseline never reaches: lower bounds 4 / 2
    assert r["censored_base"] == 3 and r["per_seed"] == [">=2", ">=2", ">=2"]
    assert math.isclose(r["mean"], 2.0)
    r = stats.speedup(never, div, 2.0)    # DivShare never reaches: "holds" is impossible
    assert r["censored_div"] == 3 and r["verdict"] != "holds"
    g = stats.gain(div, never)            # RMSE 1 against 3: 66.7% lower in every seed
    assert math.isclose(g["mean"], 200 / 3) and g["n"] == 3
