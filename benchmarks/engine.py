"""Engine benchmark: throughput, the cost of emulating the network, memory (CPU or accelerator).

    python benchmarks/engine.py                    # both suites, ~5-10 min on 2 CPU cores
    python benchmarks/engine.py --suite engine     # synthetic task, n in 16..4096
    python benchmarks/engine.py --suite throughput # synthetic, MovieLens MF, CIFAR-10 CNN

Writes benchmarks/results/engine-<device>-<date>.json and .md and prints the table.

How it is measured (STYLE.md 3.9): every function is compiled ahead of time
(`jax.jit(f).lower(...).compile()`, compile time recorded apart), run once to warm up, then
timed `repeats` times with `block_until_ready`; the figure is the median. All ratios of one row
come from the same process, the same inputs and back-to-back timings:

  full       the E ticks of one eval interval of the engine (`engine.run_ticks`), no evaluation
  local      the same node-iterations of local training alone: gather the finishing nodes'
             models, `vmap(train_one)`, scatter them back (what a simulator without a network
             would do)
  exchange   DivShare's iteration end alone (`algo.iteration_end`: routes, link schedule,
             scatter of the fragments into the ring, collecting and averaging the inbox), for
             the same finishing nodes and ticks
  ring       the delay buffer alone: clearing what the previous tick collected, the fan-out
             scatter-adds of the payload into the ring slots, reading the collected slots
             (a part of `exchange`)
  ratio_a    full / local                      (cost of emulating the network)
  ratio_b    ring / memory-traffic floor, where floor = bytes the scatter reads and writes /
             bandwidth of a plain array copy of the same size on this device (both best of
             3 x repeats: short timings on a shared machine are noisy)
             (ratio_b_exchange: the same for the whole iteration end, routes included)
  ratio_c    vmapped per-node training / one shared-weights model on the same total batch
  sweep      vmap over 8 seeds vs 8 single runs (time ratio; < 1 means the sweep is cheaper)
  memory     XLA's buffer analysis of the compiled interval (arguments + outputs + temps -
             donated) and the analytic model (divjax.engine.memory)
  ring_copies_in_hlo  copies of the whole ring in the compiled interval (should be 0: the ring
             is updated in place)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from bench_common import git_commit

from divjax.engine import memory
from divjax.network import messages, links as network
from divjax.algorithms import ALGORITHMS, Context
from divjax.config import SimConfig, default_hparams
from divjax.engine.local import make_optimizer, make_train_one, node_batch_key
from divjax.tasks.registry import TASKS, make_task
from divjax.engine.sim import make_engine
from divjax.engine.state import tick_keys
from divjax.tasks.base import make_synthetic_task
from divjax.network.topology import device_neighbors, neighbors
from divjax.engine.xla_options import jit as divjax_jit

RESULTS = Path(__file__).resolve().parent / "results"
# CIFAR-10 copy (see divjax.data); --data-dir or DIVJAX_DATA_DIR override it
DATA_DIR = os.environ.get("DIVJAX_DATA_DIR",
                          str(Path(__file__).resolve().parents[2] / "shared" / "data"))


# ----------------------------------------------------------------------------- timing


def timed(fn, *args, repeats=3, stat=statistics.median):
    """(compile_s, stat(run times), compiled) of jit(fn)(*args), AOT-compiled apart."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, stat(times), compiled


def copy_bandwidth(nbytes: int, repeats: int = 15) -> float:
    """Bytes/s a plain array copy (read + write) of `nbytes` reaches on the default device
    (best of `repeats`: the floor is what the machine can do)."""
    x = jnp.zeros(max(1, nbytes // 4), jnp.float32)
    _, s, _ = timed(lambda a: a + 1.0, x, repeats=repeats, stat=min)
    return 2 * x.nbytes / s


def ring_copies(compiled, shape) -> int:
    """Copies of a whole ring-shaped buffer in a compiled program (0 when it is written in
    place; a copy per tick costs as much as the exchange itself)."""
    dims = ",".join(str(d) for d in shape)
    return len(re.findall(rf"= f32\[{dims}\]\{{[\d,]*\}} copy\(", compiled.as_text()))


# ----------------------------------------------------------------------------- one config


def bench_config(cfg: SimConfig, task=None, repeats=3, with_ratio_c=True, label=None) -> dict:
    task = task if task is not None else make_task(cfg)
    hp = default_hparams(cfg)
    engine = make_engine(cfg, task, hp=hp)
    cfg = engine.cfg
    layout = engine.layout
    algo = ALGORITHMS[cfg.algorithm](cfg)
    n, K, F, C, E = cfg.n_nodes, layout.K, layout.F, cfg.train_capacity, cfg.eval_every
    c_ticks = int(round(cfg.compute_s / cfg.tick_s))
    finishes = E // c_ticks                      # finishing ticks per interval (uniform compute)
    state = divjax_jit(engine.init)(jax.random.key(0), hp)
    row = {"task": label or cfg.task, "n": n, "K": K, "F": F, "D": layout.D,
           "ticks": E, "finish_ticks": finishes, "train_capacity": C,
           "ring_slots": cfg.ring_ticks, "batch": cfg.batch_size,
           "local_steps": cfg.local_steps}

    # full: the E ticks of one eval interval (no evaluation), donated like sim.simulate
    advance = divjax_jit(engine.run_ticks, donate_argnums=0)
    t0 = time.perf_counter()
    adv_c = advance.lower(state, hp).compile()
    row["compile_s"] = time.perf_counter() - t0
    st = adv_c(state, hp)
    jax.block_until_ready(st)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        st = adv_c(st, hp)
        jax.block_until_ready(st)
        times.append(time.perf_counter() - t0)
    state = st
    full = statistics.median(times)
    # informative only (no ratio uses it): one run of the AOT-compiled evaluation, no warm-up
    eval_c = divjax_jit(engine.evaluate).lower(state).compile()
    t0 = time.perf_counter()
    jax.block_until_ready(eval_c(state))
    eval_s = time.perf_counter() - t0
    row.update(interval_s=full + eval_s, eval_s=eval_s, full_s=full)
    row["ring_copies_in_hlo"] = ring_copies(adv_c, state.inbox.total.shape)
    mem = memory.compiled_memory(adv_c)
    row["xla_peak_bytes"] = mem.get("peak_estimate", 0)
    model = memory.memory_model(cfg, layout, data_bytes=memory.task_data_bytes(task))
    row["model_bytes"] = model["total"]
    row["model_state_bytes_per_node"] = int(sum(model["per_node"][k] for k in
                                                ("params", "optimizer", "ring", "pending",
                                                 "counters", "algorithm")))

    # shared pieces for the isolated timings: the nodes finishing at a tick (all of them here)
    nb, deg = neighbors(cfg)   # no (n, n) array for the built-in topologies
    tx = make_optimizer(cfg, hp)
    train_one = make_train_one(cfg, task, layout, tx)
    node = jnp.arange(C, dtype=jnp.int32)
    valid = node < n
    ticks = jnp.arange(1, finishes + 1, dtype=jnp.int32) * c_ticks

    def local(params, opt_state, k_sim):
        def body(i, carry):
            params, opt_state = carry
            keys = tick_keys(k_sim, ticks[i])
            p = params[node]
            o = jax.tree.map(lambda x: x[node], opt_state)
            bkeys = jax.vmap(node_batch_key, (None, 0))(keys.batch, node)
            trained, o = jax.vmap(train_one)(p, o, bkeys, node)
            if cfg.reset_optimizer:
                o = jax.vmap(tx.init)(trained)
            return (params.at[node].set(trained),
                    jax.tree.map(lambda f, x: f.at[node].set(x), opt_state, o))
        return jax.lax.fori_loop(0, finishes, body, (params, opt_state))

    _, local_s, _ = timed(local, state.params, state.opt_state, state.k_sim, repeats=repeats)
    row["local_s"] = local_s

    def exchange(state, hp):
        table = network.link_table(cfg, hp, layout.fragment_bytes)
        ctx = Context(cfg, layout, device_neighbors(nb), jnp.asarray(deg), table)

        def body(i, s):
            t = ticks[i]
            s = s.replace(inbox=messages.clear_collected(cfg, s.inbox))
            s, after = algo.iteration_end(ctx, s, node, valid, s.params[node],
                                          tick_keys(s.k_sim, t), t)
            return s.replace(params=s.params.at[node].set(after))
        return jax.lax.fori_loop(0, finishes, body, state)

    _, exch_s, _ = timed(exchange, state, hp, repeats=repeats)
    row["exchange_s"] = exch_s

    # the delay buffer alone: fan-out scatter-adds into the ring slots, then the collect
    R, J = state.inbox.total.shape[0], cfg.fanout
    recv = jax.random.randint(jax.random.key(1), (finishes, C, J, K), 0, n)
    slot = jax.random.randint(jax.random.key(2), (finishes, C, J, K), 0, R)
    frag = jnp.broadcast_to(jnp.arange(K, dtype=jnp.int32), (C, K))

    def ring(total, count, payload):
        def body(i, carry):
            total, count, acc = carry
            s = i % R
            prev = (i + R - 1) % R                    # clear what the last tick collected
            total = total.at[prev, node].set(0.0)
            count = count.at[prev, node].set(0.0)
            for j in range(J):
                total = total.at[slot[i, :, j], recv[i, :, j], frag].add(payload)
                count = count.at[slot[i, :, j], recv[i, :, j], frag].add(1.0)
            got = total[s, node] + payload            # collect: read the slot, average
            return total, count, acc + got[:, 0, 0]
        return jax.lax.fori_loop(0, finishes, body, (total, count, jnp.zeros(C)))

    payload = state.params[node]
    # best of 3x repeats, like the copy it is compared with (both are short and noisy)
    _, ring_s, _ = timed(ring, state.inbox.total, state.inbox.count, payload,
                         repeats=3 * repeats, stat=min)
    row["ring_s"] = ring_s
    per_tick_bytes = (3 * J + 3) * C * K * F * 4   # J x (read payload, read+write row); collect
    bw = copy_bandwidth(per_tick_bytes * finishes)
    floor = per_tick_bytes * finishes / bw
    row.update(copy_GBps=bw / 1e9, ring_floor_s=floor, ratio_b=ring_s / floor,
               ratio_b_exchange=exch_s / floor)
    row["ratio_a"] = full / local_s
    node_iters = finishes * C
    row["node_iters_per_s"] = node_iters / full
    row["sim_s_per_wall_s"] = E * cfg.tick_s / full
    row["local_share"] = local_s / full
    row["exchange_share"] = (exch_s - ring_s) / full
    row["ring_share"] = ring_s / full

    if with_ratio_c:  # vmapped per-node training vs one shared-weights model, same total batch
        one = state.params[0]

        def shared(p, k_sim):
            grad = jax.grad(lambda q, b: task.loss(layout.unflatten(q), b))

            def body(i, p):
                keys = tick_keys(k_sim, ticks[i])
                for st_ in range(cfg.local_steps):
                    ks = jax.vmap(lambda i: jax.random.fold_in(node_batch_key(keys.batch, i),
                                                               st_))(node)
                    b = jax.vmap(task.sample_batch)(ks, node)
                    b = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), b)
                    p = p - hp.lr * grad(p, b)
                return p
            return jax.lax.fori_loop(0, finishes, body, p)

        _, shared_s, _ = timed(shared, one, state.k_sim, repeats=repeats)
        row["shared_s"] = shared_s
        row["ratio_c"] = local_s / shared_s
    row["max_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def bench_sweep(cfg: SimConfig, seeds: int = 8, repeats: int = 3) -> dict:
    """vmap over `seeds` keys against `seeds` single runs, one compiled program each."""
    from divjax.engine.sim import make_run

    hp = default_hparams(cfg)
    run = make_run(cfg, hp=hp)
    keys = jax.random.split(jax.random.key(0), seeds)
    c1, single, _ = timed(run, keys[0], hp, repeats=repeats)
    cS, sweep, _ = timed(jax.vmap(run, (0, None)), keys, hp, repeats=repeats)
    return {"task": cfg.task, "n": cfg.n_nodes, "seeds": seeds, "single_s": single,
            "sweep_s": sweep, "sweep_over_singles": sweep / (seeds * single),
            "compile_single_s": c1, "compile_sweep_s": cS}


def run_big_mf(n: int, chunk: int) -> dict:
    """`divjax run` of n MovieLens-sized MF nodes (206,680 parameters each) in a child process:
    wall time, its peak resident memory (getrusage of the child) and the memory model."""
    setting = dict(task="movielens-synthetic", n_nodes=n, iteration_chunk=chunk, n_fragments=4,
                   fanout=3, tick_s=0.1, compute_s=1.0, duration_s=2.0, eval_every_s=1.0,
                   local_steps=4, batch_size=32)
    cfg = SimConfig(**setting)
    args = [a for k, v in setting.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    task = make_task(cfg)
    engine = make_engine(cfg, task)
    model = memory.memory_model(engine.cfg, engine.layout,
                                data_bytes=memory.task_data_bytes(task))
    del engine, task
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"divjax-bench-mf{n}"
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(r.returncode, time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "print(r.stdout[-2000:], r.stderr[-2000:])")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "divjax.frontends.cli", "run", "--quiet",
           "--overwrite", "--out", str(out_dir), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rc, wall, rss_kb = res.stdout.split("\n")[0].split()
    if int(rc) != 0:
        raise RuntimeError(res.stdout[-3000:])
    final = json.loads((out_dir / "metrics.json").read_text())
    return {"task": "movielens-synthetic", "n": n, "D": 206_680, "iteration_chunk": chunk,
            "wall_s": float(wall), "peak_rss_GiB": int(rss_kb) / 2**20,
            "model_GiB": model["total"] / 2**30,
            "model_state_GiB": sum(model["parts"][k] for k in ("params", "ring")) / 2**30,
            "simulated_s": 2.0, "command": "divjax run " + " ".join(args),
            "final_rmse_mean": final["rmse_mean"][-1]}


# ----------------------------------------------------------------------------- suites


def base_cfg(task: str, n: int, **kw) -> SimConfig:
    common = dict(task=task, n_nodes=n, n_fragments=4, fanout=3, tick_s=0.1, compute_s=1.0,
                  eval_every_s=2.0, duration_s=2.0, local_steps=4, batch_size=8)
    if task.startswith("cifar10"):
        common.update(local_steps=1, batch_size=8, eval_every_s=1.0, duration_s=1.0,
                      data_dir=DATA_DIR)
    if task == "movielens":
        common.update(local_steps=4, batch_size=32)
    common.update(kw)
    return SimConfig(**common)


def have_task(name: str) -> bool:
    return name in TASKS


COLUMNS = [("task", "{}"), ("n", "{}"), ("D", "{}"), ("node_iters_per_s", "{:.0f}"),
           ("sim_s_per_wall_s", "{:.2f}"), ("compile_s", "{:.1f}"), ("full_s", "{:.3f}"),
           ("local_s", "{:.3f}"), ("exchange_s", "{:.3f}"), ("ring_s", "{:.4f}"),
           ("ratio_a", "{:.2f}"), ("ratio_b", "{:.2f}"), ("ratio_b_exchange", "{:.1f}"),
           ("ratio_c", "{:.2f}"), ("xla_peak_bytes", "{}"), ("model_bytes", "{}")]


def fmt_bytes(b):
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def table(rows) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        cells = []
        for c, f in COLUMNS:
            v = r.get(c)
            cells.append("-" if v is None else fmt_bytes(v) if c.endswith("bytes")
                         else f.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=("engine", "throughput", "all"), default="all")
    ap.add_argument("--ns", type=int, nargs="*", default=[16, 256, 1024, 4096])
    ap.add_argument("--wide-ns", type=int, nargs="*", default=[1024],
                    help="n of the synthetic rows with a 4,100-parameter model (dim 1024)")
    ap.add_argument("--mf-ns", type=int, nargs="*", default=[16, 256])
    ap.add_argument("--cnn-ns", type=int, nargs="*", default=[16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cnn-repeats", type=int, default=1,
                    help="repeats of the CIFAR-10 rows (a CPU interval takes seconds)")
    ap.add_argument("--big-mf", type=int, default=4096,
                    help="n of the large MovieLens-sized MF run, in a child process whose peak "
                         "resident memory is recorded (0: skip)")
    ap.add_argument("--big-mf-chunk", type=int, default=256,
                    help="iteration_chunk of that run (bounds the gathered models)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--data-dir", default=None, help="folder with the CIFAR-10 copy")
    args = ap.parse_args(argv)
    global DATA_DIR
    DATA_DIR = args.data_dir or DATA_DIR
    t_start = time.perf_counter()
    dev = jax.devices()[0]
    rows, extra = [], {}

    def log(r):
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in r.items()), flush=True)
        write(rows, extra, args, dev, t_start)  # partial results survive an interrupted run

    if args.suite in ("engine", "all"):
        for n in args.ns:
            r = bench_config(base_cfg("synthetic", n), repeats=args.repeats,
                             with_ratio_c=True)
            rows.append(r)
            log(r)
        for n in args.wide_ns:  # a model large enough for the scatter to be bandwidth-bound
            cfg = base_cfg("synthetic", n)
            r = bench_config(cfg, task=make_synthetic_task(cfg, dim=1024), repeats=args.repeats,
                             with_ratio_c=True, label="synthetic-wide")
            rows.append(r)
            log(r)
        extra["sweep"] = bench_sweep(base_cfg("synthetic", 16, duration_s=10.0,
                                              eval_every_s=2.0), repeats=args.repeats)
        log(extra["sweep"])
    if args.suite in ("throughput", "all"):
        # cifar10-quick: GN-LeNet on CIFAR-10 with a CPU-sized evaluation (200 test images
        # per node); training and exchange are those of cifar10
        for name, ns in (("movielens", args.mf_ns), ("cifar10-quick", args.cnn_ns)):
            if not have_task(name):
                print(f"# task {name} not registered: skipped", file=sys.stderr)
                continue
            for n in ns:
                try:
                    reps = args.cnn_repeats if name.startswith("cifar") else args.repeats
                    r = bench_config(base_cfg(name, n), repeats=reps)
                except Exception as e:  # noqa: BLE001  (e.g. data missing)
                    print(f"# {name} n={n} failed: {e}", file=sys.stderr)
                    continue
                rows.append(r)
                log(r)
        if args.big_mf and have_task("movielens-synthetic"):
            try:
                extra["mf_big"] = run_big_mf(args.big_mf, args.big_mf_chunk)
                log(extra["mf_big"])
            except Exception as e:  # noqa: BLE001
                print(f"# movielens-synthetic n={args.big_mf} failed: {e}", file=sys.stderr)

    md = write(rows, extra, args, dev, t_start)
    print(md)


def write(rows, extra, args, dev, t_start) -> str:
    kind = dev.device_kind.replace(" ", "_")
    date = datetime.date.today().isoformat()
    meta = {"device": dev.device_kind, "platform": dev.platform, "n_devices": jax.device_count(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "jax": jax.__version__,
            "commit": git_commit(), "date": date, "repeats": args.repeats,
            "total_wall_s": time.perf_counter() - t_start,
            "note": "median of `repeats` after an AOT compile and a warm-up; "
                    "block_until_ready; ratios from back-to-back timings in one process"}
    out = {"meta": meta, "rows": rows, **extra}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    suffix = "" if args.suite == "all" else f"-{args.suite}"
    stem = Path(args.out) / f"engine-{kind}-{date}{suffix}"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1, default=float))
    md = [f"# divjax engine benchmark: {dev.device_kind}, {date}, jax {jax.__version__}, "
          f"commit {meta['commit']}", "", table(rows), ""]
    if "sweep" in extra:
        s = extra["sweep"]
        md.append(f"8-seed vmap sweep (synthetic, n={s['n']}): {s['sweep_s']:.3f} s vs "
                  f"8 x {s['single_s']:.3f} s single runs (ratio {s['sweep_over_singles']:.2f})")
    if "mf_big" in extra:
        b = extra["mf_big"]
        md.append(f"MovieLens-sized MF, n={b['n']} nodes x {b['D']} parameters, run for "
                  f"{b['simulated_s']:g} simulated s (iteration_chunk={b['iteration_chunk']}): "
                  f"{b['wall_s']:.0f} s wall, peak resident memory {b['peak_rss_GiB']:.2f} GiB "
                  f"(memory model {b['model_GiB']:.2f} GiB)")
    md += ["", "Columns: see the module docstring of benchmarks/engine.py. Times are per eval "
           "interval (all finishing ticks of it), in seconds.", ""]
    stem.with_suffix(".md").write_text("\n".join(md))
    return "\n".join(md) + f"\n# wrote {stem}.json/.md in {meta['total_wall_s']:.0f} s"




if __name__ == "__main__":
    main()
