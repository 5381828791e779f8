"""The paper's MovieLens setting and decentralizepy's D-PSGD setting against their memory-traffic
floor, in one process (issue 20, targets 2 and 3).

Measured here, in the same process:
- the copy bandwidth of the machine (a jitted elementwise pass over a 256 MiB array: bytes read
  plus bytes written per second, best of 5);
- `movielens-paper` (DivShare, 60 nodes, 7 stragglers, s=6, Omega=8, tick 0.01 s, 0.15 s of
  compute; embedded MovieLens latest-small), steady state: eval intervals after the first
  (which compiles), evaluation included, as simulated seconds per wall second; the same with
  `--algorithm local` (no exchange) to split training from exchange;
- its floor: the bytes the delivered fragments and the aggregations must move per simulated
  second (each delivered fragment written once and read once, each finishing node's model read
  and written once), from the run's own counters, at the measured copy bandwidth;
- both again compiled with XLA's default CPU options instead of divjax's
  (`divjax.compiler_options()`: no YNNPACK library fusions), each right after its twin;
- the paper's setting again, interval by interval, each interval right after its own copy
  bandwidth measurement (best of 3), so each has its floor under the same load: the ratios
  and their median ("round by round");
- D-PSGD on decentralizepy's own MovieLens config (16 nodes, 3-regular, 10 local steps of batch
  16): wall time per round in steady state, against its floor (each node reads its own and its
  3 neighbours' models and writes one).

    python benchmarks/exchange_floor.py [--sim-s 6] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_common import git_commit

from divjax.frontends import presets
from divjax.config import default_hparams
from divjax.engine.sim import make_engine
from divjax.engine.xla_options import compiler_options


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes moved per second (read + write) by a jitted elementwise pass."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0001)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * x.nbytes / best


def steady_state(cfg, intervals: int, options: dict | None = None,
                 bandwidth_rounds: bool = False) -> dict:
    """Wall seconds per simulated second over `intervals` eval intervals after the first,
    compiled with XLA `options` (default: divjax's, `divjax.compiler_options()`).

    `bandwidth_rounds`: the intervals are then timed one by one, each right after a copy
    bandwidth measurement, so each interval has its own floor under the same load ("rounds":
    copy GB/s, wall s per simulated s, ratio to that floor)."""
    engine = make_engine(cfg)
    hp = default_hparams(engine.cfg)
    options = compiler_options() if options is None else options
    advance = jax.jit(engine.advance, donate_argnums=0, compiler_options=options or None)
    state = jax.jit(engine.init, compiler_options=options or None)(jax.random.key(0), hp)
    t0 = time.perf_counter()
    state, m = advance(state, hp)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    frag_bytes = float(np.mean(engine.layout.fragment_bytes))
    model_bytes = float(np.sum(engine.layout.fragment_bytes))

    def counts():
        return np.asarray(jax.device_get((state.counters.delivered.sum(),
                                          state.iterations.sum())), np.float64)

    before, wall, rounds = counts(), 0.0, []
    for i in range(intervals if bandwidth_rounds else 1):
        bw = copy_bandwidth(repeats=3) if bandwidth_rounds else None
        start = counts()
        t0 = time.perf_counter()
        for _ in range(1 if bandwidth_rounds else intervals):
            state, m = advance(state, hp)
        jax.block_until_ready(m)
        dt = time.perf_counter() - t0
        wall += dt
        if bandwidth_rounds:
            d, a = (counts() - start) / engine.cfg.eval_every_s
            floor = (2 * d * frag_bytes + 2 * a * model_bytes) / bw
            per_sim_s = dt / engine.cfg.eval_every_s
            rounds.append({"copy_GBps": bw / 1e9, "wall_per_sim_s": per_sim_s,
                           "ratio_to_floor": per_sim_s / floor})
    after = counts()
    sim_s = intervals * engine.cfg.eval_every_s
    delivered = float(after[0] - before[0]) / sim_s
    aggregations = float(after[1] - before[1]) / sim_s
    return {"first_interval_s": first, "wall_per_sim_s": wall / sim_s,
            "sim_per_wall": sim_s / wall, "delivered_per_sim_s": delivered,
            "aggregations_per_sim_s": aggregations, "fragment_bytes": frag_bytes,
            "model_bytes": model_bytes,
            "floor_bytes_per_sim_s": 2 * delivered * frag_bytes + 2 * aggregations * model_bytes,
            "replaced": float(jax.device_get(state.counters.replaced.sum())),
            "dropped": float(jax.device_get(state.counters.dropped.sum())),
            **({"rounds": rounds, "ratio_to_floor_rounds_median": float(np.median(
                [r["ratio_to_floor"] for r in rounds]))} if rounds else {})}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim-s", type=float, default=6.0, help="simulated seconds timed")
    ap.add_argument("--rounds", type=int, default=20, help="D-PSGD rounds timed")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    bw = copy_bandwidth()
    rows = {}

    paper = presets.get_preset("movielens-paper").replace(data_dir="", eval_every_s=1.0,
                                                          duration_s=1.0 + args.sim_s)
    intervals = int(round(args.sim_s))
    local = paper.replace(algorithm="local")
    # the paper's setting once more, interval by interval, each beside its own bandwidth
    rows["movielens-paper divshare, round by round"] = steady_state(paper, intervals,
                                                                    bandwidth_rounds=True)
    for name, cfg, options in (
            ("movielens-paper divshare", paper, None),      # each beside its XLA-defaults twin
            ("movielens-paper divshare, XLA's default CPU options", paper, {}),
            ("movielens-paper local (no exchange)", local, None),
            ("movielens-paper local, XLA's default CPU options", local, {})):
        r = steady_state(cfg, intervals, options)
        r["compiler_options"] = compiler_options() if options is None else options
        r["floor_wall_per_sim_s"] = r["floor_bytes_per_sim_s"] / bw
        r["ratio_to_floor"] = r["wall_per_sim_s"] / r["floor_wall_per_sim_s"]
        rows[name] = r

    # decentralizepy's D-PSGD MovieLens config: 16 nodes, 3-regular, 10 steps of batch 16
    dp = presets.get_preset("movielens-paper").replace(
        data_dir="", algorithm="dpsgd", n_nodes=16, n_stragglers=0, topology="regular:3",
        local_steps=10, batch_size=16, compute_s=0.1, tick_s=0.1, fanout=3)
    probe = make_engine(dp.replace(duration_s=1.0, eval_every_s=1.0))
    c = int(np.asarray(probe.init(jax.random.key(0), default_hparams(probe.cfg)).next_end)[0])
    round_s = c * dp.tick_s
    dp = dp.replace(eval_every_s=round_s * args.rounds, duration_s=round_s * args.rounds * 2)
    r = steady_state(dp, 1)
    model_bytes = r["model_bytes"]
    r["wall_per_round_s"] = r["wall_per_sim_s"] * round_s
    r["floor_bytes_per_round"] = dp.n_nodes * (3 + 1 + 1) * model_bytes
    r["floor_wall_per_round_s"] = r["floor_bytes_per_round"] / bw
    r["ratio_to_floor"] = r["wall_per_round_s"] / r["floor_wall_per_round_s"]
    r["decentralizepy_s_per_round"] = 0.109  # measured by the author, 16 processes
    rows["decentralizepy d-psgd (16 nodes, 3-regular)"] = r

    commit = git_commit()
    out = {"date": str(date.today()), "device": jax.devices()[0].device_kind,
           "platform": platform.platform(), "jax": jax.__version__, "commit": commit,
           "copy_bandwidth_GBps": bw / 1e9, "rows": rows}
    print(f"copy bandwidth: {bw / 1e9:.2f} GB/s (read + write)")
    print("| setting | wall s per sim s | sim s per wall s | floor wall s per sim s | "
          "ratio to floor | delivered frags / sim s | aggregations / sim s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if "floor_wall_per_sim_s" in r:
            print(f"| {name} | {r['wall_per_sim_s']:.3f} | {r['sim_per_wall']:.2f} | "
                  f"{r['floor_wall_per_sim_s']:.4f} | {r['ratio_to_floor']:.2f} | "
                  f"{r['delivered_per_sim_s']:.0f} | {r['aggregations_per_sim_s']:.0f} |")
    rr = rows["movielens-paper divshare, round by round"]
    print("movielens-paper divshare, each interval after its own bandwidth measurement: ratios "
          f"{[round(float(x['ratio_to_floor']), 2) for x in rr['rounds']]} (copy GB/s "
          f"{[round(float(x['copy_GBps']), 2) for x in rr['rounds']]}); median "
          f"{rr['ratio_to_floor_rounds_median']:.2f}")
    d = rows["decentralizepy d-psgd (16 nodes, 3-regular)"]
    print(f"D-PSGD, decentralizepy config: {d['wall_per_round_s'] * 1e3:.1f} ms per round, floor "
          f"{d['floor_wall_per_round_s'] * 1e3:.1f} ms (ratio {d['ratio_to_floor']:.2f}); "
          f"decentralizepy 109 ms")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"exchange_floor-{jax.default_backend()}-{date.today()}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
