"""Consensus distance over time, against the learning rate and the heterogeneity across nodes.

Consensus distance Xi_t = (1/n) sum_i ||x_i - x_bar||^2. Standard analyses of decentralized SGD
bound its stationary level by Xi <~ gamma^2 (sigma^2 / p + zeta^2 / p^2) (times a delay factor for
asynchronous gossip): quadratic in the learning rate and linear in sigma^2 + zeta^2. The script
sweeps lr (vmapped) for a few heterogeneity levels zeta (a Python loop: each level is a new data
set) and reports the plateau, its log-log slope against lr (reference 2) and the normalised level
Xi / (gamma^2 (sigma^2 + zeta^2)), which should be roughly constant if the bound's shape holds.

    python scripts/theory/consensus.py [--tiny] [--out DIR]
"""

from __future__ import annotations

import common as C

from divjax import product

NAME = "consensus"


def main(argv=None) -> dict:
    args = C.parse_args(NAME, __doc__, argv)
    cfg = C.base_config(args.tiny)
    lrs = [0.03, 0.1] if args.tiny else [0.01, 0.03, 0.1, 0.3]
    hets = [1.0] if args.tiny else [0.0, 1.0, 3.0]
    rows, curves, slopes = [], {}, {}
    for het in hets:
        task = C.theory_task(cfg, args.tiny, heterogeneity=het)
        grid = product(C.base_hparams(cfg, task, lr=lrs[0]), lr=lrs)
        m = C.run_grid(cfg, task, grid, args.seeds, args.base_seed,
                       vmap=not (args.tiny or args.loop))
        consts = C.problem_constants(cfg, task)
        plateaus = []
        for h, lr in enumerate(lrs):
            iters = m["iterations_mean"][h].mean(0)
            cons = m["consensus"][h].mean(0)
            curves[(het, lr)] = (iters, cons)
            xi = float(C.tail_mean(cons))
            plateaus.append(xi)
            rows.append({"heterogeneity": het, "lr": lr, "sigma2": consts["sigma2"],
                         "zeta2": consts["zeta2"], "consensus_T": float(cons[-1]),
                         "consensus_plateau": xi,
                         "normalised": xi / (lr**2 * (consts["sigma2"] + consts["zeta2"])),
                         "gap_plateau": float(C.tail_mean(m["gap_avgmodel"][h].mean(0)))})
        slopes[het] = C.loglog_slope(lrs, plateaus)
    columns = list(rows[0])
    notes = [f"heterogeneity={het}: log-log slope of the consensus plateau vs lr = {s:.2f} "
             "(reference 2)" for het, s in slopes.items()]
    notes.append("normalised = consensus_plateau / (lr^2 (sigma^2 + zeta^2)); the reference "
                 "bound predicts it roughly constant (its constant involves p and tau, not "
                 "computed here).")
    plt = C.matplotlib_pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    mid = hets[len(hets) // 2]
    for (het, lr), (iters, cons) in curves.items():
        if het == mid:
            ax[0].loglog(iters, cons, label=f"lr={lr}")
    for i, het in enumerate(hets):
        sub = [r for r in rows if r["heterogeneity"] == het]
        ax[1].loglog(lrs, [r["consensus_plateau"] for r in sub], "o-", color=f"C{i}",
                     label=f"heterogeneity={het}")
        first = sub[0]["consensus_plateau"]
        ax[1].loglog(lrs, [first * (lr / lrs[0]) ** 2 for lr in lrs], ":", color=f"C{i}")
    ax[0].set(xlabel="iterations per node", ylabel="(1/n) sum ||x_i - x_bar||^2",
              title=f"consensus distance over time (heterogeneity={mid})")
    ax[1].set(xlabel="lr", ylabel="consensus plateau", title="plateau vs lr (dotted: slope 2)")
    for a in ax:
        a.legend(fontsize=7)
    meta = C.meta_of(cfg, args, lrs=lrs, heterogeneities=hets,
                     slopes={str(k): v for k, v in slopes.items()})
    return C.finish(args.out, NAME, columns, rows, meta, fig, notes)


if __name__ == "__main__":
    main()
