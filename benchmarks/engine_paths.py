"""Two engine paths that decide the reproduction's cost, each against the hardware, one process.

1. **A sweep chunk of one point** (what the reproduction grid runs for every AD-PSGD and CIFAR-10
   cell): the same compiled run through `sweep.make_batched` unbatched (configs = seeds = 1, the
   default since this benchmark was written) and as a vmap of batch 1 (the path before). Under
   vmap every `lax.cond` of the engine with a batched predicate (train only the nodes that
   finish, AD-PSGD's pong passes, the evaluation) becomes a select that computes both branches
   at every tick. Setting: the grid's MovieLens map cell r1-s7 (60 nodes, 7 stragglers, compute
   0.661 s = the fast send time, tick = compute / 10), `--iterations` iterations.
2. **The MovieLens local step** (issue 20, target 2): 128 sequential sparse SGD steps per
   iteration, each a gather and a scatter of 2 x 8 rows of 20 floats per node, for 60 nodes.
   The table splits a step (gather + gradient, scatter) and shows how its cost depends on the
   size of the array the rows live in (the whole 206,680-float model per node, as the engine
   holds it, against a 20,000- and a 2,000-float array with the same accesses), and what
   grouping the nodes differently gives (lax.map over chunks of nodes instead of one vmap).
   Hardware reference: the copy bandwidth measured in the same process, and the floor of the
   step's own bytes at that bandwidth.

    python benchmarks/engine_paths.py [--iterations 12] [--out benchmarks/results/engine_paths-cpu-DATE.json]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_common import git_commit, write_result

from divjax.tasks.models import mf_sgd_steps
from divjax.engine.xla_options import jit as divjax_jit

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by a jitted elementwise pass."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0001)
    return 2 * x.nbytes / best_of(lambda: f(x), repeats)


def single_point(iterations: int, data_dir: str) -> list[dict]:
    sys.path.insert(0, str(ROOT / "scripts"))
    import reproduction_grid as rg

    from divjax.engine.sim import make_run
    from divjax.frontends.sweep import hparams_for, make_batched, resolve_grid
    from divjax.algorithms import ALGORITHMS
    from divjax.tasks.registry import make_task

    base = rg.movielens_base("cpu", data_dir)
    compute = float(f"{rg.send_time_s(rg.model_params(base)):.3g}")
    rows = []
    for algo in ("adpsgd", "divshare"):
        cfg = rg.fine_clock(base.replace(algorithm=algo, compute_s=compute, tick_s=compute / 10,
                                         duration_s=iterations * compute,
                                         eval_every_s=iterations * compute))
        hp = hparams_for(cfg, {"n_stragglers": 7, "straggler_mbps": rg.paper_stragglers(7)})
        task = make_task(cfg)
        alg = ALGORITHMS[algo](cfg)
        run = make_run(resolve_grid(cfg, [hp], task, alg), task, alg)
        axes = jax.tree.map(lambda _: None, hp)
        keys = jax.random.key(0)[None]
        times, outs = {}, {}
        for name, seeds in (("unbatched", 1), ("vmap of 1", None)):
            fn = divjax_jit(make_batched(run, axes, 1, seeds))
            t0 = time.perf_counter()
            fn.lower(keys, hp).compile()
            compile_s = time.perf_counter() - t0
            times[name] = best_of(lambda fn=fn: fn(keys, hp), 1)
            outs[name] = jax.device_get(fn(keys, hp)[3])
            rows.append({"part": "one point", "algorithm": algo, "path": name,
                         "iterations": iterations, "simulated_s": cfg.duration_s,
                         "run_s": times[name], "compile_s": compile_s})
        same = all(np.array_equal(outs["unbatched"][k], outs["vmap of 1"][k])
                   for k in outs["unbatched"])
        rows[-2]["ratio_to_vmap_of_1"] = times["unbatched"] / times["vmap of 1"]
        rows[-2]["metrics_bit_identical"] = bool(same)
    return rows


def mf_steps(bandwidth: float, repeats: int) -> list[dict]:
    N, D, B, f, T = 60, 206_680, 8, 20, 128
    rng = np.random.default_rng(0)
    nu, ni = 610, 9724

    def loss_rows(u, i, r):
        return jnp.mean((jnp.sum(u * i, -1) - r) ** 2)

    grad = jax.grad(loss_rows, (0, 1))
    rating = jnp.asarray(rng.uniform(1, 5, (T, N, B)).astype(np.float32))
    users = rng.integers(0, 10, (T, N, B)) + 10 * np.arange(N)[None, :, None]   # ~10 per node
    items = rng.zipf(1.3, (T, N, B)) % ni                                        # popular items
    step_bytes = N * 2 * B * f * 4 * 3           # rows read, gradient written back (r + w)
    rows = []

    def scan_variant(Dloc: int, scatter: bool, gather: bool = True):
        perm = rng.permutation(Dloc).astype(np.int32)
        if Dloc >= (nu + ni) * f:
            upos, ipos = perm[:nu * f].reshape(nu, f), perm[nu * f:(nu + ni) * f].reshape(ni, f)
            pu, pi = jnp.asarray(upos[users]), jnp.asarray(ipos[items])
        else:    # the same row accesses mapped into a smaller array
            pos = perm.reshape(-1, f)
            pu = jnp.asarray(pos[users % pos.shape[0]])
            pi = jnp.asarray(pos[items % pos.shape[0]])
        off = (jnp.arange(N, dtype=jnp.int32) * Dloc)[:, None, None]
        q0 = jnp.asarray(rng.uniform(-.05, .05, (N * Dloc,)).astype(np.float32))

        @jax.jit
        def fn(q):
            def step(carry, x):
                q, acc = carry
                pu_t, pi_t, r_t = x
                idx = jnp.concatenate([pu_t + off, pi_t + off], 1)          # (N, 2B, f)
                if gather:
                    got = q[idx]
                    gu, gi = jax.vmap(grad)(got[:, :B], got[:, B:], r_t)
                    upd = jnp.concatenate([gu, gi], 1) * -0.2
                else:
                    upd = jnp.full(idx.shape, 1e-3, jnp.float32) * r_t[0, 0]
                if scatter:
                    return (q.at[idx.reshape(-1)].add(upd.reshape(-1)), acc), None
                return (q, acc + jnp.sum(upd)), None

            return jax.lax.scan(step, (q, jnp.float32(0)), (pu, pi, rating))[0]

        return best_of(lambda: fn(q0), repeats) / T

    for Dloc, label in ((D, "the node's whole model (the engine)"), (20_000, "a 20,000-float array"),
                        (2_000, "a 2,000-float array")):
        for name, kw in (("gather + gradient + scatter", {"scatter": True}),
                         ("gather + gradient only", {"scatter": False}),
                         ("scatter only", {"scatter": True, "gather": False})):
            if Dloc != D and name != "gather + gradient + scatter":
                continue
            s = scan_variant(Dloc, **kw)
            rows.append({"part": "mf step", "array": label, "floats_per_node": Dloc,
                         "variant": name, "ms_per_step": 1e3 * s,
                         "ns_per_element": 1e9 * s / (N * 2 * B * f),
                         "floor_ms": 1e3 * step_bytes / bandwidth})
    # the engine's own kernel, vmap over the 60 nodes against lax.map over chunks of nodes
    perm = rng.permutation(D).astype(np.int32)
    upos, ipos = perm[:nu * f].reshape(nu, f), perm[nu * f:(nu + ni) * f].reshape(ni, f)
    PU = jnp.asarray(np.moveaxis(upos[users], 0, 1))
    PI = jnp.asarray(np.moveaxis(ipos[items], 0, 1))
    R = jnp.moveaxis(rating, 0, 1)
    one = jnp.ones((N, 1))
    q0 = jnp.asarray(rng.uniform(-.05, .05, (N, D, 1)).astype(np.float32))
    for c in (60, 10, 4):
        @jax.jit
        def fn(q, c=c):
            xs = tuple(x.reshape((N // c, c) + x.shape[1:])
                       for x in (q, one, -0.2 * one, one, PU, PI, R))
            return jax.lax.map(lambda x: mf_sgd_steps(*x)[0], xs).reshape(q.shape)

        s = best_of(lambda fn=fn: fn(q0), repeats) / T
        rows.append({"part": "mf step", "array": "the node's whole model (the engine)",
                     "floats_per_node": D,
                     "variant": f"models.mf_sgd_steps, {'one vmap of' if c == N else 'lax.map over chunks of'} {c} nodes",
                     "ms_per_step": 1e3 * s, "ns_per_element": 1e9 * s / (N * 2 * B * f),
                     "floor_ms": 1e3 * step_bytes / bandwidth})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    bw = copy_bandwidth()
    rows = mf_steps(bw, args.repeats) + single_point(args.iterations, args.data_dir)
    out = {"commit": git_commit(), "backend": jax.default_backend(), "jax": jax.__version__,
           "date": datetime.date.today().isoformat(), "copy_bandwidth_gbs": bw / 1e9,
           "rows": rows}
    print(f"copy bandwidth (read + write, same process): {bw / 1e9:.2f} GB/s")
    print("| MF step: array | variant | ms per step (60 nodes) | ns per element | floor ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r["part"] == "mf step":
            print(f"| {r['array']} | {r['variant']} | {r['ms_per_step']:.3f} | "
                  f"{r['ns_per_element']:.1f} | {r['floor_ms']:.4f} |")
    print("\n| one point | path | run s | compile s | ratio | metrics bit-identical |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if r["part"] == "one point":
            print(f"| {r['algorithm']} ({r['iterations']} iterations) | {r['path']} | "
                  f"{r['run_s']:.2f} | {r['compile_s']:.1f} | "
                  f"{r.get('ratio_to_vmap_of_1', float('nan')):.3f} | "
                  f"{r.get('metrics_bit_identical', '')} |")
    path = args.out or (ROOT / "benchmarks" / "results" /
                        f"engine_paths-{jax.default_backend()}-{out['date']}.json")
    write_result(path, out)
    return out


if __name__ == "__main__":
    main()
