"""Delay bound: gap, consensus and iterations-to-epsilon as the max delay in iterations grows.

Every link gets the same latency (0 .. 8 s with ~1 s iterations), so a message can reach its
receiver up to tau_max receiver iterations after it was sent (tau_max computed exactly from the
integer link timing, common.delay_bound). Compute times are unchanged, so iterations per second
are the same for every latency and iterations are a fair x axis. The grid lr x latency is one
vmapped program. With DivShare's replaced send queue a slow *bandwidth* drops messages instead of
delaying them more than one iteration (delay <= compute + latency), so latency is the knob that
moves tau (fragmentation_effect.py covers slow links).

Reference: the O(tau/T) term of the rate (common.py) says the iterations needed to reach a fixed
epsilon grow affinely in tau, T_eps ~ a + b tau, and the gamma^2 tau (...) term says the plateau
grows with tau at a fixed lr. The script fits T_eps = a + b tau_max per lr.

    python scripts/theory/delay_effect.py [--tiny] [--out DIR]
"""

from __future__ import annotations

import common as C
import numpy as np

from divjax import product

NAME = "delay_effect"


def main(argv=None) -> dict:
    args = C.parse_args(NAME, __doc__, argv)
    cfg = C.base_config(args.tiny)
    task = C.theory_task(cfg, args.tiny)
    lrs = [0.1] if args.tiny else [0.03, 0.1]
    lats = [0.0, 2.0] if args.tiny else [0.0, 1.0, 2.0, 4.0, 8.0]
    grid = product(C.base_hparams(cfg, task, lr=lrs[0]), lr=lrs, latency_s=lats)
    m = C.run_grid(cfg, task, grid, args.seeds, args.base_seed, vmap=not (args.tiny or args.loop))
    H = len(lrs) * len(lats)
    delays = [C.delay_bound(cfg, task, C.take(grid, h)) for h in range(H)]
    iters = m["iterations_mean"].mean(axis=1)
    gap = m["gap_avgmodel"].mean(axis=1)
    cons = m["consensus"].mean(axis=1)
    F0 = float(gap[:, 0].max())  # the first sample is after one interval; use as a scale only
    rows, fits = [], {}
    for i, lr in enumerate(lrs):
        hs = [i * len(lats) + j for j in range(len(lats))]
        plateau = C.tail_mean(gap[hs])
        eps = float(max(0.05 * F0, 2.0 * plateau.max()))
        t_eps = [C.first_below(iters[h], gap[h], eps) for h in hs]
        taus = np.array([delays[h]["tau_max"] for h in hs], float)
        ok = np.isfinite(t_eps)
        if ok.sum() >= 2 and np.ptp(taus[ok]) > 0:
            b, a = np.polyfit(taus[ok], np.array(t_eps)[ok], 1)
        else:
            a = b = float("nan")
        fits[lr] = {"eps": eps, "a": float(a), "b": float(b)}
        for j, h in enumerate(hs):
            rows.append({
                "lr": lr, "latency_s": lats[j], "tau_max": delays[h]["tau_max"],
                "tau_mean": delays[h]["tau_mean"], "gap_T": float(gap[h, -1]),
                "gap_plateau": float(plateau[j]),
                "consensus_plateau": float(C.tail_mean(cons[h])),
                "iters_to_eps": t_eps[j],
            })
    columns = list(rows[0])
    notes = [f"lr={lr}: eps={f['eps']:.3g}, fit iters_to_eps = {f['a']:.3g} + {f['b']:.3g} "
             f"tau_max" for lr, f in fits.items()]
    notes += [
        f"T = {iters[0, -1]:.0f} iterations per node; gap sampled every {cfg.eval_every_s} s "
        f"(~{cfg.eval_every_s / cfg.compute_s:.0f} iterations), so iters_to_eps has that "
        "resolution.",
        "tau_max: most receiver iterations between a send and the aggregation that averages it "
        "(1 = the receiver's next aggregation).",
    ]
    plt = C.matplotlib_pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    i = len(lrs) - 1
    for j, lat in enumerate(lats):
        h = i * len(lats) + j
        ax[0].semilogy(iters[h], gap[h], label=f"tau_max={delays[h]['tau_max']}")
        ax[1].semilogy(iters[h], cons[h], label=f"tau_max={delays[h]['tau_max']}")
    for i, lr in enumerate(lrs):
        sub = [r for r in rows if r["lr"] == lr]
        ax[2].plot([r["tau_max"] for r in sub], [r["iters_to_eps"] for r in sub], "o-",
                   label=f"lr={lr} (eps={fits[lr]['eps']:.2g})")
    ax[0].set(xlabel="iterations per node", ylabel="f(x_bar) - f*",
              title=f"gap, lr={lrs[-1]}")
    ax[1].set(xlabel="iterations per node", ylabel="consensus distance",
              title=f"consensus, lr={lrs[-1]}")
    ax[2].set(xlabel="tau_max (iterations)", ylabel="iterations to gap <= eps",
              title="O(tau/T) check: affine in tau?")
    for a in ax:
        a.legend(fontsize=7)
    meta = C.meta_of(cfg, args, lrs=lrs, latencies_s=lats, fits=fits)
    return C.finish(args.out, NAME, columns, rows, meta, fig, notes)


if __name__ == "__main__":
    main()
