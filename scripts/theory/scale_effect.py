"""n: the gap plateau against the number of nodes (linear speedup of the noise term).

At a fixed lr the gamma sigma^2 / n term of the reference rate (common.py) predicts a gap
plateau proportional to 1/n (log-log slope -1) as long as it dominates the consensus and delay
terms, which do not shrink with n. The script runs n = 4 .. 64 (a Python loop: n fixes shapes;
each n is one program vmapped over lr x seeds), measures sigma^2 on each task (the synthetic task
draws one data set per node, so the problem changes slightly with n) and reports the plateau
against the ideal lr sigma^2 / (4 n) of mini-batch SGD with an n times larger batch.

    python scripts/theory/scale_effect.py [--tiny] [--out DIR] [--ns 4 8 ...] [--lrs 0.1 ...]

(--ns and --lrs replace the default grid, e.g. `--ns 64 256 1024 4096 --lrs 0.1 --seeds 2 --loop
--out scripts/theory/results/scale_effect_large` for the large-n run of issue 33.)

Each n is written to DIR/points/n<N>.json as soon as it is done (rows, curves, wall time, peak
memory); a later call with the same setting reads it instead of running that n again (--redo
runs it anyway), so a sweep cut short keeps what it has and can be resumed or extended. Memory
is linear in n: use --loop at large n (one run held at a time, per-node metrics dropped);
cached tasks and programs are freed between node counts.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time

import common as C
import numpy as np

from divjax import product

NAME = "scale_effect"


def main(argv=None) -> dict:
    p = C.parser(NAME, __doc__)
    p.add_argument("--ns", type=int, nargs="+", default=None, help="node counts")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates")
    p.add_argument("--redo", action="store_true",
                   help="run every n again even where DIR/points/n<N>.json has it")
    args = C.parse_args(NAME, __doc__, argv, parser=p)
    ns = args.ns or ([4, 8] if args.tiny else [4, 8, 16, 32, 64])
    lrs = args.lrs or ([0.1] if args.tiny else [0.03, 0.1])
    points = [point(n, lrs, args) for n in ns]
    rows = [r for pt in points for r in pt["rows"]]
    curves = {(pt["setting"]["n"], float(lr)): c for pt in points for lr, c in pt["curves"].items()}
    notes = slope_notes(rows, points, lrs)
    cfg = C.base_config(args.tiny, n_nodes=ns[-1])
    notes.append(f"T = {cfg.duration_s / cfg.compute_s:.0f} iterations per node (~); fanout "
                 "s = min(base fanout, n-1), Omega fixed; seed_spread = (max - min) / mean of "
                 "the per-seed plateaus.")
    timing = {str(pt["setting"]["n"]): {k: pt[k] for k in ("wall_s", "peak_rss_gb", "commit")}
              for pt in points}
    meta = C.meta_of(C.base_config(args.tiny), args, ns=ns, lrs=lrs, timing=timing,
                     slopes={str(lr): C.loglog_slope(*_xy(rows, lr)) for lr in lrs})
    return C.finish(args.out, NAME, list(rows[0]), rows, meta, plot(rows, curves, lrs), notes)


def point(n: int, lrs: list, args) -> dict:
    """The rows and curves of one n: read from DIR/points/n<N>.json if it holds this setting,
    else run (and write it)."""
    cfg = C.base_config(args.tiny, n_nodes=n, fanout=min(C.base_config(args.tiny).fanout, n - 1))
    setting = {"n": n, "lrs": list(lrs), "seeds": args.seeds, "base_seed": args.base_seed,
               "tiny": args.tiny, "cfg": repr(cfg)}
    path = args.out / "points" / f"n{n}.json"
    if path.exists() and not args.redo:
        saved = json.loads(path.read_text())
        if saved["setting"] == setting:
            print(f"n={n}: read {path}")
            return saved
        print(f"n={n}: {path} holds another setting; running it again")
    t0 = time.time()
    result = {"setting": setting, **run_point(cfg, lrs, args),
              "wall_s": round(time.time() - t0, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
              "commit": _commit()}
    if not args.tiny:
        C.release_caches()   # free this n's task data and executable before the next n
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(f"n={n}: {result['wall_s']} s, peak RSS {result['peak_rss_gb']} GB -> {path}")
    return result


def run_point(cfg, lrs: list, args) -> dict:
    """Run one n over lrs x seeds: its table rows, per-seed plateaus and gap curves."""
    n = cfg.n_nodes
    task = C.theory_task(cfg, args.tiny)
    consts = C.problem_constants(cfg, task)   # first: its program is freed before the run's
    grid = product(C.base_hparams(cfg, task, lr=lrs[0]), lr=lrs)
    m = C.run_grid(cfg, task, grid, args.seeds, args.base_seed,
                   vmap=not (args.tiny or args.loop), node_metrics=False)
    rows, curves, seeds = [], {}, {}
    for h, lr in enumerate(lrs):
        iters = m["iterations_mean"][h].mean(0)
        gap = m["gap_avgmodel"][h].mean(0)
        cons = m["consensus"][h].mean(0)
        curves[str(lr)] = [iters.tolist(), gap.tolist()]
        per_seed = [float(v) for v in C.tail_mean(m["gap_avgmodel"][h])]
        seeds[str(lr)] = per_seed
        ideal = lr * consts["sigma2"] / (4 * n)
        plateau = float(C.tail_mean(gap))
        rows.append({"n": n, "lr": lr, "sigma2": consts["sigma2"], "zeta2": consts["zeta2"],
                     "gap_plateau": plateau, "ideal_plateau": ideal,
                     "plateau_ratio": plateau / ideal,
                     "consensus_plateau": float(C.tail_mean(cons)),
                     "grad_sq_plateau": float(C.tail_mean(m["grad_sq_avgmodel"][h].mean(0))),
                     "seed_spread": (max(per_seed) - min(per_seed)) / plateau})
    return {"rows": rows, "curves": curves, "seed_plateaus": seeds}


def _xy(rows: list, lr: float, n_min: int = 0, key: str = "gap_plateau") -> tuple:
    sub = [r for r in rows if r["lr"] == lr and r["n"] >= n_min]
    return [r["n"] for r in sub], [r[key] for r in sub]


def slope_notes(rows: list, points: list, lrs: list) -> list[str]:
    """Log-log slopes of the plateau against n: all n, n >= 1,024, per seed, and over sigma^2."""
    notes = []
    for lr in lrs:
        s = C.loglog_slope(*_xy(rows, lr))
        notes.append(f"lr={lr}: log-log slope of gap plateau vs n = {s:.2f} (reference -1 for "
                     "the gamma sigma^2/n term; 0 where the consensus/delay terms dominate)")
        ns, _ = _xy(rows, lr)
        per_seed = np.array([pt["seed_plateaus"][str(lr)] for pt in points])   # (ns, S)
        seed_slopes = [C.loglog_slope(ns, per_seed[:, k]) for k in range(per_seed.shape[1])]
        ratio = [r["gap_plateau"] / r["sigma2"] for r in rows if r["lr"] == lr]
        notes.append(f"lr={lr}: per-seed slopes " + ", ".join(f"{v:.2f}" for v in seed_slopes)
                     + f"; slope of gap_plateau / sigma2 = {C.loglog_slope(ns, ratio):.2f}")
        big = _xy(rows, lr, n_min=1024)
        if len(big[0]) >= 2:
            notes.append(f"lr={lr}: slope over n >= 1024 ({len(big[0])} points) = "
                         f"{C.loglog_slope(*big):.2f}")
    return notes


def plot(rows: list, curves: dict, lrs: list):
    plt = C.matplotlib_pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for (n, lr), (iters, gap) in curves.items():
        if lr == lrs[-1]:
            ax[0].semilogy(iters, gap, label=f"n={n}")
    for lr in lrs:
        sub = [r for r in rows if r["lr"] == lr]
        x = np.array([r["n"] for r in sub], float)
        ax[1].loglog(x, [r["gap_plateau"] for r in sub], "o-", label=f"measured, lr={lr}")
        ax[1].loglog(x, [r["ideal_plateau"] for r in sub], ":", label=f"lr sigma^2/4n, lr={lr}")
    ax[0].set(xlabel="iterations per node", ylabel="f(x_bar) - f*", title=f"gap, lr={lrs[-1]}")
    ax[1].set(xlabel="n (nodes)", ylabel="gap plateau", title="plateau vs n (ref slope -1)")
    for a in ax:
        a.legend(fontsize=7)
    return fig


def _commit() -> str:
    """The git HEAD the point was made with, '+dirty' if divjax/ or these scripts have edits."""
    git = ["git", "-C", str(C.HERE)]
    try:
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", ":/divjax",
                                      ":/scripts/theory/*.py"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


if __name__ == "__main__":
    main()
