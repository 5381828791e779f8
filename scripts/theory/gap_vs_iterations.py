"""Rate and slope: optimality gap and gradient norm of the average model vs iterations, several lr.

For each constant learning rate gamma the script runs DivShare (n=16, Omega=4, s=3, 1 local step
per iteration, unequal compute times) on least squares with a known optimum and reports:
- the plateau of f(x_bar) - f* (last quarter of the run) and the ideal plateau gamma sigma^2/(4n)
  of mini-batch SGD with an n times larger batch (exact for a quadratic, small gamma);
- the log-log slope of the running average (1/T) sum_t ||grad f(x_bar_t)||^2 against T (the
  left-hand side of non-convex bounds): the F0/(gamma T) term predicts -1 until the plateau;
- the lower envelope over gamma of that running average (gamma tuned for each horizon T) and its
  log-log slope; the O(1/sqrt(nT)) term of the reference rate predicts -1/2 once noise dominates,
  the optimisation term -1 before (see common.py for the reference rate).

    python scripts/theory/gap_vs_iterations.py [--tiny] [--out DIR]
"""

from __future__ import annotations

import common as C
import numpy as np

from divjax import product

NAME = "gap_vs_iterations"


def main(argv=None) -> dict:
    args = C.parse_args(NAME, __doc__, argv)
    # 400 iterations: the small learning rates need them to leave their transient
    cfg = C.base_config(args.tiny) if args.tiny else C.base_config(False, duration_s=400.0)
    task = C.theory_task(cfg, args.tiny)
    lrs = [0.01, 0.1] if args.tiny else [0.01, 0.03, 0.1, 0.2, 0.4]
    grid = product(C.base_hparams(cfg, task, lr=lrs[0]), lr=lrs)
    m = C.run_grid(cfg, task, grid, args.seeds, args.base_seed, vmap=not (args.tiny or args.loop))
    consts = C.problem_constants(cfg, task)
    delays = C.delay_bound(cfg, task, C.take(grid, 0))

    iters = m["iterations_mean"].mean(axis=1)                    # (H, C)
    gap = m["gap_avgmodel"].mean(axis=1)                          # (H, C), mean over seeds
    grad = m["grad_sq_avgmodel"].mean(axis=1)
    cons = m["consensus"].mean(axis=1)
    run_grad = C.running_mean(grad)
    Ccount = gap.shape[1]
    lo = max(1, Ccount // 10)
    rows = []
    for h, lr in enumerate(lrs):
        ideal = lr * consts["sigma2"] / (4 * cfg.n_nodes)
        plateau = float(C.tail_mean(gap[h]))
        rows.append({
            "lr": lr,
            "gap_T": float(gap[h, -1]),
            "gap_plateau": plateau,
            "plateau_reached": C.plateau_reached(gap[h]),
            "ideal_plateau": ideal,
            "plateau_ratio": plateau / ideal,
            "avg_grad_sq_T": float(run_grad[h, -1]),
            "slope_avg_grad_sq": C.loglog_slope(iters[h, lo:], run_grad[h, lo:]),
            "consensus_plateau": float(C.tail_mean(cons[h])),
        })
    envelope = run_grad.min(axis=0)
    t_axis = iters.mean(axis=0)
    half = Ccount // 2
    env_slope_all = C.loglog_slope(t_axis[lo:], envelope[lo:])
    env_slope_late = C.loglog_slope(t_axis[half:], envelope[half:])
    reached = [r["plateau_reached"] for r in rows]
    lr_slope = C.loglog_slope(np.array(lrs)[reached],
                              np.array([r["gap_plateau"] for r in rows])[reached])
    rows.append({"lr": "tuned (envelope)", "gap_T": float(gap.min(axis=0)[-1]),
                 "gap_plateau": float("nan"), "plateau_reached": None,
                 "ideal_plateau": float("nan"),
                 "plateau_ratio": float("nan"), "avg_grad_sq_T": float(envelope[-1]),
                 "slope_avg_grad_sq": env_slope_late, "consensus_plateau": float("nan")})
    columns = list(rows[0])
    notes = [
        f"T = {t_axis[-1]:.0f} iterations per node; slopes fitted over T in "
        f"[{t_axis[lo]:.0f}, {t_axis[-1]:.0f}] (envelope: second half, [{t_axis[half]:.0f}, "
        f"{t_axis[-1]:.0f}]; over the whole range {env_slope_all:.2f}).",
        "Reference: slope -1 for a fixed lr before its plateau (F0/(gamma T)); envelope slope "
        "-1/2 when the sigma^2/(nT) term dominates (O(1/sqrt(nT))), -1 while optimisation "
        "dominates.",
        f"log-log slope of gap plateau vs lr, over the lr whose plateau is reached (third and "
        f"last quarter of the run within 25%): {lr_slope:.2f} (reference: 1 for the "
        "gamma sigma^2/n term, 2 for the consensus/delay term gamma^2 (1/p + tau)(...)).",
        "ideal_plateau = lr * sigma^2 / (4 n): mini-batch SGD with batch n*B on the same "
        "quadratic; plateau_ratio > 1 is the cost of gossip and delays (meaningful only where "
        "plateau_reached).",
        f"measured constants: L={consts['L']:.3g}, mu={consts['mu']:.3g}, F0={consts['F0']:.3g},"
        f" sigma^2={consts['sigma2']:.3g}, zeta^2={consts['zeta2']:.3g}; delay bound "
        f"tau_max={delays['tau_max']} iterations.",
    ]
    plt = C.matplotlib_pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for h, lr in enumerate(lrs):
        ax[0].loglog(iters[h], gap[h], label=f"lr={lr}")
        ax[0].axhline(rows[h]["ideal_plateau"], color=f"C{h}", ls=":", lw=0.8)
        ax[1].loglog(iters[h], run_grad[h], label=f"lr={lr}")
        ax[2].loglog(iters[h], cons[h], label=f"lr={lr}")
    ax[1].loglog(t_axis, envelope, "k--", lw=2, label="min over lr")
    ref = envelope[half] * (t_axis / t_axis[half]) ** -0.5
    ax[1].loglog(t_axis, ref, "k:", label="slope -1/2")
    ax[1].loglog(t_axis, envelope[lo] * (t_axis / t_axis[lo]) ** -1.0, "0.5", ls=":",
                 label="slope -1")
    ax[0].set(xlabel="iterations per node", ylabel="f(x_bar) - f*",
              title="gap of the average model (dotted: lr sigma^2/4n)")
    ax[1].set(xlabel="iterations T", ylabel="(1/T) sum ||grad f(x_bar)||^2",
              title="running average of the gradient norm")
    ax[2].set(xlabel="iterations per node", ylabel="(1/n) sum ||x_i - x_bar||^2",
              title="consensus distance")
    for a in ax:
        a.legend(fontsize=7)
    meta = C.meta_of(cfg, args, lrs=lrs, constants=consts, delay=delays,
                     lr_plateau_slope=lr_slope, envelope_slope_late=env_slope_late,
                     envelope_slope_all=env_slope_all)
    return C.finish(args.out, NAME, columns, rows, meta, fig, notes)


if __name__ == "__main__":
    main()
