"""Omega: gap, consensus and delivered fraction as the number of fragments per model grows.

A quarter of the nodes are communication stragglers whose link sends only 1.5 full-model copies
per iteration (half of the fanout s=3), so with Omega=1 they get one whole copy out and drop the
rest, while with many fragments about half of their fragments, to random receivers, get out.
Omega changes shapes, so it is a Python loop (one compiled program per Omega, vmapped over
seeds).

What theory says: in the bounds, Omega enters only through the mixing constant p (and the delay
bound): the expected mixing matrix is the same for every Omega, but with more fragments each
coordinate is mixed by an independent random matrix, which lowers the variance of the mixing
step and hence the consensus distance (the (1/p)(sigma^2 + zeta^2/p) gamma^2 term). The script
measures the consensus plateau and the gap plateau against Omega; no closed form is compared.

    python scripts/theory/fragmentation_effect.py [--tiny] [--out DIR]
"""

from __future__ import annotations

import common as C

from divjax import product

NAME = "fragmentation_effect"


def main(argv=None) -> dict:
    args = C.parse_args(NAME, __doc__, argv)
    omegas = [1, 2] if args.tiny else [1, 2, 4, 8, 16]
    lr = 0.1
    rows, curves = [], {}
    for omega in omegas:
        cfg = C.base_config(args.tiny, n_fragments=omega)
        task = C.theory_task(cfg, args.tiny)
        slow = max(1, cfg.n_nodes // 4)
        hp = C.base_hparams(cfg, task, lr=lr, slow_nodes=slow, slow_copies=0.5 * cfg.fanout)
        grid = product(hp, lr=[lr])
        m = C.run_grid(cfg, task, grid, args.seeds, args.base_seed,
                       vmap=not (args.tiny or args.loop))
        d = C.delay_bound(cfg, task, hp)
        iters = m["iterations_mean"][0].mean(0)
        gap = m["gap_avgmodel"][0].mean(0)
        cons = m["consensus"][0].mean(0)
        sent = m["msgs_sent"][0].mean(0)[-1]
        dropped = m["msgs_dropped"][0].mean(0)[-1]
        curves[omega] = (iters, gap, cons)
        rows.append({
            "omega": omega, "slow_nodes": slow, "frac_sent": float(sent / (sent + dropped)),
            "tau_max": d["tau_max"], "gap_T": float(gap[-1]),
            "gap_plateau": float(C.tail_mean(gap)),
            "consensus_plateau": float(C.tail_mean(cons)),
            "bytes_per_node_iter": float(m["bytes_sent"][0].mean(0)[-1]
                                         / (cfg.n_nodes * iters[-1])),
        })
    cons_slope = C.loglog_slope(omegas, [r["consensus_plateau"] for r in rows])
    columns = list(rows[0])
    notes = [
        f"lr={lr}; T = {curves[omegas[0]][0][-1]:.0f} iterations per node; frac_sent = messages "
        "fully sent / (sent + dropped), over all nodes.",
        f"log-log slope of the consensus plateau vs Omega: {cons_slope:.2f} (no closed-form "
        "reference: the paper's constants are not reproduced).",
    ]
    plt = C.matplotlib_pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for omega, (iters, gap, cons) in curves.items():
        ax[0].semilogy(iters, gap, label=f"Omega={omega}")
        ax[1].semilogy(iters, cons, label=f"Omega={omega}")
    ax[2].loglog(omegas, [r["consensus_plateau"] for r in rows], "o-", label="consensus plateau")
    ax[2].loglog(omegas, [r["gap_plateau"] for r in rows], "s-", label="gap plateau")
    ax[0].set(xlabel="iterations per node", ylabel="f(x_bar) - f*", title=f"gap, lr={lr}")
    ax[1].set(xlabel="iterations per node", ylabel="consensus distance", title="consensus")
    ax[2].set(xlabel="Omega (fragments)", ylabel="plateau", title="plateaus vs Omega")
    for a in ax:
        a.legend(fontsize=7)
    meta = C.meta_of(C.base_config(args.tiny), args, omegas=omegas, lr=lr,
                     consensus_slope=cons_slope, slow_copies_per_iteration="fanout / 2")
    return C.finish(args.out, NAME, columns, rows, meta, fig, notes)


if __name__ == "__main__":
    main()
