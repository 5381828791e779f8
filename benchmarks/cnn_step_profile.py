"""Where a GN-LeNet step inside the engine differs from one step called alone, op by op (issue 20).

Profiles, in one process and with the same XLA options (divjax's for a convolution model):
  single   one jitted SGD step of one model at batch 8 (the custom-VJP GN-LeNet, pytree params,
           a fixed float batch), called `--calls` times;
  engine   one interval of the engine's `run_ticks` (DivShare on CIFAR-10, `--nodes` nodes,
           `--steps` local steps, no evaluation): every node trains one iteration, so the
           interval holds nodes x steps local steps, plus the exchange and averaging.
XLA's per-op times come from the Perfetto trace (as in profile_ops.py). Ops are matched across
the two programs by their HLO kind (the op name without its number) and output shape, read from
each compiled program's HLO text. Per local step, the table gives each matched op's time in both
programs, the engine's own per-step ops (no match in the single step: batch sampling, the flat
parameter vector, the optimiser), its per-iteration ops (fewer calls than steps: exchange,
averaging, the tick loop) and the wall time, so the difference between the two walls is spelt
out op by op. Each op's time is its best of `--rounds` rounds (single and engine alternating,
so both see the same load on a shared machine), and so is each wall. Op times nest (a while
loop's time includes its body's): loops are listed apart and left out of the sums.

    python benchmarks/cnn_step_profile.py --data-dir ../shared/data [--nodes 16] [--steps 16]

(More than about 1,000 local steps in one interval overflow the profiler's event buffer; the
script then stops with an error rather than report a partial trace.)
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from bench_common import run_meta, write_result
from cnn_training import RESULTS, data, engine_cfg, model_fns
from profile_ops import op_times

from divjax.config import default_hparams
from divjax.engine.sim import make_engine
from divjax.engine.xla_options import compiler_options
from divjax.engine.xla_options import jit as divjax_jit

CONTAINERS = ("while", "call", "conditional")        # ops whose time includes other ops'
NUMBER = re.compile(r"[.]\d+$")                     # the .N of an op name
INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(?[^ ]+?\)?)\s+(\w[\w-]*)\(")


def hlo_kinds(hlo_text: str) -> dict[str, str]:
    """op name -> "kind shape" (name without its number, output shape without layouts)."""
    kinds = {}
    for line in hlo_text.splitlines():
        m = INSTR.match(line)
        if m:
            name, shape = m.group(1), re.sub(r"\{[^}]*\}", "", m.group(2))
            kinds[name] = f"{NUMBER.sub('', name)} {shape}"
    return kinds


def profile(call, n_calls: int) -> tuple[float, collections.Counter, collections.Counter]:
    """(wall s of n_calls calls, us per op name, calls per op name) under the profiler."""
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        t0 = time.perf_counter()
        for _ in range(n_calls):
            jax.block_until_ready(call())
        wall = time.perf_counter() - t0
        jax.profiler.stop_trace()
        total, calls = op_times(Path(tmp))
    return wall, total, calls


def by_kind(total, calls, kinds, steps: int) -> dict[str, dict]:
    """Per "kind shape": us per local step and calls per local step (XLA ops only)."""
    out = collections.defaultdict(lambda: {"us_per_step": 0.0, "calls_per_step": 0.0,
                                           "ops": []})
    for name, us in total.items():
        if name not in kinds:
            continue                                   # runtime spans, not XLA ops
        row = out[kinds[name]]
        row["us_per_step"] += us / steps
        row["calls_per_step"] += calls[name] / steps
        row["ops"].append(name)
    return dict(out)


def fastest(rounds: list[dict]) -> dict[str, dict]:
    """Per op kind, its round with the least time per step (best of, like the other timings:
    the machine is shared); ops missing from a round count from the rounds that have them."""
    out = {}
    for r in rounds:
        for k, v in r.items():
            if k not in out or v["us_per_step"] < out[k]["us_per_step"]:
                out[k] = v
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data", help="folder with cifar10.npz")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16, help="local steps per iteration")
    ap.add_argument("--calls", type=int, default=300, help="profiled single-step calls")
    ap.add_argument("--rounds", type=int, default=3, help="profiled rounds (single, engine)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    options = compiler_options(convolutions=True)

    init, step = model_fns(True)
    p = jax.jit(init)(jax.random.key(0))
    x, y = data(1, 1)
    x, y = x[0, 0], y[0, 0]
    single = jax.jit(lambda p, x, y: step(p, (x, y))[0],
                     compiler_options=options).lower(p, x, y).compile()
    for _ in range(20):
        jax.block_until_ready(single(p, x, y))

    cfg = engine_cfg(args.nodes, args.steps, args.data_dir)
    hp = default_hparams(cfg)
    engine = make_engine(cfg, hp=hp)
    state = divjax_jit(engine.init)(jax.random.key(0), hp)
    run = divjax_jit(engine.run_ticks).lower(state, hp).compile()
    state = jax.block_until_ready(run(state, hp))              # warm-up interval
    holder = {"state": state}

    def engine_call():
        holder["state"] = run(holder["state"], hp)
        return holder["state"]

    s_hlo, e_hlo = hlo_kinds(single.as_text()), hlo_kinds(run.as_text())
    s_rounds, e_rounds, s_walls, e_walls = [], [], [], []
    for _ in range(args.rounds):          # alternating, so both see the same load
        wall, total, calls = profile(lambda: single(p, x, y), args.calls)
        s_walls.append(wall / args.calls * 1e6)
        s_rounds.append(by_kind(total, calls, s_hlo, args.calls))
        before = int(np.sum(holder["state"].iterations))
        wall, total, calls = profile(engine_call, 1)
        e_steps = (int(np.sum(holder["state"].iterations)) - before) * args.steps
        e_walls.append(wall / e_steps * 1e6)
        e_rounds.append(by_kind(total, calls, e_hlo, e_steps))
    s_kinds, e_kinds = fastest(s_rounds), fastest(e_rounds)

    # The profiler keeps a bounded number of events: past it, later ops go missing and each
    # op seems to run less than once per step. Every convolution runs exactly once per step.
    conv = [k for k in set(s_kinds) & set(e_kinds) if k.startswith("conv_general_dilated")]
    coverage = min(e_kinds[k]["calls_per_step"] / s_kinds[k]["calls_per_step"] for k in conv)
    if not 0.99 < coverage < 1.01:
        raise SystemExit(f"the engine's trace holds {coverage:.2f} convolutions per local step, "
                         "not 1 (the profiler dropped events): profile fewer nodes or steps")

    def summed(rows, keys):
        return sum(rows[k]["us_per_step"] for k in keys if not k.startswith(CONTAINERS))

    matched = sorted(set(s_kinds) & set(e_kinds),
                     key=lambda k: -abs(e_kinds[k]["us_per_step"] - s_kinds[k]["us_per_step"]))
    e_only = [k for k in e_kinds if k not in s_kinds and not k.startswith(CONTAINERS)]
    per_step = sorted((k for k in e_only if e_kinds[k]["calls_per_step"] >= 0.99),
                      key=lambda k: -e_kinds[k]["us_per_step"])
    per_iter = sorted((k for k in e_only if e_kinds[k]["calls_per_step"] < 0.99),
                      key=lambda k: -e_kinds[k]["us_per_step"])
    s_only = [k for k in s_kinds if k not in e_kinds and not k.startswith(CONTAINERS)]
    loops = {k: v for k, v in e_kinds.items() if k.startswith(CONTAINERS)}
    summary = {
        "single_wall_us_per_step": min(s_walls), "engine_wall_us_per_step": min(e_walls),
        "single_wall_us_per_step_rounds": s_walls, "engine_wall_us_per_step_rounds": e_walls,
        "single_ops_us_per_step": summed(s_kinds, s_kinds),
        "engine_ops_us_per_step": summed(e_kinds, e_kinds),
        "matched_single_us": summed(s_kinds, matched),
        "matched_engine_us": summed(e_kinds, matched),
        "single_only_us": summed(s_kinds, s_only),
        "engine_per_step_only_us": summed(e_kinds, per_step),
        "engine_per_iteration_us": summed(e_kinds, per_iter),
    }
    out = {"meta": run_meta("cnn_step_profile.py", argv, compiler_options=options,
                            nodes=args.nodes, steps=args.steps,
                            engine_local_steps_profiled=e_steps, single_calls=args.calls,
                            rounds=args.rounds),
           "summary": summary,
           "matched": {k: {"single": s_kinds[k], "engine": e_kinds[k]} for k in matched},
           "engine_per_step_only": {k: e_kinds[k] for k in per_step},
           "engine_per_iteration": {k: e_kinds[k] for k in per_iter},
           "single_only": {k: s_kinds[k] for k in s_only}, "engine_loops": loops}

    print(f"us per local step (profiled): single wall {summary['single_wall_us_per_step']:.0f}, "
          f"ops {summary['single_ops_us_per_step']:.0f}; engine wall "
          f"{summary['engine_wall_us_per_step']:.0f}, ops "
          f"{summary['engine_ops_us_per_step']:.0f}")
    print(f"matched ops: single {summary['matched_single_us']:.0f}, engine "
          f"{summary['matched_engine_us']:.0f}; single-only {summary['single_only_us']:.0f}; "
          f"engine-only per step {summary['engine_per_step_only_us']:.0f}, per iteration "
          f"{summary['engine_per_iteration_us']:.0f}")
    print("\n| matched op (kind, shape) | single us/step | engine us/step | engine - single |")
    print("|---|---:|---:|---:|")
    for k in matched[:args.top]:
        a, b = s_kinds[k]["us_per_step"], e_kinds[k]["us_per_step"]
        print(f"| {k} | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    for title, keys, rows in (("engine-only, per step", per_step, e_kinds),
                              ("engine-only, per iteration or tick", per_iter, e_kinds),
                              ("single-only", s_only, s_kinds)):
        print(f"\n| {title} | us/step | calls/step |\n|---|---:|---:|")
        for k in keys[:args.top]:
            print(f"| {k} | {rows[k]['us_per_step']:.1f} | {rows[k]['calls_per_step']:.2f} |")
    path = Path(args.out) / (f"cnn_step_profile-{jax.default_backend()}-{out['meta']['date']}"
                             f"-steps{args.steps}.json")
    write_result(path, out)
    return out


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
