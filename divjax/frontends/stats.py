"""Statistics of seeded comparisons: intervals, verdicts, censored speedups, plateaus.

The reproduction grid (`scripts/reproduction_grid.py`) and anyone comparing algorithms over
seeds use these helpers. A *cell* is one run's record: a dict with "curve" (metric name ->
list over evaluation times, "time_s" included), "primary" (the primary metric's name, whose
node mean is `curve[primary + "_mean"]`) and "higher_is_better".

Rules, each tested against hand-computed cases in tests/test_stats.py:
- intervals are 95% Student-t intervals over seeds (`sweep_outputs.ci95`), paired by seed;
- a *direction* verdict (`verdict`) says "holds" only when the interval excludes no effect on
  the claimed side, "opposite" when it excludes it on the other side, else "not established";
- a *size* verdict (`size_verdict`) says whether a quoted figure lies inside, above or below
  the interval, and refuses to place it against a one-sided (censored) bound on the wrong side;
- a seed that never reaches a target is censored (`speedup`), never given a number of its own;
- a plateau (`plateau_status`) is one-sided: a curve that got *worse* over its last stretch has
  passed its best, it is not "still improving".
"""

from __future__ import annotations

import math

import numpy as np

from divjax.frontends.sweep_outputs import ci95


def mean_ci(values) -> dict:
    """{"mean", "lo", "hi", "n"} of the finite values (None and NaN left out)."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    m, hw = ci95(v)
    return {"mean": m, "lo": m - hw, "hi": m + hw, "n": len(v)}


def final(cell: dict, key: str | None = None) -> float:
    """The last value of `key` (default: the node mean of the primary metric)."""
    return float(cell["curve"][key or cell["primary"] + "_mean"][-1])


def time_to(cell: dict, target: float, key: str | None = None) -> float | None:
    """Simulated time at which the curve `key` (default the primary node mean) first reaches
    `target`, linearly interpolated between the evaluation before and the first evaluation
    that reaches it; None if never (censored at the end of the run)."""
    t = np.asarray(cell["curve"]["time_s"], float)
    v = np.asarray(cell["curve"][key or cell["primary"] + "_mean"], float)
    hit = v >= target if cell["higher_is_better"] else v <= target
    hit &= np.isfinite(v)
    if not hit.any():
        return None
    j = int(np.argmax(hit))
    if j == 0 or not np.isfinite(v[j - 1]) or v[j] == v[j - 1]:
        return float(t[j])
    return float(t[j - 1] + (target - v[j - 1]) / (v[j] - v[j - 1]) * (t[j] - t[j - 1]))


def verdict(lo: float, hi: float, n: int, null: float = 0.0, can_hold: bool = True,
            can_oppose: bool = True) -> str:
    """The direction verdict: "holds" only when the 95% interval lies entirely on the claimed
    side of `null` (no effect); "opposite" when entirely on the other side; else "not
    established". Fewer than 2 seeds give no interval. Censored seeds can forbid one side."""
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return "not established (fewer than 2 usable seeds)"
    if lo > null and can_hold:
        return "holds"
    if hi < null and can_oppose:
        return "opposite"
    return "not established"


def size_verdict(r: dict, quoted: float, log_scale: bool = False) -> str:
    """Where a quoted figure (the paper's) lies against the interval of `r` ({"lo", "hi", "n"},
    and "censored_base"/"censored_div" for speedups): "inside", "above" or "below" the
    interval, or "unknown". `log_scale`: r's bounds are ratios (compared as they are).

    A censored speedup's interval is a lower bound (baseline never reached: the true speedup is
    at least as large) or an upper bound (DivShare never reached): a quoted figure above a
    lower-bounded interval, or below an upper-bounded one, may still be the true size, so it
    is "unknown", never "above"/"below"."""
    del log_scale   # ratios and percentages compare the same way on their own scale
    lo, hi, n = r.get("lo", float("nan")), r.get("hi", float("nan")), r.get("n", 0)
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return "unknown (no interval)"
    lower_bound = r.get("censored_base", 0) > 0
    upper_bound = r.get("censored_div", 0) > 0
    if quoted > hi:
        return "unknown (interval is a lower bound)" if lower_bound else "above"
    if quoted < lo:
        return "unknown (interval is an upper bound)" if upper_bound else "below"
    return "inside" if not (lower_bound or upper_bound) else "inside (one-sided bound)"


def two_sided(r: dict | None) -> bool:
    """True when `r`'s interval is a plain two-sided interval (finite, no censored seed)."""
    return bool(r) and r.get("n", 0) >= 2 and np.isfinite(r.get("lo", float("nan"))) and \
        np.isfinite(r.get("hi", float("nan"))) and not r.get("censored_base", 0) and \
        not r.get("censored_div", 0) and not r.get("neither", 0)


def gain(div: dict, base: dict, key: str | None = None) -> dict:
    """DivShare's final-metric gain over a baseline, in %, paired by seed ({seed: cell} each):
    higher-is-better 100 (d - b) / |b|; lower-is-better 100 (b - d) / |b| (positive = DivShare
    better in both)."""
    seeds = sorted(set(div) & set(base))
    vals = []
    for s in seeds:
        d, b = final(div[s], key), final(base[s], key)
        hib = div[s]["higher_is_better"]
        vals.append(100 * ((d - b) if hib else (b - d)) / abs(b))
    r = mean_ci(vals)
    r["per_seed"] = vals
    r["verdict"] = verdict(r["lo"], r["hi"], r["n"])
    return r


def _censored_ratio(td: float | None, tb: float | None, end_div: float, end_base: float):
    """(log ratio or None, text, kind) of one seed's t_base / t_div; kind: "both", "lower"
    (baseline censored), "upper" (DivShare censored) or "neither". A censored run's time is
    bounded by ITS OWN end (it ran that long without reaching the target), never the other's:
    a baseline run shorter than DivShare's bounds t_base by its own end only."""
    if td is None and tb is None:
        return None, "neither", "neither"
    if tb is None:
        r = end_base / td
        return math.log(r), f">={r:.3g}", "lower"
    if td is None:
        r = tb / end_div
        return math.log(r), f"<={r:.3g}", "upper"
    r = tb / td
    return math.log(r), f"{r:.3g}", "both"


def speedup(div: dict, base: dict, target: float, key: str | None = None) -> dict:
    """Time-to-target speedup of DivShare over a baseline (t_base / t_div), paired by seed;
    interval: Student-t on the per-seed log ratios (a geometric mean and its interval).

    Censored seeds (the run ended before the target): when only the baseline never reached
    it, its time is taken as its own run's end, a lower bound of the speedup (conservative for
    "holds", and "opposite" is then not allowed); when only DivShare never reached it, the
    same substitution gives an upper bound ("holds" is then not allowed); seeds where
    neither reached it carry no information and are left out."""
    return _paired_speedup(div, base, lambda s: target, key)


def equal_accuracy_speedup(div: dict, base: dict, key: str | None = None) -> dict:
    """Speedup at equal accuracy, paired by seed: the baseline's final value of `key` (default
    the primary node mean) is the target; t_base is when the baseline first reached it, t_div
    when DivShare first did (both interpolated as in `time_to`), speedup t_base / t_div. A seed
    where DivShare never reached the baseline's final value is censored at DivShare's end (an
    upper bound, so "holds" is not allowed); a diverged baseline's seed is left out. Same
    interval and verdict as `speedup`. The target is set by the baseline's own run, not chosen
    after looking at DivShare's."""
    return _paired_speedup(div, base, lambda s: final(base[s], key), key)


def _paired_speedup(div: dict, base: dict, target_of, key: str | None) -> dict:
    """`speedup` with a per-seed target (`target_of(seed)`; a non-finite one leaves the seed
    out)."""
    seeds = sorted(set(div) & set(base))
    logs, per_seed, kinds = [], [], []
    for s in seeds:
        target = target_of(s)
        if not np.isfinite(target):   # e.g. a diverged baseline: no accuracy to match
            per_seed.append("no target (diverged)")
            continue
        lg, text, kind = _censored_ratio(time_to(div[s], target, key),
                                         time_to(base[s], target, key),
                                         float(div[s]["curve"]["time_s"][-1]),
                                         float(base[s]["curve"]["time_s"][-1]))
        per_seed.append(text)
        kinds.append(kind)
        if lg is not None:
            logs.append(lg)
    m = mean_ci(logs)
    lower, upper, neither = kinds.count("lower"), kinds.count("upper"), kinds.count("neither")
    out = {"mean": math.exp(m["mean"]) if m["n"] else float("nan"),
           "lo": math.exp(m["lo"]) if np.isfinite(m["lo"]) else float("nan"),
           "hi": math.exp(m["hi"]) if np.isfinite(m["hi"]) else float("nan"),
           "n": m["n"], "per_seed": per_seed, "censored_base": lower, "censored_div": upper,
           "neither": neither, "seeds": len(seeds)}
    out["verdict"] = verdict(m["lo"], m["hi"], m["n"], 0.0, can_hold=upper == 0,
                             can_oppose=lower == 0)
    if neither == len(seeds) and seeds:
        out["verdict"] = "not established (no seed reached the target)"
    return out


def plateau_status(t, y, higher_is_better: bool, window: float = 0.2,
                   tol_pct: float = 0.5) -> dict:
    """One-sided plateau rule on a mean curve y(t) over the last `window` of the run.

    improvement_pct: the change from the start of the window to the end, in %, signed so that
    positive = better (lower loss / higher accuracy). best: the best value of the whole curve
    and its time. status:
    - "still improving": improved by at least `tol_pct` over the window;
    - "past its best": the end is worse than the curve's best by at least `tol_pct` (the curve
      turned; quote the best, not the end);
    - "stopped improving": otherwise (changes within `tol_pct`)."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    j = int(np.argmin(np.abs(t - (1 - window) * t[-1])))
    sign = 1.0 if higher_is_better else -1.0
    imp = 100 * sign * (y[-1] - y[j]) / abs(y[j])
    ok = np.isfinite(y)
    b = int(np.nanargmax(sign * np.where(ok, y, np.nan)))
    behind = 100 * sign * (y[b] - y[-1]) / abs(y[b])
    if imp >= tol_pct:
        status = "still improving"
    elif behind >= tol_pct:
        status = "past its best"
    else:
        status = "stopped improving"
    return {"improvement_pct": float(imp), "from_s": float(t[j]), "to_s": float(t[-1]),
            "best": float(y[b]), "best_s": float(t[b]), "behind_best_pct": float(behind),
            "status": status, "stopped": status != "still improving"}


def plateau(idx: dict, task: str, regime: str, algos, tol_pct: float = 0.5) -> dict | None:
    """The best algorithm (best final mean over seeds) in idx[(task, regime, algo)] = {seed:
    cell} and its one-sided plateau status (`plateau_status`) on its mean curve over seeds."""
    best = None
    for a in algos:
        cells = idx.get((task, regime, a))
        if not cells:
            continue
        c0 = next(iter(cells.values()))
        hib = c0["higher_is_better"]
        m = np.array([c["curve"][c0["primary"] + "_mean"] for c in cells.values()], float).mean(0)
        if not np.isfinite(m[-1]):
            continue
        if best is None or (m[-1] > best["final"] if hib else m[-1] < best["final"]):
            best = {"algorithm": a, "final": float(m[-1]),
                    **plateau_status(c0["curve"]["time_s"], m, hib, tol_pct=tol_pct)}
    return best
