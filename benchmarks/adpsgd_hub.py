"""AD-PSGD with a hub: time per node-iteration when one node receives many pings per tick.

A tick answers its due pings level by level (`divjax.algorithms.adpsgd_pongs`): level m holds
the m-th pong of every node with more than m pings due, so the levels of a tick are the largest
number of pings any one node receives in it. On a complete graph that is a few; with a hub it
grows with n. This benchmark runs AD-PSGD on
  complete   the complete graph, and
  wheel      node 0 joined to every other node, the others in a ring (degree 3; with s = 2
             each node pings one neighbour drawn at random, a third of them the hub),
at the same n, s (--fanout, default 2) and everything else the CLI's default configuration
(`--task synthetic`, 7 stragglers) for --duration-s simulated seconds, each (n, topology) in a
fresh subprocess (the wheel's file topology has an (n, n - 1) neighbour table: n <= 8,192).

  compile_s   lower + compile of `engine.run_ticks` (the whole run: one eval interval) with
              divjax.jit, as `divjax run` compiles it
  run_s       one call (block_until_ready); us_per_node_iter = run_s / sum(iterations)
  levels      per tick with pings due: the largest number of pings one node receives in it
              (from the final ping table, which the auto-sized --ping-slots makes hold every
              ping of the run; `pings_held` < `pings_sent` would make it a lower bound):
              mean and max over those ticks

    python benchmarks/adpsgd_hub.py [--ns 256 1024 4096] [--topologies complete wheel]
                                    [--duration-s 1.0] [--local-steps 8] [--tag -before]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # bench_common; this checkout's divjax
RESULTS = HERE / "results"


def wheel_file(n: int, folder: Path) -> str:
    """A wheel's edge list (hub 0, rim 1..n-1 in a ring), written into `folder`."""
    path = folder / f"wheel{n}.edges"
    rim = range(1, n)
    path.write_text("".join(f"0 {i}\n{i} {i % (n - 1) + 1}\n" for i in rim))
    return str(path)


def levels_per_tick(state, n: int) -> dict:
    """Levels (the largest count of pings one node receives at a tick) over the ticks with
    pings, from the final ping table (host numpy)."""
    import numpy as np

    a = state.algo_state
    arrival = np.asarray(a.ping_arrival).ravel()
    recv = np.asarray(a.ping_receiver).ravel()
    got = arrival >= 0
    if not got.any():
        return {"levels_mean": 0.0, "levels_max": 0, "ticks_with_pings": 0}
    pair = arrival[got].astype(np.int64) * (n + 1) + recv[got]
    _, counts = np.unique(pair, return_counts=True)
    ticks = np.unique(pair // (n + 1))
    per_tick = np.zeros(int(ticks.max()) + 1, np.int64)
    np.maximum.at(per_tick, np.unique(pair) // (n + 1), counts)
    per_tick = per_tick[ticks]
    return {"levels_mean": round(float(per_tick.mean()), 2), "levels_max": int(per_tick.max()),
            "ticks_with_pings": int(ticks.size),
            "pings_held": int(got.sum()), "pings_sent": int(np.asarray(a.ping_tail).sum())}


def one(n: int, topology: str, args) -> dict:
    """Build, compile and run one configuration in this process; the figures as a dict."""
    import jax
    import numpy as np

    import divjax
    from divjax.config import default_hparams
    from divjax.engine.sim import make_engine
    from divjax.frontends import presets

    with tempfile.TemporaryDirectory() as tmp:
        topo = "complete" if topology == "complete" else "file:" + wheel_file(n, Path(tmp))
        cfg = presets.get_preset(presets.DEFAULT_PRESET).replace(
            task="synthetic", algorithm="adpsgd", n_nodes=n, n_stragglers=min(7, n),
            topology=topo, fanout=args.fanout, local_steps=args.local_steps,
            duration_s=args.duration_s, eval_every_s=args.duration_s)
        hp = default_hparams(cfg)
        engine = make_engine(cfg, hp=hp)
    state = jax.block_until_ready(divjax.jit(engine.init)(jax.random.key(0), hp))
    t0 = time.perf_counter()
    step = divjax.jit(engine.run_ticks, donate_argnums=0).lower(state, hp).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state, hp))
    run_s = time.perf_counter() - t0
    iterations = int(np.asarray(state.iterations).astype(np.int64).sum())
    return {"n": n, "topology": topology, "ping_slots": engine.cfg.ping_slots,
            "ticks": engine.cfg.num_ticks, "iterations": iterations,
            "errors": int(state.errors), "compile_s": round(compile_s, 3),
            "run_s": round(run_s, 4),
            "us_per_node_iter": round(1e6 * run_s / max(1, iterations), 3),
            **levels_per_tick(state, n)}


def child(n: int, topology: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", str(n), "--topologies", topology,
           "--duration-s", str(args.duration_s), "--local-steps", str(args.local_steps),
           "--fanout", str(args.fanout)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s,
                              cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"n": n, "topology": topology, "error": f"timed out after {args.timeout_s} s"}
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [""])[-1][:300]
        return {"n": n, "topology": topology, "error": last or f"exit {done.returncode}"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - t0, 2)
    return row


COLUMNS = ("n", "topology", "Q", "ticks", "iterations", "levels mean / max", "compile s",
           "run s", "us / node-iter")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']:,} | {r['topology']} | {r['error']} |")
            continue
        lines.append(f"| {r['n']:,} | {r['topology']} | {r['ping_slots']} | {r['ticks']} | "
                     f"{r['iterations']:,} | {r['levels_mean']} / {r['levels_max']} | "
                     f"{r['compile_s']} | {r['run_s']} | {r['us_per_node_iter']:,} |")
    return "\n".join(lines)


def write_tables(rows: list[dict], meta: dict, tag: str) -> str:
    from bench_common import write_result

    stem = f"adpsgd-hub-cpu-{meta['date']}{tag}"
    write_result(RESULTS / f"{stem}.json", {"meta": meta, "rows": rows})
    text = (f"# AD-PSGD with a hub ({meta['date']}, commit {meta['commit']})\n\n"
            f"`{meta['command']}`\n\n{meta['device']}, {meta['cpus']} CPUs, jax {meta['jax']}; "
            f"{meta['shared']}\n\n" + table(rows) + "\n")
    (RESULTS / f"{stem}.md").write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--topologies", nargs="+", default=["complete", "wheel"],
                   choices=["complete", "wheel"])
    p.add_argument("--duration-s", type=float, default=1.0)
    p.add_argument("--local-steps", type=int, default=8)
    p.add_argument("--fanout", type=int, default=2)
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--shared", default="", help="a note on other load on the machine")
    p.add_argument("--tag", default="")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.topologies[0], args)))
        return
    from bench_common import run_meta

    meta = run_meta("adpsgd_hub.py", argv if argv is not None else sys.argv[1:],
                    cpus=os.cpu_count(), shared=args.shared)
    rows = []
    for n in args.ns:
        for topology in args.topologies:
            rows.append(child(n, topology, args))
            print(json.dumps(rows[-1]), flush=True)
            write_tables(rows, meta, args.tag)   # after every size: survives an interrupt
    print(write_tables(rows, meta, args.tag))


if __name__ == "__main__":
    main()
