"""The reproduction document's figures (matplotlib, Agg), each drawn from the cells."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from divjax.reproduction.configs import PAPER
from divjax.frontends.stats import mean_ci, two_sided


def plot_curves(idx: dict, task: str, regime: str, algos, path: Path, targets=()) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    primary = None
    for a in algos:
        cells = idx.get((task, regime, a))
        if not cells:
            continue
        c0 = next(iter(cells.values()))
        primary = c0["primary"]
        t = np.asarray(c0["curve"]["time_s"])
        ys = np.array([cells[s]["curve"][primary + "_mean"] for s in sorted(cells)], float)
        stats = [mean_ci(ys[:, j]) for j in range(ys.shape[1])]
        m = np.array([s["mean"] for s in stats])
        lo = np.array([s["lo"] for s in stats])
        hi = np.array([s["hi"] for s in stats])
        line, = ax.plot(t, m, label=f"{a} ({len(cells)} seeds)")
        ax.fill_between(t, np.nan_to_num(lo, nan=m), np.nan_to_num(hi, nan=m), alpha=0.2,
                        color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    for y in targets:
        ax.axhline(y, color="k", lw=0.7, ls=":")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"test {primary} (mean over nodes; band: 95% CI over seeds)")
    ax.set_title(f"{task}, regime {regime}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_maps(rmap: dict, path: Path, scale: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = sorted({r for r, _ in rmap})
    strag = sorted({k for _, k in rmap})
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.6))
    panels = (("speedup", "time-to-RMSE-target speedup of DivShare over AD-PSGD (x)",
               PAPER["cifar10_speedup"], True),
              ("speedup_swift", "time-to-RMSE-target speedup of DivShare over Swift (x)",
               PAPER["cifar10_speedup"], True),
              ("gain_swift", "final RMSE gain of DivShare over Swift (%)",
               PAPER["movielens_loss_drop_pct"], False))
    for ax, (key, title, paper_value, is_ratio) in zip(axes, panels, strict=True):
        img = np.full((len(strag), len(ratios)), np.nan)
        text = [[""] * len(ratios) for _ in strag]
        box = np.zeros_like(img, bool)
        for (r, k), e in rmap.items():
            i, j = strag.index(k), ratios.index(r)
            res = e.get(key)
            if not res or not np.isfinite(res.get("mean", float("nan"))):
                text[i][j] = "missing" if res is None else "n/a"
                continue
            img[i, j] = math.log(res["mean"]) if is_ratio else res["mean"]
            star = {"holds": "*", "opposite": "!"}.get(res["verdict"], "")
            cens = ""
            if is_ratio and (res["censored_base"] or res["censored_div"] or res["neither"]):
                cens = f"\ncens {res['censored_base']}/{res['censored_div']}/{res['neither']}"
            text[i][j] = (f"{res['mean']:.2f}{star}\n[{res['lo']:.2f},{res['hi']:.2f}]{cens}"
                          if np.isfinite(res["lo"]) else f"{res['mean']:.2f}{cens}")
            box[i, j] = two_sided(res) and res["lo"] <= paper_value <= res["hi"]
        lim = np.nanmax(np.abs(img)) if np.isfinite(img).any() else 1.0
        im = ax.imshow(img, origin="lower", aspect="auto", cmap="RdBu", vmin=-lim, vmax=lim)
        for i in range(len(strag)):
            for j in range(len(ratios)):
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7,
                        bbox={"fc": "white", "alpha": 0.6, "lw": 0, "pad": 1})
                if box[i, j]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5,
                                               ec="gold"))
        ax.set_xticks(range(len(ratios)), [f"{r:g}x" for r in ratios])
        ax.set_yticks(range(len(strag)), [f"{k}" for k in strag])
        ax.set_xlabel("compute time per iteration / time a fast node needs to send 6 models")
        ax.set_ylabel("stragglers (of 60)" if scale != "tiny" else "stragglers")
        ax.set_title(title + "\ngold box: two-sided 95% CI (no censored seed) contains "
                             f"the paper's {paper_value:g}{'x' if is_ratio else '%'}", fontsize=8)
        fig.colorbar(im, ax=ax, label="log speedup" if is_ratio else "%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_omega(ab: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(ab["rows"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, name in (("gain_swift", "over Swift"), ("gain_omega1", "over DivShare at Omega 1")):
        pts = [(k, ab["rows"][k][key]) for k in ks if ab["rows"][k][key]]
        if not pts:
            continue
        x = np.array([k for k, _ in pts], float)
        m = np.array([r["mean"] for _, r in pts])
        err = np.array([[r["mean"] - r["lo"], r["hi"] - r["mean"]] for _, r in pts]).T
        ax.errorbar(x, m, yerr=np.nan_to_num(err), marker="o", capsize=3,
                    label=f"RMSE gain {name}")
    ax.axhline(0, color="k", lw=0.7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("Omega (fragments per model)")
    ax.set_ylabel("final test RMSE gain, % (95% CI over 3 seeds)")
    ax2 = ax.twinx()
    ax2.plot(ks, [ab["rows"][k]["copies"]["mean"] for k in ks], "k--", lw=0.8,
             label="copies averaged per fragment")
    ax2.set_ylabel("copies averaged per fragment per aggregation (dashed)")
    ax.set_title("MovieLens main setting: DivShare's gain against Omega", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cifar_omega(co: dict, path: Path) -> None:
    """CIFAR-10 Omega ablation: DivShare's final-accuracy gain against Omega (over Omega 1 and
    over Swift), node mean and average model, per setting, with 95% intervals over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, suffix, what in zip(axes, ("", "_avg"), ("node mean", "average model"), strict=True):
        for setting, st in co["settings"].items():
            for key, name, mk in (("gain_omega1", "over Omega 1", "o"), ("gain_swift",
                                                                        "over Swift", "s")):
                pts = [(k, r[key + suffix]) for k, r in sorted(st["rows"].items())
                       if r[key + suffix]]
                if not pts:
                    continue
                x = np.array([k for k, _ in pts], float)
                m = np.array([r["mean"] for _, r in pts])
                err = np.array([[r["mean"] - r["lo"], r["hi"] - r["mean"]] for _, r in pts]).T
                ax.errorbar(x, m, yerr=np.nan_to_num(err), marker=mk, capsize=3,
                            ls="-" if setting == "main" else "--",
                            label=f"{'main' if setting == 'main' else setting}: {name}")
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xscale("log", base=2)
        ks = sorted({k for st in co["settings"].values() for k in st["rows"]})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("Omega (fragments per model)")
        ax.set_ylabel(f"final accuracy gain of DivShare, % ({what})")
        ax.set_title(f"CIFAR-10: gain against Omega, {what} (95% CI over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
