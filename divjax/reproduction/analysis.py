"""The grid's analysis: every figure of the document computed from the cells (the statistics
themselves are `divjax.frontends.stats`, tested against hand-computed cases)."""

from __future__ import annotations

from pathlib import Path

from divjax.reproduction.cells import index, load_cells
from divjax.reproduction.cifar_map import cifar_map
from divjax.reproduction.configs import (
    BASELINES,
    CIFAR_ALGOS,
    MAP_RATIOS,
    MAP_STRAGGLERS,
    ML_ALGOS,
    OMEGA_MAP,
    OMEGA_MAP_K,
    OMEGAS,
    TARGETS,
)
from divjax.reproduction.plateaus import tune_analysis, tuned_analysis
from divjax.reproduction.text import commits_text
from divjax.reproduction.tuning import TUNED_LR
from divjax.frontends.stats import final, gain, mean_ci, plateau, speedup, time_to


def identical_regimes(idx: dict) -> dict[str, list[list[str]]]:
    """Per algorithm, the groups (2 or more) of MovieLens map regimes whose cells have the same
    primary-metric curve for every seed they share (and share at least one)."""
    curves: dict = {}
    for (task, regime, algo), cells in idx.items():
        if task == "movielens" and regime.startswith("r"):
            for seed, c in cells.items():
                curves.setdefault(algo, {}).setdefault(regime, {})[seed] = tuple(
                    c["curve"][c["primary"] + "_mean"])
    out = {}
    for algo, by_regime in sorted(curves.items()):
        groups: list[list[str]] = []
        for r in sorted(by_regime):
            for g in groups:
                x, y = by_regime[g[0]], by_regime[r]
                common = set(x) & set(y)
                if common and all(x[k] == y[k] for k in common):
                    g.append(r)
                    break
            else:
                groups.append([r])
        if any(len(g) > 1 for g in groups):
            out[algo] = [g for g in groups if len(g) > 1]
    return out


def regime_map(idx: dict, target: float, scale: str) -> dict:
    """Per (ratio, stragglers): DivShare's speedup over AD-PSGD and its final gain over Swift."""
    out = {}
    ratios = MAP_RATIOS if scale != "tiny" else (1.0,)
    strag = MAP_STRAGGLERS if scale != "tiny" else (0, 1)
    for r in ratios:
        for k in strag:
            reg = f"r{r:g}-s{k}"
            d = idx.get(("movielens", reg, "divshare"), {})
            a = idx.get(("movielens", reg, "adpsgd"), {})
            s = idx.get(("movielens", reg, "swift"), {})
            out[(r, k)] = {"regime": reg,
                           "speedup": speedup(d, a, target) if d and a else None,
                           "speedup_swift": speedup(d, s, target) if d and s else None,
                           "gain_swift": gain(d, s) if d and s else None,
                           "gain_adpsgd": gain(d, a) if d and a else None,
                           "final": {n: mean_ci([final(c) for c in x.values()])
                                     for n, x in (("divshare", d), ("adpsgd", a), ("swift", s))
                                     if x}}
    return out


def copies_averaged(cell: dict) -> float:
    """Copies averaged into each fragment per aggregation, on average over the run: messages
    delivered and not replaced by a newer copy, per node-iteration and fragment (a full model
    counts once per fragment; messages still waiting at the run's end count too)."""
    c, cfg = cell["curve"], cell["config"]
    used = c["msgs_delivered"][-1] - c["msgs_replaced"][-1]
    return float(used / max(1e-9, c["iterations_mean"][-1] * cfg["n_nodes"]
                            * cfg["n_fragments"]))


def dropped_share(cell: dict) -> float:
    """Messages dropped by a replaced queue, in % of those queued (sent + dropped)."""
    c = cell["curve"]
    return float(100 * c["msgs_dropped"][-1] / max(1, c["msgs_sent"][-1] + c["msgs_dropped"][-1]))


def omega_ablation(idx: dict, regime: str = "", ks=OMEGAS,
                   adpsgd_regime: str = "main") -> dict | None:
    """Per Omega: DivShare's final RMSE, its gain over Swift and over Omega = 1 (paired by seed,
    all cells of one commit), over AD-PSGD (the main comparison's or the map's cells), the
    copies averaged per fragment (the dilution confound) and the share of messages dropped.
    regime "" is the main setting (regimes "omega<K>"), else a map regime ("<regime>-omega<K>")."""
    name = (lambda k: f"omega{k}") if not regime else (lambda k: f"{regime}-omega{k}")
    swift = idx.get(("movielens", name(1), "swift"), {})
    one = idx.get(("movielens", name(1), "divshare"), {})
    adpsgd = idx.get(("movielens", adpsgd_regime, "adpsgd"), {})
    rows = {}
    for k in ks:
        d = idx.get(("movielens", name(k), "divshare"), {})
        if not d:
            continue
        avg = next(iter(d.values()))["primary"] + "_avgmodel"
        rows[k] = {"seeds": len(d), "final": mean_ci([final(c) for c in d.values()]),
                   "final_avg": mean_ci([final(c, avg) for c in d.values()]),
                   "gain_swift": gain(d, swift) if swift else None,
                   "gain_omega1": gain(d, one) if one and k != 1 else None,
                   "gain_adpsgd": gain(d, adpsgd) if adpsgd else None,
                   "copies": mean_ci([copies_averaged(c) for c in d.values()]),
                   "dropped": mean_ci([dropped_share(c) for c in d.values()]),
                   "commit": commits_text(d.values())}
    if not rows:
        return None
    return {"rows": rows, "swift": {
        "final": mean_ci([final(c) for c in swift.values()]) if swift else None,
        "copies": mean_ci([copies_averaged(c) for c in swift.values()]) if swift else None,
        "commit": commits_text(swift.values())}}


def analyse(out: Path, scale: str) -> dict:
    cells = load_cells(out)
    idx = index(cells)
    tg = TARGETS[scale]
    res: dict = {"cells": len(cells), "scale": scale}
    for task, algos in (("movielens", ML_ALGOS), ("cifar10", CIFAR_ALGOS)):
        d = idx.get((task, "main", "divshare"), {})
        t = {"final": {}, "tta": {}, "speedup": {}, "gain": {}, "gain_avgmodel": {}}
        for a in algos:
            c = idx.get((task, "main", a), {})
            if not c:
                continue
            t["final"][a] = mean_ci([final(x) for x in c.values()])
            t["final"][a]["diverged"] = sum(x["diverged"] for x in c.values())
            for y in tg[task]:
                tt = [time_to(x, y) for x in c.values()]
                t["tta"][(a, y)] = {**mean_ci([v for v in tt if v is not None]),
                                    "censored": sum(v is None for v in tt), "seeds": len(tt)}
        for b in BASELINES:
            base = idx.get((task, "main", b), {})
            if d and base:
                t["gain"][b] = gain(d, base)
                avg = d[next(iter(d))]["primary"] + "_avgmodel"
                if all(avg in c["curve"] for c in (*d.values(), *base.values())):
                    t.setdefault("gain_avgmodel", {})[b] = gain(d, base, avg)
                for y in tg[task]:
                    t["speedup"][(b, y)] = speedup(d, base, y)
        t["plateau"] = plateau(idx, task, "main", algos)
        res[task] = t
    res["map"] = regime_map(idx, tg["movielens-map"][0], scale)
    res["omega"] = omega_ablation(idx)
    res["omega_map"] = {f"r{r:g}-s{k}": ab for r, k in OMEGA_MAP
                        if (ab := omega_ablation(idx, f"r{r:g}-s{k}", OMEGA_MAP_K,
                                                 f"r{r:g}-s{k}"))}
    res["downloads"] = {task: downloads_effect(idx, task, tg[task])
                        for task in ("movielens", "cifar10")}
    res["tune"] = tune_analysis(idx, TUNED_LR)
    res["tuned"] = tuned_analysis(idx)
    res["cifar_map"] = cifar_map(idx)
    res["idx"] = idx
    return res


def downloads_effect(idx: dict, task: str, targets) -> dict | None:
    """The comparison with the testbed's download limits, paired by seed: DivShare with limits
    against each baseline with limits (the paper's comparison with limits on), against its own
    run without limits (the limits' effect) and against the baselines without them; and what
    the limits do to each baseline itself."""
    dl = idx.get((task, "downloads", "divshare"), {})
    if not dl:
        return None
    out: dict = {"seeds": len(dl), "gain": {}, "speedup": {}, "effect": {}, "identical": {},
                 "neither": {}}
    lost = [c["curve"]["msgs_lost"][-1] / max(1.0, c["curve"]["msgs_sent"][-1])
            for c in dl.values()]
    main = idx.get((task, "main", "divshare"), {})
    out["identical_to_main"] = {
        s: all(c["curve"][k] == main[s]["curve"][k] for k in main[s]["curve"]
               if k in c["curve"] and k != "msgs_lost")
        for s, c in dl.items() if s in main}
    out["lost_pct"] = mean_ci([100 * x for x in lost])
    against = {b: idx.get((task, "main", b), {}) for b in ("divshare",) + BASELINES}
    for b in BASELINES:
        against[f"{b}-limits"] = idx.get((task, "downloads", b), {})
    for b, base in against.items():
        if base:
            out["gain"][b] = gain(dl, base)
            for y in targets:
                out["speedup"][(b, y)] = speedup(dl, base, y)
    for b in BASELINES:
        lim, free = against[f"{b}-limits"], against[b]
        if lim and free:   # what the limits do to the baseline itself
            out["effect"][b] = gain(lim, free)
            out["identical"][b] = all(
                c["curve"][k] == free[s]["curve"][k] for s, c in lim.items() if s in free
                for k in free[s]["curve"] if k in c["curve"] and k != "msgs_lost")
        if main and free:  # the same comparison with neither limited
            out["neither"][b] = gain(main, free)
    return out
