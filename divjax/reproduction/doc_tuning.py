"""The document's section on tuned learning rates and sizes at a plateau (MovieLens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from divjax.reproduction.figures import plot_curves
from divjax.reproduction.plateaus import gain_curve
from divjax.reproduction.text import commits_text, fmt_ci, speed_text, table, tta_text
from divjax.reproduction.configs import APPENDED
from divjax.reproduction.tuning import (
    TUNE_ALGOS,
    TUNED_EVERY,
    TUNED_ITERS,
    TUNED_LONG_ITERS,
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
    L += equal_accuracy_lines(tuned) + long_lines(tuned, idx, cmd)
    png, png2 = out / "movielens_tuned.png", out / "movielens_tuned_gain.png"
    long = idx.get(("movielens", "tuned-long", "divshare"))
    shown = {**idx, ("movielens", "tuned", "divshare"): long} if long else idx
    if plot_curves(shown, "movielens", "tuned", TUNE_ALGOS, png, TUNED_TARGETS):
        L += [f"![MovieLens tuned]({rel(png)})", ""]
        if long:
            L += ["(DivShare's curve is the tuned-long run's, whose first "
                  f"{TUNED_ITERS['divshare']} iterations are the tuned run's, see above.)", ""]
    if plot_gain_curves(res, idx, png2):
        L += [f"![MovieLens tuned gain]({rel(png2)})", ""]
    return L


def equal_accuracy_lines(tuned: dict) -> list[str]:
    """DivShare's speedup at equal accuracy over each algorithm of the tuned part."""
    eq = tuned.get("equal_accuracy") or {}
    if not eq:
        return []
    rows = []
    for b, r in eq.items():
        p = tuned["algos"][b]
        rows.append([NAME.get(b, b), f"{p['iterations']} ({p['status']})",
                     fmt_ci(r["target"], "", 4), fmt_ci(r["t_base"]), fmt_ci(r["t_div"]),
                     f"{speed_text(r)} ({r['verdict']})"])
    return ["**At equal accuracy** (`divjax.frontends.stats.equal_accuracy_speedup`, the tuned "
            "cells above): each baseline's own final test RMSE is the target; the speedup is "
            "the time the baseline first reached it over the time DivShare first did, paired "
            "by seed (a diverged baseline seed is left out), interval on the log ratios. It "
            "does not depend on where DivShare's run stops, only on where the baseline's does: "
            "a baseline still improving at its end first reaches its final RMSE there, so "
            "its speedup is at the accuracy it had when its run (the longest that fits in "
            "memory for Swift and AD-PSGD) stopped, not at a plateau; a baseline at its "
            "plateau (flat curve) first touches its final value somewhere on the flat part, so "
            "its time there is set by the curve's small wiggles.", "",
            table(rows, ["DivShare against", "its run: iterations (plateau rule)",
                         "target: its final test RMSE", "its time to the target (s)",
                         "DivShare's time to it (s)", "speedup t_base / t_DivShare (x)"]), ""]


def long_lines(tuned: dict, idx: dict, cmd: str) -> list[str]:
    """DivShare run to a plateau (the tuned-long part): its plateau, its first evaluations
    against the tuned cells, its gain at its best point over each algorithm's best."""
    lg = tuned.get("long")
    if not lg:
        return [f"**DivShare to a plateau**: no cells yet (`{cmd} --parts tuned-long`: the "
                f"tuned DivShare run, {TUNED_LONG_ITERS:,} iterations).", ""]
    p, chk = lg["plateau"], lg["check"]
    if p["status"] == "diverged":
        return ["**DivShare to a plateau** (`--parts tuned-long`): every seed diverged.", ""]
    long = idx[("movielens", "tuned-long", "divshare")].values()
    short = idx[("movielens", "tuned", "divshare")].values()
    L = [f"**DivShare to a plateau** (`{cmd} --parts tuned-long`, commit "
         f"{commits_text(long)}): the tuned DivShare run (lr {p['lr']:g}, the same seeds, an "
         f"evaluation every {TUNED_EVERY} iterations) for {p['iterations']:,} iterations "
         f"instead of {TUNED_ITERS['divshare']}. Plateau rule on its mean curve: **{p['status']}** "
         f"({p['improvement_pct']:+.2f}% over the last 20%, {p['from_s']:.0f}-"
         f"{p['to_s']:.0f} s; best mean {p['best']:.4g} at {p['best_s']:.0f} s, the end "
         f"{max(0.0, p['behind_best_pct']):.2f}% behind it); final test RMSE "
         f"{fmt_ci(p['final'], '', 4)}, best per seed {fmt_ci(p['best_per_seed'], '', 4)}. "
         + check_text(chk, short), ""]
    rows = []
    for b, g in lg["gain_best"].items():
        q = tuned["algos"][b]
        rows.append([NAME.get(b, b), f"{q['iterations']} ({q['status']})",
                     f"{fmt_ci(g, '%')} ({g['verdict']})", lg["bound"][b]
                     + ("; its run is the longest that fits in memory" if b in APPENDED
                        and not q["stopped"] else "")])
    return L + ["DivShare's gain at its best point over each algorithm's best point (per "
                "seed, paired; positive = lower test RMSE). It is a size at a plateau only "
                "where both runs stopped improving; otherwise the last column says which way "
                "the unfinished run can still move it.", "",
                table(rows, ["DivShare against", "its run: iterations (plateau rule)",
                             "gain at the best points", "what it is"]), ""]


def check_text(chk: dict, short) -> str:
    """One sentence: the long run's first evaluations against the tuned run's."""
    if not chk["evaluations"]:
        return "Its evaluation times differ from the tuned cells': not compared."
    head = (f"Its first {chk['evaluations']} evaluations ({len(chk['seeds'])} seeds) against "
            f"the tuned cells' (commit {commits_text(short)}): ")
    if chk["identical"]:
        return head + "bit for bit the same, every curve."
    return head + (f"{', '.join(chk['differ'])} differ, test RMSE by at most "
                   f"{chk['max_abs']:.2g} ({100 * chk['max_rel']:.2g}% relative).")


def plateau_summary(res: dict) -> list[str]:
    """The first screen's "by how much at a plateau" line: DivShare's gain at a plateau (or the
    bound it is) and its speedups at equal accuracy, each at its tuned rate."""
    tuned = res.get("tuned") or {}
    eq, lg = tuned.get("equal_accuracy") or {}, tuned.get("long")
    if not eq:
        return []
    L = "  At equal accuracy (time to each baseline's own final RMSE, its time over DivShare's, " \
        "paired by seed): " + "; ".join(f"{fmt_ci(r, 'x')} over {NAME.get(b, b)} "
                                        f"({r['verdict']})" for b, r in eq.items()) + "."
    if not lg or lg["plateau"]["status"] == "diverged":
        return [L + " DivShare to a plateau: no tuned-long cells yet."]
    p = lg["plateau"]
    L += (f" DivShare run to {p['iterations']:,} iterations ({p['status']}, best mean RMSE "
          f"{p['best']:.4g} at {p['best_s']:.0f} s): its gain at the best points " + "; ".join(
              f"{fmt_ci(g, '%')} over {NAME.get(b, b)} at {tuned['algos'][b]['iterations']} "
              f"iterations ({g['verdict']}; {lg['bound'][b]}"
              + (", memory-bound run" if b in APPENDED and not tuned["algos"][b]["stopped"]
                 else "") + ")" for b, g in lg["gain_best"].items()) + ".")
    return [L]


def plateau_front_rows(res: dict, where: str) -> list[str]:
    """The README's row on sizes at a plateau (MovieLens, each algorithm at its tuned rate):
    DivShare's gain at the best points, marked as the bound it is, and at equal accuracy."""
    tuned = res.get("tuned") or {}
    lg, eq = tuned.get("long"), tuned.get("equal_accuracy") or {}
    if not lg or lg["plateau"]["status"] == "diverged" or not lg["gain_best"]:
        return []
    p = lg["plateau"]
    return [f"| MovieLens, each algorithm at its tuned lr, DivShare to {p['iterations']:,} "
            f"iterations ({p['status']}) | DivShare's test RMSE gain at the best points: "
            + "; ".join(f"{fmt_ci(g, '%')} over {NAME.get(b, b)} ({g['verdict']}; "
                        f"{lg['bound'][b]}" + (", a memory-bound run" if b in APPENDED and not
                                               tuned["algos"][b]["stopped"] else "") + ")"
                        for b, g in lg["gain_best"].items())
            + "; at equal accuracy (each baseline's final RMSE): " + "; ".join(
                f"{fmt_ci(r, 'x')} over {NAME.get(b, b)} ({r['verdict']})"
                for b, r in eq.items()) + f" | {where} |"]
