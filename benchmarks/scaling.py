"""Scaling in n (issue 33): wall time per node-iteration, measured peak memory per node, compile
time and the memory model's figure, from 1,024 to 262,144 nodes (and more if asked).

Each n runs in a fresh subprocess (so its peak resident memory is its own) with the CLI's default
configuration (`divjax run --task synthetic`: the least-squares task, 68 parameters, Omega=8,
s=6, 7 stragglers, 128 local steps per iteration) for a short simulated duration, for DivShare
and Epidemic Learning (`--algorithms`), on the least-squares task (`--tasks synthetic`) and its
4,100-parameter variant (`synthetic-4100`: 1,024 features, 4 outputs; `--local-steps-4100`
local steps, fewer by default so that a node-iteration costs about what the small task's does):

  build_s     make_engine: the task's data (host numpy, then f32 on the device) and the sizing
  compile_s   lower + compile of `engine.run_ticks` (the ticks of one eval interval, no metrics)
              with `divjax.jit`, as `divjax run` compiles it: the task's data passed as
              arguments, divjax's XLA options (DIVJAX_EMBED_CONSTANTS=1: embedded constants)
  run_s       one call of it (block_until_ready); us_per_node_iter = run_s / sum(iterations)
  peak        VmHWM of the process (Linux), by phase: after the build, and, the peak reset
              (/proc/self/clear_refs 5) after the build, the peak of init + compile + run;
              and the execution's own peak: after the compile the heap it freed is handed back
              to the OS (glibc malloc_trim), the peak reset, then the run
  per node    (peak - peak of an n=8 process doing the same) / (n - 8), and the peak of the
              whole process / n (no baseline subtracted)
  exec        (execution peak - that of the n=8 process) / (n - 8): what the run holds per
              node once the compiler's transient heap (about 250-350 MB whatever n is, and
              +-50 MB from one process to the next) is out of the figure. Sizes up to
              --repeat-max run --repeats times (the median repeat is the row; the range of
              the figure over the repeats' extremes is given beside it). With --warm-cache DIR
              each size runs once to fill JAX's persistent compilation cache and is measured
              in a second process that loads its executables: no compiler heap at all, and
              the execution peaks of repeats agree to tens of KB (they vary by +-10 MB
              without it)
  model       divjax.engine.memory.memory_model (state, XLA's temporaries traced by
              memory_temps, neighbours, task data and its embedded copies) and
              XLA's own buffer figures of the compiled step (`compiled_memory`)

Evaluation is timed apart (eval_s, up to --eval-max nodes) and left out of the per-iteration
time (O(D^2) per node: the task's metrics are quadratic forms). Before a child above
--check-free-above nodes, MemAvailable is read; a size whose memory model exceeds half of it is
skipped (the machine is shared).

    python benchmarks/scaling.py [--ns 1024 4096 16384 65536 262144] [--algorithms divshare]
                                 [--tasks synthetic synthetic-4100] [--duration-s 0.45]
                                 [--shared "why"]
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


TASKS = {"synthetic": 16, "synthetic-4100": 1024}   # task -> input features (4 outputs)


def release_freed_heap() -> bool:
    """Hand the heap's free memory back to the OS (glibc `malloc_trim(0)`): what the compiler
    freed stays resident otherwise, and its size varies by tens of MB between processes of the
    same program. False where there is no glibc."""
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
    except (OSError, AttributeError):
        return False


def rss_bytes(field: str = "VmRSS") -> int:
    """The process's resident set size now (VmRSS; RssAnon: anonymous memory, RssFile:
    file-backed pages such as the libraries' code), bytes; 0 where it cannot be read."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    """MemAvailable of the machine, bytes (0 where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def config(n: int, algorithm: str, task: str, duration_s: float, local_steps: int):
    from divjax.frontends import presets

    cfg = presets.get_preset(presets.DEFAULT_PRESET).replace(
        task="synthetic", algorithm=algorithm, n_nodes=n, n_stragglers=min(7, n),
        duration_s=duration_s, eval_every_s=duration_s)
    return cfg.replace(local_steps=local_steps) if task != "synthetic" else cfg


def one(n: int, algorithm: str, task_name: str, duration_s: float, eval_max: int,
        local_steps: int) -> dict:
    """Build, compile and run one configuration in this process; the figures as a dict."""
    import jax

    import divjax
    from divjax.config import default_hparams
    from divjax.engine import memory, memory_temps
    from divjax.engine.sim import make_engine
    from divjax.tasks.base import make_synthetic_task

    start = peak_bytes()
    cfg = config(n, algorithm, task_name, duration_s, local_steps)
    hp = default_hparams(cfg)
    t0 = time.perf_counter()
    task = make_synthetic_task(cfg, dim=TASKS[task_name])
    engine = make_engine(cfg, task=task, hp=hp)
    build_s = time.perf_counter() - t0
    peak_build = peak_bytes()
    reset = reset_peak()
    state = jax.block_until_ready(divjax.jit(engine.init)(jax.random.key(0), hp))
    t0 = time.perf_counter()
    step = divjax.jit(engine.run_ticks, donate_argnums=0).lower(state, hp).compile()
    compile_s = time.perf_counter() - t0
    peak_compile = peak_bytes() if reset else None
    trimmed = release_freed_heap()
    rss_trimmed = rss_bytes()
    exec_reset = trimmed and reset_peak()
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(state, hp))
    run_s = time.perf_counter() - t0
    iterations = int(state.iterations.astype("int64").sum())
    peak_exec = peak_bytes() if exec_reset else None
    rss_split = {"rss_anon_bytes": rss_bytes("RssAnon"), "rss_file_bytes": rss_bytes("RssFile")}
    peak_run = max(peak_compile, peak_bytes()) if reset else None
    xla = memory.compiled_memory(step)
    evaluation = {}
    if n <= eval_max and reset_peak():   # one evaluation of every node, timed apart
        t0 = time.perf_counter()
        ev = divjax.jit(engine.evaluate).lower(state).compile()
        evaluation["eval_compile_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        jax.block_until_ready(ev(state))
        evaluation["eval_s"] = round(time.perf_counter() - t0, 4)
        evaluation["peak_eval_bytes"] = peak_bytes()
    model = memory.memory_model(engine.cfg, engine.layout,
                                data_bytes=memory.task_data_bytes(engine.task), available=1,
                                temporaries=memory_temps.interval_temporaries(engine, hp))
    del state, step
    plain = plain_local_sgd(task, cfg.local_steps, float(hp.lr), n, max(1, iterations // n))
    return {"n": n, "algorithm": algorithm, "task": task_name, "params": engine.layout.D,
            "local_steps": engine.cfg.local_steps, "ticks": engine.cfg.num_ticks,
            "iterations": iterations, "build_s": round(build_s, 3),
            "compile_s": round(compile_s, 3), "run_s": round(run_s, 4),
            "us_per_node_iter": round(1e6 * run_s / max(1, iterations), 3),
            "peak_import_bytes": start, "peak_build_bytes": peak_build,
            "peak_run_bytes": peak_run, "peak_reset": reset,
            "peak_compile_bytes": peak_compile, "rss_trimmed_bytes": rss_trimmed,
            "peak_exec_bytes": peak_exec, **rss_split,
            "model_total_bytes": model["total"], "model_parts": model["parts"],
            "xla": xla, **evaluation, **plain}


def plain_local_sgd(task, local_steps: int, lr: float, n: int, rounds: int) -> dict:
    """The floor the engine's time is measured against: the best a plain single jitted call
    achieves for the same training work, with no network at all. Every node runs `local_steps`
    SGD steps on its own mini-batches (the task's `sample_batch` and `loss`, `jax.grad`, one
    `lax.scan` per node, `vmap` over the n nodes), `rounds` times (the engine's iterations per
    node), one call per round. Returns its time per node-iteration and compile time."""
    import jax

    def node_iteration(params, key, node):
        def step(p, k):
            g = jax.grad(task.loss)(p, task.sample_batch(k, node))
            return jax.tree.map(lambda a, b: a - lr * b, p, g), None
        return jax.lax.scan(step, params, jax.random.split(key, local_steps))[0]

    from divjax.engine.hoist import Hoisted

    params = jax.jit(jax.vmap(task.init))(jax.random.split(jax.random.key(1), n))
    nodes = jax.numpy.arange(n, dtype=jax.numpy.int32)
    keys = jax.random.split(jax.random.key(2), (rounds, n))
    t0 = time.perf_counter()
    # a plain jax.jit whose closed-over task data is an argument, not an embedded constant
    # (as the engine's): embedded, the 4,100-parameter task's examples were held three times
    call = Hoisted(jax.vmap(node_iteration), {"donate_argnums": 0}).lower(params, keys[0], nodes)
    call = call.compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in range(rounds):
        params = call(params, keys[r], nodes)
    jax.block_until_ready(params)
    run_s = time.perf_counter() - t0
    return {"plain_us_per_node_iter": round(1e6 * run_s / (rounds * n), 3),
            "plain_compile_s": round(compile_s, 3)}


def child(n: int, algorithm: str, task: str, args) -> dict:
    cmd = [sys.executable, __file__, "--one", str(n), "--algorithms", algorithm, "--tasks", task,
           "--duration-s", str(args.duration_s), "--eval-max", str(args.eval_max),
           "--local-steps-4100", str(args.local_steps_4100)]
    head = {"n": n, "algorithm": algorithm, "task": task}
    timeout = args.timeout_s
    if n > args.check_free_above:
        free, need = mem_available(), model_bytes(n, algorithm, task, args)
        head["mem_available_bytes"] = free
        if 2 * need > free:
            return {**head, "error": f"skipped: memory model {need / 2**30:.1f} GiB, "
                                     f"{free / 2**30:.1f} GiB available"}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=HERE.parent, env=child_env(args))
    except subprocess.TimeoutExpired:
        return {**head, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        last = (done.stderr.strip().splitlines() or [""])[-1][:300]
        if done.returncode < 0:     # killed by a signal: say which (9 = the kernel's OOM killer)
            import signal
            last = (f"killed by {signal.Signals(-done.returncode).name}"
                    + (" (out of memory?)" if done.returncode == -9 else "")
                    + (f"; last stderr line: {last}" if last else ""))
        return {**head, "error": last or f"exit status {done.returncode}, no stderr"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - t0, 2)
    return {**head, **row}


def child_env(args) -> dict:
    """The children's environment: with --warm-cache, JAX's persistent compilation cache in
    that folder, every program cached (no minimum compile time or size)."""
    env = dict(os.environ)
    if args.warm_cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(args.warm_cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


def warmed(n: int, algorithm: str, task: str, args) -> dict:
    """`child`; with --warm-cache, run once to fill the cache and then measured: the measured
    process loads its executables instead of compiling them, so no compiler heap is left
    resident (it varies by +-10 MB between processes of one program, and dominates the figure
    net of n = 8 at small n). compile_s is then the cold compile, compile_load_s the load."""
    if args.warm_cache is None:
        return child(n, algorithm, task, args)
    cold = child(n, algorithm, task, args)
    if "error" in cold:
        return cold
    row = child(n, algorithm, task, args)
    if "error" not in row:
        row["compile_load_s"], row["compile_s"] = row["compile_s"], cold["compile_s"]
        row["cold_peak_exec_bytes"] = cold.get("peak_exec_bytes")
        row["warm_cache"] = True
    return row


def child_repeated(n: int, algorithm: str, task: str, args) -> dict:
    """`child`, --repeats times for n <= --repeat-max: the repeat with the median execution
    peak is the row, and `repeats` keeps every repeat's peaks and time (the noise)."""
    times = args.repeats if n <= args.repeat_max else 1
    rows = [warmed(n, algorithm, task, args) for _ in range(max(1, times))]
    ok = sorted((r for r in rows if "error" not in r), key=exec_peak_of)
    if not ok:
        return rows[0]
    row = ok[(len(ok) - 1) // 2]
    row["repeats"] = [{"peak_exec_bytes": exec_peak_of(r), "peak_bytes": peak_of(r),
                       "us_per_node_iter": r["us_per_node_iter"]} for r in ok]
    return row


def exec_peak_of(r: dict) -> int:
    """The execution's peak (after the freed heap went back), else the process's (old rows)."""
    return r.get("peak_exec_bytes") or peak_of(r)


def model_bytes(n: int, algorithm: str, task: str, args) -> int:
    """The memory model's total at n (in a child: this process stays small)."""
    code = ("import sys, json; sys.path[:0] = sys.argv[1:3]; import scaling; "
            "print(scaling.model_of(*json.loads(sys.argv[3])))")
    spec = json.dumps([n, algorithm, task, args.duration_s, args.local_steps_4100])
    done = subprocess.run([sys.executable, "-c", code, str(HERE), str(HERE.parent), spec],
                          capture_output=True, text=True, cwd=HERE.parent)
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0


def model_of(n: int, algorithm: str, task: str, duration_s: float, local_steps: int) -> int:
    """The memory model at n before anything is built: D = features * 4 + 4 parameters, no
    task data (the synthetic task stores none), every node training at once (an upper bound)."""
    from divjax.engine import memory

    cfg = config(n, algorithm, task, duration_s, local_steps)
    return memory.memory_model(cfg, TASKS[task] * 4 + 4, available=1)["total"]


def peak_of(r: dict) -> int:
    """The process's peak over build and run (the run's is measured after a reset)."""
    return max(r["peak_build_bytes"], r["peak_run_bytes"] or 0)


def per_node(rows: list[dict], base: dict) -> None:
    """Add the per-node figures, each net of the n=BASE_N process `base`."""
    for r in rows:
        if "error" in r or r is base:
            continue
        k = r["n"] - base["n"]
        r["peak_per_node"] = round((peak_of(r) - peak_of(base)) / k)
        r["build_peak_per_node"] = round((r["peak_build_bytes"] - base["peak_build_bytes"]) / k)
        if r["peak_run_bytes"] is not None and base["peak_run_bytes"] is not None:
            r["run_peak_per_node"] = round((r["peak_run_bytes"] - base["peak_run_bytes"]) / k)
        r["model_per_node"] = round((r["model_total_bytes"] - base["model_total_bytes"]) / k)
        if r.get("peak_exec_bytes") and base.get("peak_exec_bytes"):
            r["exec_peak_per_node"] = round((r["peak_exec_bytes"] - base["peak_exec_bytes"]) / k)
            mine = [x["peak_exec_bytes"] for x in r.get("repeats", [])] or [r["peak_exec_bytes"]]
            theirs = ([x["peak_exec_bytes"] for x in base.get("repeats", [])]
                      or [base["peak_exec_bytes"]])
            r["exec_peak_per_node_range"] = [round((min(mine) - max(theirs)) / k),
                                             round((max(mine) - min(theirs)) / k)]
        r["process_peak_per_node"] = round(peak_of(r) / r["n"])
    marginal(rows)


def marginal(rows: list[dict]) -> None:
    """Add `marginal_peak_per_node`: (peak(n) - peak(m)) / (n - m) of the execution peaks from
    the next smaller n = m > BASE_N of the group that ran (e.g. 256 for 1,024), the bytes each
    added node costs. The process's fixed memory is not the same below ~128 nodes as above
    (more of the XLA runtime's code is paged in at larger sizes; glibc's per-thread arenas
    hold a few MiB that differ from size to size): net of n = 8, that step is divided by n
    and weighs 1-2 KB per node at 1,024 nodes; between two sizes above it, it cancels. This
    is the measured counterpart of the model's bytes per node."""
    done = sorted((r for r in rows if "error" not in r), key=lambda r: r["n"])
    for prev, r in zip(done, done[1:]):
        if prev["n"] > BASE_N:
            k = r["n"] - prev["n"]
            r["marginal_peak_per_node"] = round((exec_peak_of(r) - exec_peak_of(prev)) / k)
            r["marginal_model_per_node"] = round(
                (r["model_total_bytes"] - prev["model_total_bytes"]) / k)


def _num(x) -> str:
    return f"{x:,}" if isinstance(x, int | float) else str(x)


COLUMNS = ("n", "alg", "task (D)", "iterations", "us / node-iter",
           "plain local SGD us / node-iter (engine / plain)", "compile s", "build s",
           "peak B/node (net of n=8)", "peak run B/node (net)",
           "exec peak B/node (net) [range over repeats]", "model B/node",
           "added B/node, exec peak (measured / model)",
           "peak MiB", "model MiB", "XLA peak estimate", "eval s")


def _plain(r: dict) -> str:
    if "plain_us_per_node_iter" not in r:
        return "-"
    p = r["plain_us_per_node_iter"]
    return f"{p:,} ({r['us_per_node_iter'] / p:.2f}x)"


def _exec(r: dict) -> str:
    if "exec_peak_per_node" not in r:
        return "-"
    lo, hi = r["exec_peak_per_node_range"]
    return f"{r['exec_peak_per_node']:,}" + (f" [{lo:,}, {hi:,}]" if lo != hi else "")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']:,} | {r['algorithm']} | {r['task']} | error: {r['error']} |"
                         + " |" * (len(COLUMNS) - 4))
            continue
        cells = [f"{r['n']:,}", r["algorithm"], f"{r['task']} ({r['params']:,})",
                 _num(r["iterations"]), _num(r["us_per_node_iter"]), _plain(r),
                 _num(r["compile_s"]),
                 _num(r["build_s"]), _num(r.get("peak_per_node", "-")),
                 _num(r.get("run_peak_per_node", "-")), _exec(r),
                 _num(r.get("model_per_node", "-")),
                 (f"{r['marginal_peak_per_node']:,} / {r['marginal_model_per_node']:,}"
                  if "marginal_peak_per_node" in r else "-"),
                 f"{peak_of(r) / 2**20:,.0f}", f"{r['model_total_bytes'] / 2**20:,.0f}",
                 f"{r.get('xla', {}).get('peak_estimate', 0) / 2**20:.1f} MiB",
                 _num(r.get("eval_s", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def linear_fit(ns: list[int], peaks: list[int]) -> tuple[float, float]:
    """(a, b) of peak = a + b n fitted with relative errors (weights 1 / peak^2), so the small
    sizes count as much as the large ones: b is the bytes per node, a the fixed memory of a
    process running this program at these sizes. A term growing faster than n leaves the
    per-node figures (peak - a) / n rising with n."""
    import numpy as np

    x, y = np.asarray(ns, float), np.asarray(peaks, float)
    w = 1.0 / y
    a, b = np.linalg.lstsq(np.stack([w, w * x], 1), w * y, rcond=None)[0]
    return float(a), float(b)


def fit_line(key: tuple, sub: list[dict], base: dict | None) -> str:
    """The linear fit of the execution peaks of one (algorithm, task) group, and the spread of
    the per-node figures net of its intercept."""
    ns = [r["n"] for r in sub]
    a, b = linear_fit(ns, [r["peak_exec_bytes"] for r in sub])
    each = [(r["peak_exec_bytes"] - a) / r["n"] for r in sub]
    return (f"- {key[0]}, {key[1]}: execution peak = {a / 2**20:,.0f} MiB + {b:,.0f} B x n "
            f"(fit, relative errors; the n = 8 process: "
            f"{exec_peak_of(base) / 2**20 if base else float('nan'):,.0f} MiB); per node net of "
            f"the fit's fixed memory: " + ", ".join(f"{v:,.0f}" for v in each)
            + f" B (max/min {max(each) / min(each):.2f})")


def flatness(rows: list[dict], lo: int = 1024, hi: int = 262144) -> list[str]:
    """Per (algorithm, task): max / min over lo <= n <= hi of the net peak per node and of the
    time per node-iteration (the issue's targets: 1.10 and 1.5)."""
    out = []
    for key in sorted({(r["algorithm"], r["task"]) for r in rows}):
        sub = [r for r in rows if (r["algorithm"], r["task"]) == key and "error" not in r
               and lo <= r["n"] <= hi and "peak_per_node" in r]
        if len(sub) < 2:
            continue
        ns = f"n = {sub[0]['n']:,} .. {sub[-1]['n']:,}"
        mem = [r["peak_per_node"] for r in sub]
        us = [r["us_per_node_iter"] for r in sub]
        added = [r["marginal_peak_per_node"] for r in sub if "marginal_peak_per_node" in r]
        run = [r["exec_peak_per_node"] for r in sub if "exec_peak_per_node" in r]
        out.append(f"- {key[0]}, {key[1]} ({ns}): peak per node (net of n = 8) max/min = "
                   f"{max(mem) / min(mem):.2f}"
                   + (f", bytes per added node (execution peaks, from the next smaller size) "
                      f"max/min = {max(added) / min(added):.2f}"
                      if len(added) > 1 and min(added) > 0 else "")
                   + (f", execution peak per node (net of n = 8) max/min = "
                      f"{max(run) / min(run):.2f}" if len(run) > 1 and min(run) > 0 else "")
                   + f", time per node-iteration max/min = {max(us) / min(us):.2f}")
        fit = [r for r in sub if r.get("peak_exec_bytes")]
        if len(fit) >= 3:
            base = next((r for r in rows if (r["algorithm"], r["task"]) == key
                         and r["n"] == BASE_N and "error" not in r), None)
            out.append(fit_line(key, fit, base))
    return out


def write_tables(rows: list[dict], meta: dict, tag: str) -> str:
    """Per-node figures (each (algorithm, task) group net of its n = BASE_N row), then the JSON
    and the Markdown table under benchmarks/results/; returns the Markdown."""
    from bench_common import write_result

    for key in {(r["algorithm"], r["task"]) for r in rows}:
        group = [r for r in rows if (r["algorithm"], r["task"]) == key]
        base = next((r for r in group if r["n"] == BASE_N and "error" not in r), None)
        if base is not None:
            per_node(group, base)
    out = {"meta": meta, "rows": rows, "flatness": flatness(rows)}
    name = f"scaling-{meta['device'].lower()}-{meta['date']}{tag}"
    write_result(RESULTS / f"{name}.json", out)
    md = (f"# Scaling in n ({meta['date']}, {meta['device']}, commit {meta['commit']})\n\n"
          f"{table(rows)}\n\n" + "\n".join(flatness(rows)) +
          f"\n\nMachine: {meta['platform']}, {meta['cpus']} CPUs"
          f"{'; shared: ' + meta['shared'] if meta.get('shared') else ''}. "
          f"Command: `{meta['command']}`\n")
    (RESULTS / f"{name}.md").write_text(md)
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", type=int, nargs="+", default=[1024, 4096, 16384, 65536, 262144])
    p.add_argument("--algorithms", nargs="+", default=["divshare", "epidemic"])
    p.add_argument("--tasks", nargs="+", default=["synthetic"], choices=sorted(TASKS))
    p.add_argument("--duration-s", type=float, default=0.45)
    p.add_argument("--local-steps-4100", type=int, default=8)
    p.add_argument("--timeout-s", type=float, default=3600)
    p.add_argument("--check-free-above", type=int, default=65536)
    p.add_argument("--eval-max", type=int, default=16384,
                   help="time one evaluation of every node up to this n")
    p.add_argument("--repeats", type=int, default=3,
                   help="processes per size up to --repeat-max (the median is the row)")
    p.add_argument("--repeat-max", type=int, default=4096)
    p.add_argument("--warm-cache", type=Path, default=None,
                   help="run each size once to fill JAX's persistent compilation cache in this "
                        "folder, then measure a process that loads the executables")
    p.add_argument("--shared", default="", help="a note on other load on the machine")
    p.add_argument("--tag", default="")
    p.add_argument("--rows", type=Path, default=None,
                   help="only tabulate the rows of this file (one JSON row per line, as a run "
                        "prints them, n = 8 rows included), e.g. of an interrupted run")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one, args.algorithms[0], args.tasks[0], args.duration_s,
                             args.eval_max, args.local_steps_4100), default=int))
        return
    from bench_common import run_meta

    env = {k: os.environ[k] for k in ("JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS", "XLA_FLAGS",
                                      "JAX_PLATFORMS", "DIVJAX_EMBED_CONSTANTS",
                                      "DIVJAX_XLA_DEFAULTS", "MALLOC_ARENA_MAX")
           if k in os.environ}
    meta = run_meta("scaling.py", argv if argv is not None else sys.argv[1:],
                    duration_s=args.duration_s, cpus=os.cpu_count(), shared=args.shared,
                    env=env)   # the children inherit it (the data hoisted or embedded)
    if args.rows is not None:
        # the rows were measured by another run: its commit, date and machine are not these
        meta["tabulated_from"] = str(args.rows)
        meta["shared"] = (f"rows measured by an earlier run ({args.rows}); the commit, date "
                          f"and command here are the tabulation's. {args.shared}").strip()
        rows = [json.loads(line) for line in args.rows.read_text().splitlines()
                if line.startswith("{")]
        print(write_tables(rows, meta, args.tag))
        return
    rows = []
    for task in args.tasks:
        for alg in args.algorithms:
            for n in [BASE_N, *args.ns]:
                rows.append(child_repeated(n, alg, task, args))
                print(json.dumps(rows[-1], default=int), flush=True)
                write_tables(rows, meta, args.tag)   # after every size: survives an interrupt
    print(write_tables(rows, meta, args.tag))


if __name__ == "__main__":
    main()
