"""How much does the inbox rule change results? The engine, both rules, same seeds.

The authors' receiver keeps only the newest message per (sender, fragment index) ("latest", the
engine's default); the earlier engine averaged every copy that arrived since the receiver's last
aggregation ("sum", still `--inbox sum`). Copies pile up when a sender finishes (or a link
delivers) several times within one of its receiver's iterations, so the difference depends on how
uneven compute is. This script runs the vectorized engine both ways on the same seeds (a vmap
over seeds per rule) on three networks of the synthetic least-squares task, whose optimum is
known, and reports, per rule, the share of deliveries replaced and the final distance of the
average model to the optimum and the consensus distance (mean and 95% interval over seeds), and
the per-seed difference latest - sum with its interval.

    python scripts/inbox_policy.py [--seeds 8] [--out docs/results/inbox_policy.json]

Networks:
- paper: 60 nodes, s=6, Omega=4, 7 communication stragglers, equal compute (0.5 s);
- paper-compute2: the same, the stragglers also compute 2x slower;
- uneven: 8 nodes, s=2, Omega=4, compute 0.48-1.12 s and a full model taking 0.013-0.8 s on
  the links (the setting of the independent check of issue 15).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import SimConfig, default_hparams
from divjax.engine.sim import make_run
from divjax.frontends.sweep import ci95
from divjax.engine.xla_options import jit


def networks() -> dict:
    """name -> (SimConfig, HParams builder)."""
    paper = SimConfig(task="synthetic", n_nodes=60, n_fragments=4, fanout=6, n_stragglers=7,
                      compute_s=0.5, tick_s=0.01, duration_s=10.0, eval_every_s=10.0,
                      fast_mbps=0.02,
                      straggler_mbps=(0.004, 0.004, 0.0035, 0.003, 0.004, 0.004, 0.0035),
                      local_steps=4, batch_size=8, lr=0.05)
    uneven = SimConfig(task="synthetic", n_nodes=8, n_fragments=4, fanout=2, compute_s=0.8,
                       tick_s=0.01, duration_s=10.0, eval_every_s=10.0, local_steps=4,
                       batch_size=8, lr=0.02)

    def uneven_hp(cfg, layout_bytes):
        seconds_per_model = np.geomspace(0.013, 0.8, cfg.n_nodes)
        return default_hparams(cfg).replace(
            compute_s=jnp.asarray(np.linspace(0.48, 1.12, cfg.n_nodes)[::-1], jnp.float32),
            upload_bps=jnp.asarray(layout_bytes / seconds_per_model, jnp.float32))

    return {
        "paper": (paper, lambda cfg, _: default_hparams(cfg)),
        "paper-compute2": (paper.replace(straggler_compute_factor=2.0),
                           lambda cfg, _: default_hparams(cfg)),
        "uneven": (uneven, uneven_hp),
    }


def run_rule(cfg: SimConfig, hp_fn, rule: str, seeds: int) -> dict:
    cfg = cfg.replace(inbox=rule)
    probe = make_run(cfg).engine
    hp = hp_fn(cfg, float(probe.layout.fragment_bytes.sum()))
    run = make_run(cfg, hp=hp)
    batched = jit(jax.vmap(run, (0, None)))
    t0 = time.perf_counter()
    state, m = batched(jax.random.split(jax.random.key(0), seeds), hp)
    jax.block_until_ready(m)
    if np.any(np.asarray(state.errors)):
        raise RuntimeError(f"{rule}: error flags {np.asarray(state.errors)}")
    return {
        "dist_opt_avgmodel": np.asarray(m["dist_opt_avgmodel"][:, -1], np.float64),
        "consensus": np.asarray(m["consensus"][:, -1], np.float64),
        "loss_mean": np.asarray(m["loss_mean"][:, -1], np.float64),
        "replaced": np.asarray(m["msgs_replaced"][:, -1], np.float64),
        "delivered": np.asarray(m["msgs_delivered"][:, -1], np.float64),
        "wall_s": time.perf_counter() - t0,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/results/inbox_policy.json"))
    args = ap.parse_args(argv)
    out = {"seeds": args.seeds, "jax": jax.__version__, "networks": {}}
    lines = ["| network | rule | replaced / delivered | dist. of avg model to optimum | "
             "consensus | final loss |", "|---|---|---|---|---|---|"]
    for name, (cfg, hp_fn) in networks().items():
        res = {rule: run_rule(cfg, hp_fn, rule, args.seeds) for rule in ("latest", "sum")}
        row = {}
        for rule, r in res.items():
            share = float(r["replaced"].sum() / max(1.0, r["delivered"].sum()))
            row[rule] = {"replaced_share": share, "wall_s": r["wall_s"],
                         **{k: ci95(r[k]) for k in ("dist_opt_avgmodel", "consensus",
                                                    "loss_mean")}}
            fmt = lambda mc: f"{mc[0]:.4g} ± {mc[1]:.2g}"  # noqa: E731
            lines.append(f"| {name} | {rule} | {share:.2%} | "
                         f"{fmt(row[rule]['dist_opt_avgmodel'])} | "
                         f"{fmt(row[rule]['consensus'])} | {fmt(row[rule]['loss_mean'])} |")
        row["latest_minus_sum"] = {
            k: ci95(res["latest"][k] - res["sum"][k])
            for k in ("dist_opt_avgmodel", "consensus", "loss_mean")}
        out["networks"][name] = row
    print("\n".join(lines))
    print("\nlatest - sum, per seed (mean ± 95% interval):")
    for name, row in out["networks"].items():
        d = row["latest_minus_sum"]
        print(f"  {name}: dist_opt {d['dist_opt_avgmodel'][0]:+.4g} ± "
              f"{d['dist_opt_avgmodel'][1]:.2g}, consensus {d['consensus'][0]:+.4g} ± "
              f"{d['consensus'][1]:.2g}")
    out["table"] = lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
