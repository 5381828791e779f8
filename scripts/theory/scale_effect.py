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
"""

from __future__ import annotations

import common as C
import numpy as np

from divjax import product

NAME = "scale_effect"


def main(argv=None) -> dict:
    p = C.parser(NAME, __doc__)
    p.add_argument("--ns", type=int, nargs="+", default=None, help="node counts")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates")
    args = C.parse_args(NAME, __doc__, argv, parser=p)
    ns = args.ns or ([4, 8] if args.tiny else [4, 8, 16, 32, 64])
    lrs = args.lrs or ([0.1] if args.tiny else [0.03, 0.1])
    rows, curves = [], {}
    for n in ns:
        cfg = C.base_config(args.tiny, n_nodes=n,
                              fanout=min(C.base_config(args.tiny).fanout, n - 1))
        task = C.theory_task(cfg, args.tiny)
        grid = product(C.base_hparams(cfg, task, lr=lrs[0]), lr=lrs)
        m = C.run_grid(cfg, task, grid, args.seeds, args.base_seed,
                       vmap=not (args.tiny or args.loop))
        consts = C.problem_constants(cfg, task)
        for h, lr in enumerate(lrs):
            iters = m["iterations_mean"][h].mean(0)
            gap = m["gap_avgmodel"][h].mean(0)
            cons = m["consensus"][h].mean(0)
            curves[(n, lr)] = (iters, gap)
            ideal = lr * consts["sigma2"] / (4 * n)
            plateau = float(C.tail_mean(gap))
            rows.append({"n": n, "lr": lr, "sigma2": consts["sigma2"], "zeta2": consts["zeta2"],
                         "gap_plateau": plateau, "ideal_plateau": ideal,
                         "plateau_ratio": plateau / ideal,
                         "consensus_plateau": float(C.tail_mean(cons)),
                         "grad_sq_plateau": float(C.tail_mean(
                             m["grad_sq_avgmodel"][h].mean(0)))})
    slopes = {lr: C.loglog_slope([r["n"] for r in rows if r["lr"] == lr],
                                 [r["gap_plateau"] for r in rows if r["lr"] == lr])
              for lr in lrs}
    columns = list(rows[0])
    notes = [f"lr={lr}: log-log slope of gap plateau vs n = {s:.2f} (reference -1 for the "
             "gamma sigma^2/n term; 0 where the consensus/delay terms dominate)"
             for lr, s in slopes.items()]
    notes.append(f"T = {cfg.duration_s / cfg.compute_s:.0f} iterations per node (~); fanout "
                 "s = min(base fanout, n-1), Omega fixed.")
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
    meta = C.meta_of(C.base_config(args.tiny), args, ns=ns, lrs=lrs,
                     slopes={str(k): v for k, v in slopes.items()})
    return C.finish(args.out, NAME, columns, rows, meta, fig, notes)


if __name__ == "__main__":
    main()
