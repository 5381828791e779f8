"""Scaling in n (issue 33): wall time per node-iteration, measured peak memory per node, compile
time and the memory model's figure, from 1,024 to 262,144 nodes (and more if asked).

Each n runs in a fresh subprocess (so its peak resident memory is its own) with the CLI's default
configuration (`divjax run --task synthetic`: the least-squares task, 68 parameters, DivShare,
Omega=8, s=6, 7 stragglers, 128 local steps per iteration) for a short simulated duration:

  build_s     make_engine: the task's data (host numpy, then f32 on the device) and the sizing
  compile_s   lower + compile of `engine.run_ticks` (the ticks of one eval interval, no metrics)
  run_s       one call of it (block_until_ready); us_per_node_iter = run_s / sum(iterations)
  peak        VmHWM of the process (Linux), by phase: after the build, and, the peak reset
              (/proc/self/clear_refs 5) after the build, the peak of init + compile + run
  per node    (peak - peak of an n=8 process doing the same) / (n - 8)
  model       divjax.memory.memory_model (state, training buffers, neighbours, task data) and
              XLA's own buffer figures of the compiled step (`compiled_memory`)

Evaluation is timed apart (eval_s, up to --eval-max nodes) and left out of the per-iteration
time: the synthetic task's metrics evaluate every node on the union of all nodes' data (`gap`,
`loss`), O(n^2) work (see docs/scaling.md).

    python benchmarks/scaling.py [--ns 1024 4096 16384 65536 262144] [--algorithms divshare]
                                 [--duration-s 0.45] [--shared "why"]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # bench_common; this checkout's divjax
RESULTS = HERE / "results"
BASE_N = 8   # the smallest n the default config allows (fanout 6 < n): the baseline process


def peak_bytes() -> int:
    """The process's peak resident set size (VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def one(n: int, algorithm: str, duration_s: float, eval_max: int) -> dict:
    """Build, compile and run one configuration in this process; the figures as a dict."""
    import jax

    from divjax import memory, presets
    from divjax.config import default_hparams
    from divjax.sim import make_engine

    start = peak_bytes()
    cfg = presets.get_preset(presets.DEFAULT_PRESET).replace(
        task="synthetic", algorithm=algorithm, n_nodes=n, n_stragglers=min(7, n),
        duration_s=duration_s, eval_every_s=duration_s)
    hp = default_hparams(cfg)
    t0 = time.perf_counter()
    engine = make_engine(cfg, hp=hp)
    build_s = time.perf_counter() - t0
    peak_build = peak_bytes()
    reset = reset_peak()
    state = jax.block_until_ready(jax.jit(engine.init)(jax.random.key(0), hp))
    t0 = time.perf_counter()
    step = jax.jit(engine.run_ticks, donate_argnums=0).lower(state, hp).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state, hp))
    run_s = time.perf_counter() - t0
    iterations = int(state.iterations.astype("int64").sum())
    peak_run = peak_bytes() if reset else None
    evaluation = {}
    if n <= eval_max and reset_peak():   # one evaluation of every node, timed apart
        t0 = time.perf_counter()
        ev = jax.jit(engine.evaluate).lower(state).compile()
        evaluation["eval_compile_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        jax.block_until_ready(ev(state))
        evaluation["eval_s"] = round(time.perf_counter() - t0, 4)
        evaluation["peak_eval_bytes"] = peak_bytes()
    model = memory.memory_model(engine.cfg, engine.layout,
                                data_bytes=memory.task_data_bytes(engine.task), available=1)
    return {"n": n, "algorithm": algorithm, "ticks": engine.cfg.num_ticks,
            "iterations": iterations, "build_s": round(build_s, 3),
            "compile_s": round(compile_s, 3), "run_s": round(run_s, 4),
            "us_per_node_iter": round(1e6 * run_s / max(1, iterations), 3),
            "peak_import_bytes": start, "peak_build_bytes": peak_build,
            "peak_run_bytes": peak_run, "peak_reset": reset,
            "model_total_bytes": model["total"], "model_parts": model["parts"],
            "xla": memory.compiled_memory(step), **evaluation}


def child(n: int, algorithm: str, duration_s: float, timeout: float, eval_max: int) -> dict:
    cmd = [sys.executable, __file__, "--one", str(n), "--algorithms", algorithm,
           "--duration-s", str(duration_s), "--eval-max", str(eval_max)]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"n": n, "algorithm": algorithm, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        return {"n": n, "algorithm": algorithm,
                "error": (done.stderr.strip().splitlines() or ["?"])[-1][:300]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - t0, 2)
    return row


def per_node(rows: list[dict], base: dict) -> None:
    """Add the per-node figures, each net of the n=BASE_N process `base`."""
    for r in rows:
        if "error" in r or r is base:
            continue
        k = r["n"] - base["n"]
        r["build_peak_per_node"] = round((r["peak_build_bytes"] - base["peak_build_bytes"]) / k)
        if r["peak_run_bytes"] is not None and base["peak_run_bytes"] is not None:
            r["run_peak_per_node"] = round((r["peak_run_bytes"] - base["peak_run_bytes"]) / k)
        r["model_per_node"] = round((r["model_total_bytes"] - base["model_total_bytes"]) / k)


def _num(x) -> str:
    return f"{x:,}" if isinstance(x, int | float) else str(x)


def table(rows: list[dict]) -> str:
    head = ("| n | alg | iterations | us / node-iter | compile s | build s | peak build B/node | "
            "peak run B/node | model B/node | XLA peak estimate | eval s |\n|" + "---|" * 11)
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']:,} | {r['algorithm']} | error: {r['error']} |" + " |" * 8)
            continue
        cells = [f"{r['n']:,}", r["algorithm"], _num(r["iterations"]),
                 _num(r["us_per_node_iter"]), _num(r["compile_s"]), _num(r["build_s"]),
                 _num(r.get("build_peak_per_node", "-")), _num(r.get("run_peak_per_node", "-")),
                 _num(r.get("model_per_node", "-")),
                 f"{r['xla'].get('peak_estimate', 0) / 2**20:.1f} MiB",
                 _num(r.get("eval_s", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 262144])
    p.add_argument("--algorithms", nargs="+", default=["divshare"])
    p.add_argument("--duration-s", type=float, default=0.45)
    p.add_argument("--timeout-s", type=float, default=3600)
    p.add_argument("--eval-max", type=int, default=16384,
                   help="time one evaluation of every node up to this n (O(n^2) for synthetic)")
    p.add_argument("--shared", default="", help="a note on other load on the machine")
    p.add_argument("--tag", default="")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.algorithms[0], args.duration_s, args.eval_max),
                         default=int))
        return
    from bench_common import run_meta, write_result

    rows = []
    for alg in args.algorithms:
        base = child(BASE_N, alg, args.duration_s, args.timeout_s, args.eval_max)
        group = [base]
        for n in args.ns:
            group.append(child(n, alg, args.duration_s, args.timeout_s, args.eval_max))
            print(json.dumps({k: v for k, v in group[-1].items()
                              if k not in ("model_parts", "xla")}), flush=True)
        if "error" not in base:
            per_node(group, base)
        rows += group
    meta = run_meta("scaling.py", argv if argv is not None else sys.argv[1:],
                    duration_s=args.duration_s, cpus=os.cpu_count(), shared=args.shared)
    out = {"meta": meta, "rows": rows}
    name = f"scaling-{meta['device'].lower()}-{meta['date']}{args.tag}"
    write_result(RESULTS / f"{name}.json", out)
    md = (f"# Scaling in n ({meta['date']}, {meta['device']}, commit {meta['commit']})\n\n"
          f"{table(rows)}\n\nMachine: {meta['platform']}, {meta['cpus']} CPUs"
          f"{'; shared: ' + args.shared if args.shared else ''}. Command: `{meta['command']}`\n")
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
