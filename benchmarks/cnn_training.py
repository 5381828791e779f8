"""GN-LeNet training speed: matmul rate, one plain step, the engine's loops (issue 20).

    python benchmarks/cnn_training.py              # full: 60 nodes, ~10 min on 2 CPU cores
    python benchmarks/cnn_training.py --quick      # 8 nodes, fewer repeats, ~2-3 min
    python benchmarks/cnn_training.py --nodes 16 --steps 8

Everything runs in one process, so the ratios compare back-to-back timings on the same machine
and load. Writes benchmarks/results/cnn_training-<platform>-<date>.json and prints a table:

  (a) matmul      the machine's float32 matmul rate: best of 1024^3 and 2048^3 matmuls, GFLOP/s
  (b) flops       GN-LeNet FLOPs per sample, counted analytically: a convolution is
                  2*H*W*Cin*Cout*25 forward, the dense layer 2*1024*10; backward = 2 x forward
                  (the input gradient of the first layer is counted though not needed).
                  matmul-allowed samples/s = matmul rate / FLOPs per sample
  (c) single      one jitted SGD step of one model at batch 8, called alone: `plain` (Flax convs
                  and max-pool, XLA's gradients) and `custom` (divjax.tasks.conv's custom VJPs), with
                  XLA's default options, and `custom` again with the options divjax compiles a
                  model with convolutions with (divjax.compiler_options(convolutions=True))
  (d) loop        the engine's local training without the engine: per-node weights, N nodes,
                  `steps` SGD steps of batch 8 in a lax.scan, under jax.vmap and under lax.map
                  over nodes; plain and custom (the plain rows use --plain-nodes/--plain-steps:
                  at 15-40 samples/s the full size would take minutes per call)
  (e) engine      a real engine run (`make_engine(...).run_ticks`, DivShare on CIFAR-10 with the
                  paper's network, no evaluation): every node finishes one iteration of `steps`
                  steps per eval interval; samples/s = node iterations done x steps x 8 / wall s.
                  Each `custom` interval follows a single step of (c) with divjax's options
                  (round by round, under the same load: "rounds" in the JSON).
                  `custom` runs the engine as shipped (on CPU its vmap over nodes is a loop,
                  divjax.engine.local.per_node_loop); `plain` swaps in the Flax model, train_chunk=1
  (f) paper run   cifar10-paper (60 nodes, 128 local steps of batch 8, 800 simulated s at
                  5 s per iteration: 9.8 M training samples): wall time extrapolated from the
                  engine rates of (e), beside what the matmul rate allows
  (g) ops         (full run only) per-layer forward / input-gradient / weight-gradient times
                  inside a lax.scan, plain vs custom, and max-pool / GroupNorm gradients
  (h) options     the engine compiled with YNNPACK's reductions (divjax's options for a
                  convolution model) and with no library fusions (its options for other
                  models), alternating, one interval each per round: the training ticks alone
                  and the whole interval (training, exchange, evaluation); samples/s per round
                  and their ratio

Ratios printed: engine / single step (plain, and the faster custom one; target >= 1) and engine /
matmul-allowed (target >= 0.5). Timing: AOT compile (recorded apart), one warm-up call, then
the best of `repeats` calls with block_until_ready (best, not median: the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_common import git_commit
from jax import lax

from divjax.tasks import conv, models
from divjax.config import default_hparams
from divjax.engine.local import loop_over_nodes
from divjax.frontends.presets import get_preset
from divjax.tasks.registry import make_task
from divjax.engine.sim import make_engine
from divjax.engine.xla_options import compiler_options
from divjax.engine.xla_options import jit as divjax_jit

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = os.environ.get("DIVJAX_DATA_DIR",
                          str(Path(__file__).resolve().parents[2] / "shared" / "data"))
B = 8                                                     # the paper's batch size
LAYERS = [(32, 3, 32), (16, 32, 32), (8, 32, 64)]        # (H = W, Cin, Cout) of the 3 convs


# ----------------------------------------------------------------------------- timing


def timed(fn, *args, repeats=3, warmup=True, options=None):
    """(compile_s, best run s) of jit(fn)(*args) (XLA `options`), compiled ahead of time."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=options or None).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    if warmup:
        jax.block_until_ready(compiled(*args))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best


# ----------------------------------------------------------------------------- (a), (b)


def matmul_gflops(repeats: int) -> dict:
    out = {}
    key = jax.random.key(0)
    for n in (1024, 2048):
        a = jax.random.normal(key, (n, n), jnp.float32)
        _, s = timed(jnp.dot, a, a, repeats=repeats)
        out[n] = 2 * n ** 3 / s / 1e9
    return {"gflops": max(out.values()), "by_size": out}


def gnlenet_flops() -> dict:
    """FLOPs per sample (multiply-adds counted as 2)."""
    convs = [2 * h * h * ci * co * 25 for h, ci, co in LAYERS]
    dense = 2 * 4 * 4 * 64 * models.NUM_CLASSES
    fwd = sum(convs) + dense
    return {"conv_fwd": convs, "dense_fwd": dense, "forward": fwd, "backward": 2 * fwd,
            "total": 3 * fwd}


# ----------------------------------------------------------------------------- model steps


def model_fns(fast: bool):
    init, logits = models.cnn_functions(models.GNLeNet(fast_grad=fast))

    def loss(p, x, y):
        return jnp.mean(models.cross_entropy(logits(p, x), y))

    def step(p, batch):
        g = jax.grad(loss)(p, *batch)
        return jax.tree.map(lambda a, b: a - 0.05 * b, p, g), None

    return init, step


def data(nodes, steps, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (nodes, steps, B, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, (nodes, steps, B)).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


def bench_single(fast: bool, repeats: int, options=None) -> dict:
    """One SGD step called alone: XLA's default options, or `options` (divjax's)."""
    init, step = model_fns(fast)
    p = jax.jit(init)(jax.random.key(0))
    x, y = data(1, 1)
    c, s = timed(lambda p, x, y: step(p, (x, y))[0], p, x[0, 0], y[0, 0], repeats=repeats,
                 options=options)
    what = "single step" + (", divjax's XLA options" if options else "")
    return {"section": "c", "what": what, "model": "custom" if fast else "plain",
            "nodes": 1, "steps": 1, "compile_s": c, "wall_s": s, "samples_per_s": B / s}


def bench_loop(fast: bool, mode: str, nodes: int, steps: int, repeats: int) -> dict:
    """Per-node weights, `steps` SGD steps in a scan, vmap or lax.map over `nodes`."""
    init, step = model_fns(fast)
    p = jax.jit(jax.vmap(init))(jax.random.split(jax.random.key(0), nodes))
    x, y = data(nodes, steps)

    def train(p, x, y):
        return lax.scan(step, p, (x, y))[0]

    if mode == "vmap":
        fn = jax.vmap(train)
    else:
        def fn(p, x, y):
            return lax.map(lambda a: train(*a), (p, x, y))
    c, s = timed(fn, p, x, y, repeats=repeats, warmup=repeats > 1)
    return {"section": "d", "what": f"scan of steps, {mode} over nodes",
            "model": "custom" if fast else "plain", "nodes": nodes, "steps": steps,
            "compile_s": c, "wall_s": s, "samples_per_s": nodes * steps * B / s}


# ----------------------------------------------------------------------------- (e) engine


def cifar_dir(quick: bool) -> tuple[str, str]:
    """(data_dir, source): the real CIFAR-10 copy, or a synthetic CIFAR-shaped npz."""
    if Path(DATA_DIR, "cifar10.npz").is_file() or Path(DATA_DIR).is_file():
        return DATA_DIR, f"CIFAR-10 ({DATA_DIR})"
    tmp = tempfile.mkdtemp(prefix="divjax-cifar-")
    rng = np.random.default_rng(0)
    n = 5000
    np.savez(Path(tmp) / "cifar10.npz",
             x_train=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
             y_train=(np.arange(n) % 10).astype(np.uint8),
             x_test=rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
             y_test=(np.arange(1000) % 10).astype(np.uint8))
    print(f"# {DATA_DIR}/cifar10.npz missing: synthetic CIFAR-shaped data", file=sys.stderr)
    return tmp, "synthetic CIFAR-shaped uint8 (real data missing)"


def engine_cfg(nodes: int, steps: int, data_dir: str, **kw):
    """cifar10-paper's network and training, `nodes` nodes, one iteration per 10-tick interval."""
    strag = 7 if nodes >= 16 else max(1, nodes // 8)
    return get_preset("cifar10-paper").replace(
        task="cifar10-quick", data_dir=data_dir, n_nodes=nodes, n_stragglers=strag,
        fanout=min(6, nodes - 1), local_steps=steps, compute_s=1.0, tick_s=0.1,
        eval_every_s=1.0, duration_s=10.0, **kw)


def plain_task(task):
    """The CIFAR-10 task with the plain Flax GN-LeNet (same data, same normalisation)."""
    _, logits = models.cnn_functions(models.GNLeNet(fast_grad=False))

    def loss(params, batch):
        x = (batch["x"].astype(jnp.float32) / 255.0 - 0.5) / 0.5
        return jnp.mean(models.cross_entropy(logits(params, x), batch["y"]))

    return task._replace(loss=loss)


def bench_engine(fast: bool, nodes: int, steps: int, repeats: int, data_dir: str,
                 single_between: bool = False, **kw) -> dict:
    """The engine's training rate, best of `repeats` intervals; with `single_between`, each
    interval follows a single-step measurement (divjax's options, best of 30 calls), so the
    two are compared round by round under the same load ("rounds": (single, engine))."""
    cfg = engine_cfg(nodes, steps, data_dir, **kw)
    task = make_task(cfg)
    if not fast:
        task = plain_task(task)
    hp = default_hparams(cfg)
    engine = make_engine(cfg, task, hp=hp)
    state = divjax_jit(engine.init)(jax.random.key(0), hp)
    t0 = time.perf_counter()
    run = divjax_jit(engine.run_ticks).lower(state, hp).compile()
    compile_s = time.perf_counter() - t0
    state = jax.block_until_ready(run(state, hp))            # warm-up: first interval
    best, done, rounds = math.inf, 0, []
    for _ in range(repeats):
        single = (bench_single(True, 30, options=compiler_options(convolutions=True))
                  ["samples_per_s"] if single_between else None)
        before = int(jnp.sum(state.iterations))
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state, hp))
        wall = time.perf_counter() - t0
        done = int(jnp.sum(state.iterations)) - before
        best = min(best, wall / max(done, 1))
        if single_between:
            rounds.append((single, steps * B * done / wall))
    if int(state.errors.max()) != 0:
        raise RuntimeError(f"engine error flags {np.asarray(state.errors)}")
    per_iter = steps * B
    how = "per-node loop" if loop_over_nodes(engine.layout) else "vmap"
    return {"section": "e", "what": f"engine run_ticks, train_chunk={cfg.train_chunk} ({how})",
            "model": "custom" if fast else "plain", "nodes": nodes, "steps": steps,
            "node_iterations_per_call": done, "compile_s": compile_s,
            "wall_s": best * done, "samples_per_s": per_iter / best,
            **({"rounds": rounds} if single_between else {})}


def bench_options_ab(nodes: int, steps: int, rounds: int, data_dir: str) -> dict:
    """(h) The engine compiled with the options divjax gives a convolution model (YNNPACK's
    reductions) and with those it gives every other model (no library fusions), timed in
    alternation in this process, one interval each per round: the training ticks alone
    (`run_ticks`) and the whole interval (`advance`: training, exchange and evaluation)."""
    cfg = engine_cfg(nodes, steps, data_dir)
    hp = default_hparams(cfg)
    engine = make_engine(cfg, make_task(cfg), hp=hp)
    variants = {"YNNPACK reductions": compiler_options(convolutions=True),
                "no library fusions": compiler_options(convolutions=False)}
    out = {"section": "h", "nodes": nodes, "steps": steps, "options": variants}
    for what in ("run_ticks", "advance"):
        fn = getattr(engine, what)
        runs, states = {}, {}
        for name, opts in variants.items():
            state = jax.jit(engine.init, compiler_options=opts or None)(jax.random.key(0), hp)
            runs[name] = jax.jit(fn, compiler_options=opts or None).lower(state, hp).compile()
            states[name] = state
        rates: dict = {name: [] for name in variants}
        for r in range(rounds + 1):                                # round 0: warm-up
            for name in variants:
                before = int(jnp.sum(states[name].iterations))
                t0 = time.perf_counter()
                got = jax.block_until_ready(runs[name](states[name], hp))
                wall = time.perf_counter() - t0
                states[name] = got[0] if what == "advance" else got
                if r:
                    rates[name].append((int(jnp.sum(states[name].iterations)) - before)
                                       * steps * B / wall)
        first, second = variants
        out[what] = {"samples_per_s": rates,
                     "ratio_rounds": [a / b for a, b in zip(rates[first], rates[second])]}
    return out


# ----------------------------------------------------------------------------- (g) ops


def bench_ops(repeats: int, steps: int = 4) -> list[dict]:
    """Per-layer times inside a scan of `steps` (each step's input depends on the carry)."""
    import flax.linen as nn

    def plain_conv(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def in_scan(g):
        def f(*a):
            def body(c, _):
                r = g(*jax.tree.map(lambda t: t + c, a))
                return c + 1e-6 * sum(jnp.sum(t.reshape(-1)[0]) for t in jax.tree.leaves(r)), None
            return lax.scan(body, jnp.float32(0), None, length=steps)[0]
        return f

    def ms(g, *a):
        return 1e3 * timed(in_scan(g), *a, repeats=repeats)[1] / steps

    rows = []
    rng = np.random.default_rng(0)
    for h, ci, co in LAYERS:
        x = jnp.asarray(rng.standard_normal((B, h, h, ci), np.float32))
        k = jnp.asarray(rng.standard_normal((5, 5, ci, co), np.float32))
        dy = jnp.asarray(rng.standard_normal((B, h, h, co), np.float32))
        for name, f in (("plain", plain_conv), ("custom", conv.conv2d_same)):
            def dx(x, k, d, f=f):
                return jax.vjp(lambda x: f(x, k), x)[1](d)

            def dk(x, k, d, f=f):
                return jax.vjp(lambda k: f(x, k), k)[1](d)

            rows.append({"op": f"conv {h}x{h} {ci}->{co}", "impl": name,
                         "forward_ms": ms(f, x, k), "input_grad_ms": ms(dx, x, k, dy),
                         "weight_grad_ms": ms(dk, x, k, dy)})
    x = jnp.asarray(np.maximum(rng.standard_normal((B, 32, 32, 32), np.float32), 0))
    dp = jnp.asarray(rng.standard_normal((B, 16, 16, 32), np.float32))
    for name, f in (("plain", lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))),
                    ("custom", conv.max_pool_2x2)):
        rows.append({"op": "max_pool 32x32x32", "impl": name, "forward_ms": ms(f, x),
                     "input_grad_ms": ms(lambda x, d, f=f: jax.vjp(f, x)[1](d), x, dp)})
    gn = nn.GroupNorm(num_groups=2, epsilon=1e-5)
    gp = gn.init(jax.random.key(0), x)
    def gn_grad(p, x, d):
        return jax.vjp(lambda p, x: gn.apply(p, x), p, x)[1](d)

    rows.append({"op": "GroupNorm 32x32x32", "impl": "flax",
                 "forward_ms": ms(lambda p, x: gn.apply(p, x), gp, x),
                 "input_grad_ms": ms(gn_grad, gp, x, x)})
    return rows


# ----------------------------------------------------------------------------- main


def fmt_rows(rows) -> str:
    lines = ["| sec | what | model | nodes | steps | compile s | samples/s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['section']} | {r['what']} | {r['model']} | {r['nodes']} | "
                     f"{r['steps']} | {r['compile_s']:.1f} | {r['samples_per_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 nodes, fewer repeats (~2-3 min)")
    ap.add_argument("--nodes", type=int, default=None, help="nodes of (d) and (e) (default 60)")
    ap.add_argument("--steps", type=int, default=8, help="local steps in the scan (d, e)")
    ap.add_argument("--plain-nodes", type=int, default=None,
                    help="nodes of the plain rows of (d) and (e) (default 8; quick 4)")
    ap.add_argument("--plain-steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=None, help="timed calls (default 3; quick 1)")
    ap.add_argument("--no-ops", action="store_true", help="skip (g), the per-op profile")
    ap.add_argument("--data-dir", default=None, help="folder with cifar10.npz")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    global DATA_DIR
    DATA_DIR = args.data_dir or DATA_DIR
    quick = args.quick
    nodes = args.nodes or (8 if quick else 60)
    plain_nodes = args.plain_nodes or (4 if quick else 8)
    reps = args.repeats or (1 if quick else 3)
    t_start = time.perf_counter()
    dev = jax.devices()[0]
    out = {"meta": {"device": dev.device_kind, "platform": dev.platform,
                    "cpu_count": os.cpu_count(), "machine": platform.machine(),
                    "jax": jax.__version__, "commit": git_commit(),
                    "date": datetime.date.today().isoformat(), "quick": quick,
                    "load_avg_start": os.getloadavg(), "argv": sys.argv[1:],
                    "command": "python benchmarks/cnn_training.py " + " ".join(sys.argv[1:])}}

    def say(msg):
        print(f"[{time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)

    mm = matmul_gflops(repeats=5 if quick else 10)
    flops = gnlenet_flops()
    allowed = mm["gflops"] * 1e9 / flops["total"]
    out.update(matmul=mm, flops=flops, matmul_allowed_samples_per_s=allowed)
    say(f"(a) matmul {mm['gflops']:.1f} GFLOP/s (best of {mm['by_size']})")
    say(f"(b) GN-LeNet {flops['total'] / 1e6:.1f} MFLOP per sample forward+backward -> "
        f"{allowed:.0f} samples/s allowed")

    rows = []

    def add(r):
        r["gflops"] = r["samples_per_s"] * flops["total"] / 1e9
        rows.append(r)
        say(f"({r['section']}) {r['what']:40s} {r['model']:6s} nodes={r['nodes']:<3d} "
            f"steps={r['steps']:<3d} {r['samples_per_s']:8.1f} samples/s "
            f"({r['gflops']:.1f} GFLOP/s; compile {r['compile_s']:.1f} s)")

    add(bench_single(False, repeats=10 * reps))
    add(bench_single(True, repeats=10 * reps))
    if compiler_options(convolutions=True):   # the options the engine compiles GN-LeNet with
        add(bench_single(True, repeats=10 * reps, options=compiler_options(convolutions=True)))
    add(bench_loop(True, "map", nodes, args.steps, reps))
    add(bench_loop(True, "vmap", nodes, args.steps, reps))
    add(bench_loop(False, "map", plain_nodes, args.plain_steps, 1))
    add(bench_loop(False, "vmap", plain_nodes, args.plain_steps, 1))
    data_dir, source = cifar_dir(quick)
    out["engine_data"] = source
    add(bench_engine(True, nodes, args.steps, max(reps, 6 if not quick else 1), data_dir,
                     single_between=bool(compiler_options(convolutions=True))))
    add(bench_engine(False, plain_nodes, args.plain_steps, 1, data_dir, train_chunk=1))

    def rate(section, model, what=""):
        return next(r["samples_per_s"] for r in rows
                    if r["section"] == section and r["model"] == model and what in r["what"])

    engine = rate("e", "custom")
    e_rounds = next(r for r in rows if r["section"] == "e").get("rounds", [])
    # the best single step seen in this process: (c) with XLA's and divjax's options, and the
    # single steps measured between the engine's intervals
    best_single = max([r["samples_per_s"] for r in rows
                       if r["section"] == "c" and r["model"] == "custom"]
                      + [single for single, _ in e_rounds])
    ratios = {"engine_over_single_plain": engine / rate("c", "plain"),
              "engine_over_single_custom": engine / best_single,
              # round by round: the engine's interval right after a single-step measurement
              "engine_over_single_rounds": [e / s for s, e in e_rounds],
              "engine_over_single_rounds_median": (float(np.median([e / s for s, e in e_rounds]))
                                                   if e_rounds else None),
              "engine_over_matmul_allowed": engine / allowed,
              "loop_map_over_matmul_allowed": rate("d", "custom", "map") / allowed,
              "engine_custom_over_engine_plain": engine / rate("e", "plain")}
    paper = get_preset("cifar10-paper")
    iters = int(paper.duration_s // paper.compute_s)
    samples = paper.n_nodes * iters * paper.local_steps * paper.batch_size
    extrap = {"preset": "cifar10-paper", "nodes": paper.n_nodes, "iterations_per_node": iters,
              "local_steps": paper.local_steps, "batch_size": paper.batch_size,
              "training_samples": samples,
              "wall_h_engine_custom": samples / engine / 3600,
              "wall_h_engine_plain": samples / rate("e", "plain") / 3600,
              "wall_h_matmul_allowed": samples / allowed / 3600,
              "note": "training only (no evaluation, which the preset runs every 20 s); "
                      "engine rates of (e) measured with fewer local steps per iteration"}
    out.update(rows=rows, ratios=ratios, paper_extrapolation=extrap)
    if compiler_options(convolutions=True):
        say("(h) the engine with and without YNNPACK's reductions, alternating ...")
        out["options_ab"] = bench_options_ab(nodes, args.steps, 2 if quick else 5, data_dir)
    if not quick and not args.no_ops:
        say("(g) per-op profile inside a scan ...")
        out["ops"] = bench_ops(repeats=reps)
    out["meta"]["load_avg_end"] = os.getloadavg()
    out["meta"]["total_wall_s"] = time.perf_counter() - t_start

    lines = [f"# GN-LeNet training, {dev.device_kind} ({os.cpu_count()} cores), "
             f"jax {jax.__version__}, commit {out['meta']['commit']}, {out['meta']['date']}", "",
             f"(a) matmul rate {mm['gflops']:.1f} GFLOP/s; (b) {flops['total'] / 1e6:.1f} MFLOP "
             f"per sample (fwd {flops['forward'] / 1e6:.1f}) -> {allowed:.0f} samples/s allowed",
             "", fmt_rows(rows), "",
             f"engine / single step: {ratios['engine_over_single_plain']:.2f} (plain step), "
             f"{ratios['engine_over_single_custom']:.2f} (best custom step)   [target >= 1.0]; "
             f"round by round {[round(x, 2) for x in ratios['engine_over_single_rounds']]}",
             "  (the engine's interval right after a single step, same options and load)",
             f"engine / matmul-allowed: {ratios['engine_over_matmul_allowed']:.2f}   "
             f"[target >= 0.5]; loop (d, lax.map) / matmul-allowed "
             f"{ratios['loop_map_over_matmul_allowed']:.2f}",
             f"engine custom / engine plain: {ratios['engine_custom_over_engine_plain']:.1f}x",
             f"(f) cifar10-paper: {samples / 1e6:.2f} M training samples -> "
             f"{extrap['wall_h_engine_custom']:.1f} h at the engine rate "
             f"({extrap['wall_h_engine_plain']:.1f} h with plain convs), "
             f"{extrap['wall_h_matmul_allowed']:.1f} h at the matmul rate"]
    if "ops" in out:
        lines += ["", "(g) ms per call inside a scan (batch 8):",
                  "| op | impl | forward | input grad | weight grad |", "|---|---|---:|---:|---:|"]
        for r in out["ops"]:
            lines.append(f"| {r['op']} | {r['impl']} | {r['forward_ms']:.2f} | "
                         f"{r['input_grad_ms']:.2f} | "
                         f"{r['weight_grad_ms']:.2f} |" if "weight_grad_ms" in r else
                         f"| {r['op']} | {r['impl']} | {r['forward_ms']:.2f} | "
                         f"{r['input_grad_ms']:.2f} | - |")
    for what in ("run_ticks", "advance") if "options_ab" in out else ():
        ab = out["options_ab"][what]
        lines += ["", f"(h) engine.{what}, samples/s per round, alternating:"]
        lines += [f"  {k}: {[round(v) for v in r]}" for k, r in ab["samples_per_s"].items()]
        lines.append(f"  ratio per round {[round(x, 2) for x in ab['ratio_rounds']]}")
    lines.append(f"\nload average {out['meta']['load_avg_start']} -> "
                 f"{out['meta']['load_avg_end']}; {out['meta']['total_wall_s']:.0f} s total")
    print("\n".join(lines))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    path = Path(args.out) / f"cnn_training-{dev.platform}-{out['meta']['date']}{suffix}.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
