"""The CIFAR-10 regime map (part `cifar-map`): DivShare's accuracy gain over AD-PSGD and Swift
per regime (compute time x stragglers), for the node mean and the average model, from whatever
cells exist; the missing ones listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from divjax.reproduction.configs import CIFAR_MAP, MAP_ALGOS
from divjax.reproduction.text import commits_text, fmt_ci, table
from divjax.frontends.stats import equal_accuracy_speedup, final, gain, mean_ci, size_verdict

SEEDS = (0, 1, 2)


def regime_name(r: float, k: int) -> str:
    return f"r{r:g}-s{k}"


def cifar_map(idx: dict) -> dict:
    """Per regime of CIFAR_MAP: final accuracy per algorithm (node mean and average model) and
    DivShare's gain over each baseline (paired by seed), and the missing cells."""
    out = {"regimes": {}, "missing": []}
    for r, k in CIFAR_MAP:
        reg = regime_name(r, k)
        cells = {a: idx.get(("cifar10", reg, a), {}) for a in MAP_ALGOS}
        out["missing"] += [f"{reg}/{a}-seed{s}" for a in MAP_ALGOS for s in SEEDS
                           if s not in cells[a]]
        e = {"final": {a: mean_ci([100 * final(c) for c in cs.values()])
                       for a, cs in cells.items() if cs},
             "final_avg": {a: mean_ci([100 * final(c, "acc_avgmodel") for c in cs.values()])
                           for a, cs in cells.items() if cs},
             "gain": {}, "gain_avg": {}, "speedup": {},
             "commit": commits_text(c for cs in cells.values() for c in cs.values())}
        d = cells["divshare"]
        for b in ("adpsgd", "swift"):
            if d and cells[b] and set(d) & set(cells[b]):
                e["gain"][b] = gain(d, cells[b])
                e["gain_avg"][b] = gain(d, cells[b], "acc_avgmodel")
                e["speedup"][b] = equal_accuracy_speedup(d, cells[b])
        out["regimes"][(r, k)] = e
    out["any"] = any(e["final"] for e in out["regimes"].values())
    return out


def fmt_speed(r: dict) -> str:
    """'1.5x [1.3, 1.7]' (n = 1: no interval), with '(upper bound)' when censored."""
    if not r["n"]:
        return "n/a"
    ci = f" [{r['lo']:.3g}, {r['hi']:.3g}]" if np.isfinite(r["lo"]) else " (n=1, no interval)"
    return f"{r['mean']:.3g}x{ci}" + (" (upper bound)" if r["censored_div"] else "")


def plot_cifar_map(cm: dict, path: Path) -> None:
    """Bars: DivShare's accuracy gain over AD-PSGD and Swift per regime, node mean and average
    model, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regs = list(cm["regimes"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, key, what in zip(axes, ("gain", "gain_avg"), ("node mean", "average model"),
                             strict=True):
        for j, b in enumerate(("adpsgd", "swift")):
            x = np.arange(len(regs)) + (j - 0.5) * 0.38
            rs = [cm["regimes"][g][key].get(b) for g in regs]
            m = np.array([r["mean"] if r else np.nan for r in rs])
            err = np.array([[r["mean"] - r["lo"], r["hi"] - r["mean"]] if r and
                            np.isfinite(r["lo"]) else [0, 0] for r in rs]).T
            ax.bar(x, np.nan_to_num(m), 0.38, yerr=err, capsize=3,
                   label=f"over {'AD-PSGD' if b == 'adpsgd' else 'Swift'}")
            for xi, mi in zip(x, m, strict=True):
                if not np.isfinite(mi):
                    ax.text(xi, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=7)
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xticks(range(len(regs)), [f"{r:g}x, {k} strag." for r, k in regs], fontsize=8)
        ax.set_xlabel("compute time / fast send time, stragglers (of 60)")
        ax.set_ylabel(f"final accuracy gain of DivShare, % ({what})")
        ax.set_title(f"CIFAR-10 regime map: {what} (95% CI over seeds)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cifar_map_section(res: dict, out: Path, rel, cmd: str) -> list[str]:
    """The CIFAR-10 regime map's section: table, figure, missing cells."""
    cm = res.get("cifar_map")
    L = ["## Regime map (CIFAR-10)", ""]
    if not cm or not cm["any"]:
        return L + [f"No cells yet: `{cmd} --parts cifar-map` (the lead is producing them).", ""]
    png = out / "cifar10_map.png"
    plot_cifar_map(cm, png)
    L += ["The `cifar` part's shortened training (8 local steps, 24 iterations per cell, the "
          "same training work in every cell) with the compute time per iteration at 0.1x and "
          "10x the time a fast node needs to send 6 GN-LeNet models, with 0 and the paper's 7 "
          f"stragglers (`{cmd} --parts cifar-map`). Gains are DivShare's relative final "
          "accuracy gain, paired by seed, for the node mean and for the average model. The "
          "speedup is at equal accuracy (the paper's 3.9x is a time-to-accuracy figure): per "
          "seed, the time the baseline took to first reach its own final node-mean accuracy "
          "over the time DivShare took to reach that accuracy (`divjax.frontends.stats."
          "equal_accuracy_speedup`; evaluations every 4 iterations, interpolated); \"size\" "
          "says where 3.9x lies against its interval.", "",
          f"![CIFAR-10 regime map]({rel(png)})", ""]
    rows = []
    for (r, k), e in cm["regimes"].items():
        rows.append([f"{r:g}x", k,
                     *[f"{fmt_ci(e[key][b], '%')} ({e[key][b]['verdict']})" if b in e[key]
                       else "missing" for key in ("gain", "gain_avg") for b in ("adpsgd",
                                                                                 "swift")],
                     *[f"{fmt_speed(e['speedup'][b])} ({e['speedup'][b]['verdict']}; size "
                       f"{size_verdict(e['speedup'][b], 3.9)})" if b in e["speedup"]
                       else "missing" for b in ("adpsgd", "swift")],
                     ", ".join(f"{a} {fmt_ci(v, '%', 3)}" for a, v in e["final"].items()),
                     e["commit"]])
    L += [table(rows, ["compute / send", "stragglers", "gain vs AD-PSGD (node mean)",
                       "gain vs Swift (node mean)", "gain vs AD-PSGD (average model)",
                       "gain vs Swift (average model)",
                       "speedup at equal accuracy vs AD-PSGD (x)",
                       "speedup at equal accuracy vs Swift (x)", "final accuracy (node mean)",
                       "commit"]), ""]
    if cm["missing"]:
        L += [f"Missing ({len(cm['missing'])} of {len(cm['regimes']) * 3 * len(SEEDS)}): "
              + ", ".join(cm["missing"]) + ".", ""]
    return L


def cifar_map_summary(res: dict) -> str:
    """One sentence for the first screen."""
    cm = res.get("cifar_map")
    if not cm or not cm["any"]:
        return ("CIFAR-10 regime map: no cells yet (`--parts cifar-map`), so where DivShare "
                "wins on CIFAR-10 is not established.")
    parts = []
    for (r, k), e in cm["regimes"].items():
        g = [f"{'AD-PSGD' if b == 'adpsgd' else 'Swift'} {fmt_ci(e['gain'][b], '%')} "
             f"({e['gain'][b]['verdict']}; average model {fmt_ci(e['gain_avg'][b], '%')}, "
             f"{e['gain_avg'][b]['verdict']})" for b in ("adpsgd", "swift") if b in e["gain"]]
        if "adpsgd" in e["speedup"]:
            sp = e["speedup"]["adpsgd"]
            g.append(f"time to AD-PSGD's final accuracy {fmt_speed(sp)} ({sp['verdict']}; "
                     f"the paper's 3.9x: {size_verdict(sp, 3.9)})")
        if g:
            parts.append(f"{r:g}x/{k} stragglers: " + ", ".join(g))
    miss = len(cm["missing"])
    return ("CIFAR-10 regime map (final accuracy gain, node mean): " + "; ".join(parts)
            + (f" ({miss} cells missing)" if miss else "") + ".")
