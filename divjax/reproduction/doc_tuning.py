"""The document's section on tuned learning rates and sizes at a plateau (MovieLens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from divjax.reproduction.figures import plot_curves
from divjax.reproduction.plateaus import gain_curve
from divjax.reproduction.text import commits_text, fmt_ci, speed_text, table, tta_text
from divjax.reproduction.tuning import (
    TUNE_ALGOS,
    TUNED_ITERS,
    TUNED_TARGETS,
    VALIDATION_SHARE,
)
from divjax.frontends.stats import gain, mean_ci

NAME = {"divshare": "DivShare", "adpsgd": "AD-PSGD", "swift": "Swift", "local": "local-only"}


def tune_table(tune: dict, idx: dict) -> str:
    """Algorithm x learning rate: mean final validation RMSE over seeds (the choice in bold)."""
    lrs = sorted({lr for t in tune.values() for lr in t["scores"]})
    rows = []
    for a, t in tune.items():
        row = [NAME.get(a, a)]
        for lr in lrs:
            s = t["scores"].get(lr)
            if s is None:
                row.append("not run")
                continue
            bad = sum(not np.isfinite(v) for v in s["per_seed"])
            text = (fmt_ci(mean_ci(s["per_seed"]), "", 4) if not bad
                    else f"diverged ({bad}/{s['seeds']} seeds)")
            row.append(f"**{text}**" if lr == t["chosen"] else text)
        cells = [c for (task, r, al), cs in idx.items() if al == a and r.startswith("tune-lr")
                 for c in cs.values()]
        rows.append(row + [f"{t['chosen']:g}" if t["chosen"] else "-",
                           f"{t['fixed']:g}" if t["fixed"] else "not fixed yet",
                           commits_text(cells)])
    return table(rows, ["algorithm", *[f"lr {lr:g}" for lr in lrs], "chosen by the rule",
                        "fixed in the code (TUNED_LR)", "commit"])


def tuned_table(tuned: dict, idx: dict) -> str:
    rows = []
    for a, p in tuned["algos"].items():
        if p["status"] == "diverged":
            rows.append([NAME.get(a, a), f"{p['lr']:g}", p["iterations"], 0, "diverged",
                         "-", f"every seed diverged ({p['diverged']})",
                         commits_text(idx[("movielens", "tuned", a)].values())])
            continue
        rows.append([NAME.get(a, a), f"{p['lr']:g}", p["iterations"],
                     f"{p['seeds']}" + (f" (+{p['diverged']} diverged)" if p["diverged"]
                                        else ""),
                     fmt_ci(p["final"], "", 4), fmt_ci(p["best_per_seed"], "", 4),
                     f"{p['status']} ({p['improvement_pct']:+.2f}% over the last 20%; best "
                     f"mean {p['best']:.4g} at {p['best_s']:.0f} s)",
                     commits_text(idx[("movielens", "tuned", a)].values())])
    return table(rows, ["algorithm", "lr", "iterations", "seeds", "final test RMSE",
                        "best test RMSE (per seed, averaged)", "plateau rule (mean curve)",
                        "commit"])


def gains_table(res: dict, idx: dict) -> str:
    tuned = res["tuned"]
    d = idx.get(("movielens", "main", "divshare"), {})
    before = {b: gain(d, idx[("movielens", "main", b)]) for b in tuned["gain_60"]
              if d and ("movielens", "main", b) in idx}
    rows = []
    for b, g60 in tuned["gain_60"].items():
        gb, ge = tuned["gain_best"][b], tuned["gain_end"][b]
        rows.append([NAME.get(b, b),
                     fmt_ci(before[b], "%") + f" ({before[b]['verdict']})" if b in before
                     else "-",
                     f"{fmt_ci(g60, '%')} ({g60['verdict']})",
                     f"{fmt_ci(ge, '%')} at {ge['t']:.0f} s ({ge['verdict']})",
                     f"{fmt_ci(gb, '%')} ({gb['verdict']}; {tuned['bound'][b]})"])
    return table(rows, ["DivShare against", "before tuning: lr 0.2 for all, 60 iterations "
                        "(main comparison)", "after tuning: 60 iterations",
                        "after tuning: at the shorter run's end (equal time)",
                        "after tuning: at each run's best point"])


def plot_gain_curves(res: dict, idx: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = idx.get(("movielens", "tuned", "divshare"))
    if not d:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for b in ("adpsgd", "swift", "local"):
        base = idx.get(("movielens", "tuned", b))
        if not base or not set(base) & set(d):
            continue
        t, m, lo, hi = gain_curve(d, base)
        line, = ax.plot(t, m, label=f"over {NAME[b]}")
        ax.fill_between(t, np.nan_to_num(lo, nan=m), np.nan_to_num(hi, nan=m), alpha=0.2,
                        color=line.get_color())
    ax.axhline(0, color="k", lw=0.7)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("DivShare's test RMSE gain, % (band: 95% CI over seeds)")
    ax.set_title("MovieLens, each algorithm at its tuned lr: the gain over time", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def targets_lines(tuned: dict) -> list[str]:
    """Time to the tuned comparison's targets (from the pilot) and DivShare's speedups."""
    if not TUNED_TARGETS:
        return ["Targets for the tuned comparison: none fixed (no pilot ran; see "
                "TUNED_TARGETS in `divjax/reproduction/tuning.py`).", ""]
    rows = []
    for a in tuned["algos"]:
        rows.append([NAME.get(a, a), *[tta_text(tuned["tta"].get((a, y))) for y in TUNED_TARGETS],
                     *[speed_text(tuned["speedup"].get((a, y))) if a != "divshare" else "-"
                       for y in TUNED_TARGETS]])
    return ["Targets (fixed from the pilot on seed 99 alone, its numbers in TUNED_TARGETS' "
            "comment; halfway and 90% of the way from local-only's plateau to the best "
            "plateau): test RMSE "
            + " and ".join(f"{y:g}" for y in TUNED_TARGETS) + ".", "",
            table(rows, ["algorithm", *[f"time to RMSE {y:g} (s)" for y in TUNED_TARGETS],
                         *[f"DivShare's speedup to {y:g} (x)" for y in TUNED_TARGETS]]), ""]


def tuning_section(res: dict, idx: dict, out: Path, rel, cmd: str) -> list[str]:
    """Tune (validation split) -> chosen rates -> the tuned runs, their plateaus and gains."""
    L = ["## Each algorithm at its own learning rate, run to a plateau (MovieLens)", ""]
    tune = res.get("tune") or {}
    if not tune:
        return L + [f"No cells yet: `{cmd} --parts tune`, then `--parts tuned`.", ""]
    L += [f"**Tuning** (`{cmd} --parts tune`): the main setting (60 iterations) with each "
          f"node holding out {VALIDATION_SHARE:g} of its own training ratings "
          "(`SimConfig.validation_share`); every evaluation is on the union of the held-out "
          "ratings, never on the test set. The rates are points of one vmapped program per "
          "algorithm. Rule (`divjax.reproduction.tuning.choose_lr`): the lowest mean final "
          "validation RMSE over the seeds, a diverged seed counting as the worst; ties go to "
          "the smaller rate. Cell: mean validation RMSE [95% CI].", "", tune_table(tune, idx),
          ""]
    edge = [a for a, t in tune.items() if t["chosen"] in (min(t["scores"]), max(t["scores"]))]
    if edge:
        L += [f"At the grid's edge: {', '.join(NAME.get(a, a) for a in edge)} (the best rate "
              "may lie outside the grid; a wider grid was not run).", ""]
    moved = [a for a, t in tune.items() if t["fixed"] and t["chosen"] != t["fixed"]]
    if moved:
        L += ["**The rule applied to the cells now differs from the rates the tuned part ran "
              f"with** for {', '.join(moved)}: rerun the tuned part after fixing TUNED_LR.", ""]
    tuned = res.get("tuned")
    if not tuned:
        return L + [f"No tuned cells yet: `{cmd} --parts tuned`.", ""]
    lens = ", ".join(f"{NAME[a]} {TUNED_ITERS[a]}" for a in TUNE_ALGOS if a in TUNED_ITERS)
    L += [f"**Tuned runs** (`{cmd} --parts tuned`): each algorithm at its chosen rate on the "
          f"test set, iterations {lens}. AD-PSGD's and Swift's appended send queues make the "
          "engine's ring grow with the run (an (n, D) slot of 50 MB per slot of delay): their "
          "length is the longest that fits this shared machine's memory (see TUNED_ITERS in "
          "`divjax/reproduction/tuning.py` for the measured sizes). The plateau rule is "
          "one-sided (`divjax.frontends.stats.plateau_status`).", "", tuned_table(tuned, idx), "",
          "DivShare's gain (positive = lower test RMSE), paired by seed (a seed where either "
          "run diverged is left out of the pairs; the table above counts them). A gain "
          "between best points is a size at a plateau only when both runs stopped improving; "
          "otherwise the column says which way the unfinished run can still move it.", "",
          gains_table(res, idx), ""]
    L += targets_lines(tuned)
    png, png2 = out / "movielens_tuned.png", out / "movielens_tuned_gain.png"
    if plot_curves(idx, "movielens", "tuned", TUNE_ALGOS, png, TUNED_TARGETS):
        L += [f"![MovieLens tuned]({rel(png)})", ""]
    if plot_gain_curves(res, idx, png2):
        L += [f"![MovieLens tuned gain]({rel(png2)})", ""]
    return L
