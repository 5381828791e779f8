"""The tuned comparison's analysis: each algorithm at its own learning rate, run to a plateau
where memory allows; DivShare's gain at equal time (60 iterations, the main comparison's
length) and at each algorithm's plateau (its best point), paired by seed; the gain over time
with its band."""

from __future__ import annotations

import numpy as np

from divjax.reproduction.configs import BASELINES
from divjax.reproduction.tuning import TUNE_ALGOS, TUNED_TARGETS, choose_lr, lr_scores
from divjax.frontends.stats import (
    equal_accuracy_speedup,
    gain,
    mean_ci,
    plateau_status,
    speedup,
    time_to,
)

MAIN_ITERS = 60   # the main comparison's length, where "before tuning" is measured


def point_cells(cells: dict, value) -> dict:
    """{seed: cell} -> {seed: a cell whose primary curve is the one value `value(cell)`}, so
    `divjax.frontends.stats.gain` pairs and compares those values."""
    out = {}
    for s, c in cells.items():
        key = c["primary"] + "_mean"
        out[s] = {"curve": {key: [value(c)]}, "primary": c["primary"],
                  "higher_is_better": c["higher_is_better"]}
    return out


def value_at(c: dict, t: float) -> float:
    """The cell's primary metric (node mean) at the evaluation nearest simulated time t."""
    ts = np.asarray(c["curve"]["time_s"], float)
    return float(c["curve"][c["primary"] + "_mean"][int(np.argmin(np.abs(ts - t)))])


def best_value(c: dict) -> float:
    """The cell's best primary metric (node mean) over the run (its plateau when it reached
    one; a non-finite curve's best is its finite part's)."""
    y = np.asarray(c["curve"][c["primary"] + "_mean"], float)
    return float(np.nanmax(y) if c["higher_is_better"] else np.nanmin(y))


def finite(cells: dict) -> dict:
    """The seeds whose run did not diverge (a finite primary curve throughout)."""
    return {s: c for s, c in cells.items() if not c.get("diverged") and np.isfinite(
        np.asarray(c["curve"][c["primary"] + "_mean"], float)).all()}


def algo_plateau(cells: dict) -> dict:
    """The one-sided plateau rule on the mean curve over the seeds that did not diverge
    (`divjax.frontends.stats.plateau_status`), with the run's length in iterations and the number of
    diverged seeds (status "diverged" when every seed did)."""
    c0 = next(iter(cells.values()))
    ok = finite(cells)
    if not ok:
        cfg = c0["config"]
        return {"status": "diverged", "stopped": True, "diverged": len(cells), "seeds": 0,
                "iterations": round(cfg["duration_s"] / cfg["compute_s"]), "lr": cfg["lr"]}
    cells, n_all = ok, len(cells)
    y = np.array([c["curve"][c0["primary"] + "_mean"] for c in cells.values()], float).mean(0)
    cfg = c0["config"]
    return {**plateau_status(c0["curve"]["time_s"], y, c0["higher_is_better"]),
            "iterations": round(cfg["duration_s"] / cfg["compute_s"]), "lr": cfg["lr"],
            "seeds": len(cells), "final": mean_ci([float(c["curve"][c0["primary"] + "_mean"][-1])
                                                   for c in cells.values()]),
            "best_per_seed": mean_ci([best_value(c) for c in cells.values()]),
            "diverged": n_all - len(cells)}


def bound_kind(div: dict, base: dict) -> str:
    """What a gain between two best points is: "at plateaus" when both stopped improving, else
    which way the unfinished run can still move it."""
    if div["stopped"] and base["stopped"]:
        return "at plateaus"
    if not div["stopped"] and not base["stopped"]:
        return "both still improving: neither a plateau nor a bound"
    if base["stopped"]:
        return "a lower bound (DivShare still improving)"
    return "an upper bound (the baseline still improving)"


def tuned_analysis(idx: dict, regime: str = "tuned") -> dict | None:
    """Per algorithm of the tuned part: plateau status, final and best; DivShare's gain over each
    baseline (and local-only) at 60 iterations and at the best points, paired by seed."""
    every = {a: idx[("movielens", regime, a)] for a in TUNE_ALGOS
             if ("movielens", regime, a) in idx}
    if "divshare" not in every:
        return None
    out = {"algos": {a: algo_plateau(c) for a, c in every.items()}, "gain_60": {},
           "gain_best": {}, "gain_end": {}, "bound": {}}
    # gains and times pair the seeds where neither run diverged (the diverged are counted)
    cells = {a: f for a, c in every.items() if (f := finite(c))}
    if "divshare" not in cells:
        return out
    d = cells["divshare"]
    c0 = next(iter(d.values()))
    t60 = MAIN_ITERS * c0["config"]["compute_s"]
    for b in (*BASELINES, "local"):
        if b not in cells:
            continue
        out["gain_60"][b] = gain(point_cells(d, lambda c: value_at(c, t60)),
                                 point_cells(cells[b], lambda c: value_at(c, t60)))
        out["gain_best"][b] = gain(point_cells(d, best_value), point_cells(cells[b], best_value))
        t_end = min(c["curve"]["time_s"][-1] for x in (d, cells[b]) for c in x.values())
        out["gain_end"][b] = {**gain(point_cells(d, lambda c: value_at(c, t_end)),
                                     point_cells(cells[b], lambda c: value_at(c, t_end))),
                              "t": t_end}
        out["bound"][b] = bound_kind(out["algos"]["divshare"], out["algos"][b])
    out["tta"], out["speedup"] = targets_analysis(cells, TUNED_TARGETS)
    out["equal_accuracy"] = {b: {**equal_accuracy_speedup(d, cells[b]),
                                 **equal_accuracy_times(d, cells[b])}
                             for b in (*BASELINES, "local") if b in cells}
    long = idx.get(("movielens", "tuned-long", "divshare"))
    if long:
        out["long"] = long_analysis(long, every["divshare"], cells, out["algos"])
    return out


def equal_accuracy_times(div: dict, base: dict) -> dict:
    """What `divjax.frontends.stats.equal_accuracy_speedup` divides, over the seeds both have:
    the target (the baseline's final primary metric), the time the baseline first reached it
    and the time DivShare did (a seed where DivShare never did is left out of "t_div")."""
    seeds = sorted(set(div) & set(base))
    ys = {s: float(base[s]["curve"][base[s]["primary"] + "_mean"][-1]) for s in seeds}
    tb = [time_to(base[s], ys[s]) for s in seeds]
    td = [time_to(div[s], ys[s]) for s in seeds]
    return {"target": mean_ci(list(ys.values())),
            "t_base": mean_ci([t for t in tb if t is not None]),
            "t_div": mean_ci([t for t in td if t is not None])}


def long_analysis(long: dict, short: dict, cells: dict, algos: dict) -> dict:
    """The tuned-long DivShare cells: their plateau (`algo_plateau`), their first evaluations
    against the tuned part's DivShare cells (`prefix_check`), and DivShare's gain at its best
    point over each other algorithm's best point, paired by seed, with what it is
    (`bound_kind`: "at plateaus" only when both runs stopped improving)."""
    p = algo_plateau(long)
    ok = finite(long)
    out = {"plateau": p, "check": prefix_check(short, long), "gain_best": {}, "bound": {}}
    for b in (*BASELINES, "local"):
        if b in cells and ok:
            out["gain_best"][b] = gain(point_cells(ok, best_value),
                                       point_cells(cells[b], best_value))
            out["bound"][b] = bound_kind(p, algos[b])
    return out


def prefix_check(short: dict, long: dict) -> dict:
    """The longer run's cells against the shorter run's over the evaluations both have, per
    seed both have: whether every curve the two share is identical there (the curves that are
    not, if any), and the largest absolute and relative differences of the primary node mean
    (NaN equals NaN)."""
    seeds = sorted(set(short) & set(long))
    differ, dmax, rmax, n = set(), 0.0, 0.0, 0
    for s in seeds:
        a, b = short[s]["curve"], long[s]["curve"]
        n = len(a["time_s"])
        if len(b["time_s"]) < n or a["time_s"] != b["time_s"][:n]:
            return {"seeds": seeds, "evaluations": 0, "identical": False, "differ": ["time_s"],
                    "max_abs": float("nan"), "max_rel": float("nan")}
        for k in set(a) & set(b):
            if not np.array_equal(np.asarray(a[k], float), np.asarray(b[k][:n], float),
                                  equal_nan=True):
                differ.add(k)
        key = short[s]["primary"] + "_mean"
        x, y = np.asarray(a[key], float), np.asarray(b[key][:n], float)
        dmax = max(dmax, float(np.nanmax(np.abs(x - y))))
        rmax = max(rmax, float(np.nanmax(np.abs(x - y) / np.abs(x))))
    return {"seeds": seeds, "evaluations": n, "identical": not differ, "differ": sorted(differ),
            "max_abs": dmax, "max_rel": rmax}


def targets_analysis(cells: dict, targets) -> tuple[dict, dict]:
    """Time to each target per algorithm (censored seeds counted) and DivShare's speedup over
    each other algorithm (`divjax.frontends.stats.speedup`)."""
    tta, sp = {}, {}
    for y in targets:
        for a, cs in cells.items():
            tt = [time_to(c, y) for c in cs.values()]
            tta[(a, y)] = {**mean_ci([v for v in tt if v is not None]),
                           "censored": sum(v is None for v in tt), "seeds": len(tt)}
            if a != "divshare":   # in the window both runs cover (their lengths differ)
                end = min(c["curve"]["time_s"][-1] for x in (cells["divshare"], cs)
                          for c in x.values())
                sp[(a, y)] = speedup(truncated(cells["divshare"], end), truncated(cs, end), y)
    return tta, sp


def truncated(cells: dict, end: float) -> dict:
    """{seed: cell} with every curve cut to the evaluations at or before simulated time `end`:
    `divjax.frontends.stats.speedup` censors at DivShare's end, so runs of different lengths are
    compared in the window both cover (else a shorter baseline's censored seed would get
    DivShare's longer end as its time, an overstated lower bound)."""
    out = {}
    for s, c in cells.items():
        n = int(np.searchsorted(np.asarray(c["curve"]["time_s"], float), end + 1e-9))
        out[s] = {**c, "curve": {k: v[:n] if isinstance(v, list) else v
                                 for k, v in c["curve"].items()}}
    return out


def gain_curve(div: dict, base: dict) -> tuple:
    """(t, mean, lo, hi): DivShare's gain over a baseline in % at every evaluation both runs
    have (the shorter run's times), paired by seed, with its 95% interval."""
    seeds = sorted(set(div) & set(base))
    key = div[seeds[0]]["primary"] + "_mean"
    hib = div[seeds[0]]["higher_is_better"]
    n = min(len(div[seeds[0]]["curve"]["time_s"]), len(base[seeds[0]]["curve"]["time_s"]))
    t = np.asarray(div[seeds[0]]["curve"]["time_s"][:n], float)
    d = np.array([div[s]["curve"][key][:n] for s in seeds], float)
    b = np.array([base[s]["curve"][key][:n] for s in seeds], float)
    g = 100 * ((d - b) if hib else (b - d)) / np.abs(b)
    stats = [mean_ci(g[:, j]) for j in range(n)]
    return (t, *(np.array([s[k] for s in stats]) for k in ("mean", "lo", "hi")))


def tune_analysis(idx: dict, fixed: dict) -> dict:
    """Per algorithm: the validation scores of every rate, the rule's choice from the cells and
    the rate fixed in the code (`tuning.TUNED_LR`)."""
    out = {}
    for a in TUNE_ALGOS:
        scores = lr_scores(idx, a)
        if scores:
            out[a] = {"scores": scores, "chosen": choose_lr(scores), "fixed": fixed.get(a)}
    return out
