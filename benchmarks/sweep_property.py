"""A sweep is its single runs (issue 30): random small grids, every algorithm.

Each draw picks an algorithm of `divjax.algorithms.ALGORITHMS`, static features of the base
config (download limits, compute jitter, churn, message loss, a trace file written by
scripts/make_trace.py), and a grid over the fields a sweep vmaps (compute_s, fast_mbps,
straggler_mbps, latency_ms, lr, n_stragglers), sometimes with a static field as a second,
looped axis. It runs the grid with `divjax.frontends.sweep.sweep` (vmapped, or one point per call) and
every point alone, built for its own HParams (`make_run(cfg_point)`), with the same key:
the counters (messages sent, delivered, dropped, replaced, lost; bytes; iterations; errors)
must be equal, the other metrics equal to float rounding (a vmapped program may sum in
another order; the grid's iteration_chunk may differ), or the sweep must refuse the grid
with a ConfigError naming a field. tests/test_sweep_property.py runs two draws of this in
the suite; this script runs more and writes the table (a draw that fails otherwise is
recorded as FAILED with its error, and the draws go on):

    python benchmarks/sweep_property.py --draws 12
    (XLA_FLAGS="--xla_backend_optimization_level=0" compiles 2-3x faster, as the suite does;
    the comparison is within one setting)
    -> benchmarks/results/sweep_property-<platform>-<date>.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COUNTERS = ("msgs_sent", "msgs_delivered", "msgs_dropped", "msgs_replaced", "msgs_lost",
            "bytes_sent", "iterations_mean", "errors", "time_s")
SWEPT = {   # vmapped grid fields: two of these values each
    "compute_s": (0.03, 0.05, 0.07, 0.1, 0.13),
    "fast_mbps": (0.05, 0.2, 1.0, 5.0),
    "straggler_mbps": (0.01, 0.03, 0.1),
    "latency_ms": (0.0, 5.0, 20.0, 45.0),
    "lr": (0.01, 0.05, 0.2),
    "n_stragglers": (0, 1, 2),
}
FEATURES = {   # static features of the base config: the changes that turn each on
    "download_mbps": lambda r, _: {"download_mbps": float(r.choice([0.2, 0.5, 2.0]))},
    "compute_jitter": lambda r, _: {"compute_jitter": float(r.choice([0.2, 0.4]))},
    "churn": lambda r, _: {"churn_rate": float(r.choice([0.1, 0.25])), "churn_mean_s": 0.1},
    "loss_rate": lambda r, _: {"loss_rate": float(r.choice([0.1, 0.3]))},
    "trace_file": lambda r, trace: {"trace_file": trace(r)},
}


def base_config(algorithm: str):
    """Tiny n, the synthetic task, 60 ticks in two evaluation intervals."""
    from divjax.config import SimConfig

    return SimConfig(algorithm=algorithm, n_nodes=4, n_fragments=2, fanout=2, local_steps=1,
                     batch_size=4, tick_s=0.01, duration_s=0.6, eval_every_s=0.3,
                     compute_s=0.1, n_stragglers=1, straggler_mbps=(0.1,), fast_mbps=1.0,
                     latency_ms=2.0, lr=0.05, same_init=False)


def trace_writer(folder: Path):
    """trace(rng) -> the path of a new tiny trace for 4 nodes (scripts/make_trace.py)."""
    spec = importlib.util.spec_from_file_location("make_trace", ROOT / "scripts" /
                                                  "make_trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    count = [0]

    def trace(rng) -> str:
        count[0] += 1
        path = Path(folder) / f"trace{count[0]}.csv"
        path.write_text(mod.make_trace(
            n=4, duration=0.6, step=0.2, offline=float(rng.choice([0.0, 0.35])),
            compute=(0.05, 0.1, 0.13), fast_mbps=1.0, slow_mbps=0.1, stragglers=1,
            seed=int(rng.integers(1000))))
        return str(path)

    return trace


def draw_case(rng: np.random.Generator, trace, algorithms: list[str],
              max_points: int = 4) -> dict:
    """One random case: {"cfg": base config with its features, "grid": field -> values,
    "features": names, "chunk_size": None (vmapped) or 1 (one point per call)}. A feature
    the algorithm refuses (config_checks) is left out."""
    from divjax.config import ConfigError

    cfg = base_config(str(rng.choice(algorithms)))
    features = []
    for name in rng.permutation(sorted(FEATURES)):
        if rng.random() < 0.4:
            try:
                cfg = cfg.replace(**FEATURES[name](rng, trace))
                features.append(str(name))
            except ConfigError:
                pass
    fields = [str(f) for f in rng.permutation(sorted(SWEPT))]
    grid = {fields[0]: _two(rng, SWEPT[fields[0]])}
    if max_points >= 4 and rng.random() < 0.5:
        grid[fields[1]] = _two(rng, SWEPT[fields[1]])
    if max_points >= 4 and len(grid) == 1 and rng.random() < 0.5:
        static = str(rng.choice(["download_mbps", "loss_rate", "compute_jitter"]))
        off = {"download_mbps": 0.0, "loss_rate": 0.0, "compute_jitter": 0.0}[static]
        on = FEATURES[static](rng, trace)[static]
        try:
            cfg.replace(**{static: on})
            grid[static] = [off, on]
        except ConfigError:
            pass
    return {"cfg": cfg, "grid": grid, "features": features,
            "chunk_size": None if rng.random() < 0.5 else 1}


def _two(rng, values) -> list:
    return [values[i] for i in sorted(rng.choice(len(values), 2, replace=False))]


def single_metrics(cfg, key) -> dict:
    """The point run alone, built for its own HParams (divjax.jit: the CLI's bits)."""
    import jax

    import divjax
    from divjax.config import default_hparams

    _, m = divjax.jit(divjax.make_run(cfg))(key, default_hparams(cfg))
    return {k: np.asarray(v) for k, v in jax.device_get(m).items() if k != "node"}


def check_case(case: dict, rtol: float = 1e-4, atol: float = 1e-6,
               points: int | None = None) -> dict:
    """Run the case's sweep and every point alone (the first `points` only, if given: each
    is one more compilation); raise AssertionError where a counter differs or a metric
    differs by more than float rounding. Returns a summary row (outcome "equal" or
    "refused: <message>")."""
    import jax

    from divjax.config import ConfigError
    from divjax.frontends.sweep import config_values, sweep

    cfg, grid = case["cfg"], case["grid"]
    t0 = time.perf_counter()
    row = {"algorithm": cfg.algorithm, "features": case["features"],
           "grid": {k: list(vs) for k, vs in grid.items()},
           "vmapped": case["chunk_size"] is None}
    try:
        res = sweep(cfg, grid, seeds=1, chunk_size=case["chunk_size"])
    except ConfigError as e:
        fields = {f.name for f in dataclasses.fields(type(cfg))}
        assert any(f in str(e) for f in fields), f"refused without naming a field: {e}"
        return {**row, "points": 0, "outcome": f"refused: {e}",
                "wall_s": time.perf_counter() - t0}
    key = jax.random.split(jax.random.key(0), 1)[0]
    worst = 0.0
    for c in res.configs[:points]:
        g, h = c["group"], sum(1 for d in res.configs[:c["config"]] if d["group"] == c["group"])
        static = res.summary["groups"][g]["static"] or {}
        point = {k: c[k] for k in grid if k not in static}
        cfg_g = cfg.replace(**static)
        one = single_metrics(cfg_g.replace(**config_values(cfg_g, point)), key)
        got = {k: np.asarray(v)[h, 0] for k, v in res.metrics[g].items()}
        for name, want in one.items():
            where = f"{cfg.algorithm} {case['features']} {static} {point}: {name}"
            if name in COUNTERS:
                np.testing.assert_array_equal(got[name], want, err_msg=where)
            else:
                np.testing.assert_allclose(got[name], want, rtol=rtol, atol=atol,
                                           equal_nan=True, err_msg=where)
                fin = np.isfinite(want) & np.isfinite(got[name])
                if fin.any():
                    rel = np.abs(got[name] - want)[fin] / np.maximum(np.abs(want[fin]), 1e-30)
                    worst = max(worst, float(np.max(rel)))
    return {**row, "points": len(res.configs[:points]), "outcome": "equal",
            "max_rel_diff": worst, "wall_s": time.perf_counter() - t0}


def run_draws(draws: int, seed: int, algorithms: list[str] | None = None,
              max_points: int = 4, folder: Path | None = None) -> list[dict]:
    """`draws` cases from one seeded generator, each checked; the rows (a failure raises)."""
    from divjax.algorithms import ALGORITHMS

    algorithms = sorted(ALGORITHMS) if algorithms is None else algorithms
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        trace = trace_writer(folder or Path(tmp))
        rows = []
        for i in range(draws):
            case = draw_case(rng, trace, algorithms, max_points)
            t0 = time.perf_counter()
            try:
                rows.append({"draw": i, **check_case(case)})
            except Exception as e:   # noqa: BLE001 - a finding: recorded, the draws go on
                rows.append({"draw": i, "algorithm": case["cfg"].algorithm,
                             "features": case["features"],
                             "grid": {k: list(v) for k, v in case["grid"].items()},
                             "vmapped": case["chunk_size"] is None, "points": 0,
                             "outcome": f"FAILED: {type(e).__name__}: {e}",
                             "wall_s": time.perf_counter() - t0})
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    grid = " ".join(f"{k}={v}" for k, v in r["grid"].items())
    return (f"{r['draw']:>3} {r['algorithm']:<9} {','.join(r['features']) or '-':<40} "
            f"{grid:<46} {r['points']:>2} {'vmap' if r['vmapped'] else 'one':<4} "
            f"{r['outcome'][:40]:<12} {r.get('max_rel_diff', 0):.1e} {r['wall_s']:6.1f}s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    import jax
    from bench_common import run_meta, write_result

    print(f"{'#':>3} {'algorithm':<9} {'features':<40} {'grid':<46} {'P':>2} {'mode':<4} "
          f"{'outcome':<12} {'max rel':>7} {'wall':>7}")
    t0 = time.perf_counter()
    rows = run_draws(a.draws, a.seed)
    meta = run_meta("sweep_property.py", argv if argv is not None else sys.argv[1:],
                    draws=a.draws, seed=a.seed, wall_s=time.perf_counter() - t0,
                    xla_flags=os.environ.get("XLA_FLAGS", ""))
    equal = sum(r["outcome"] == "equal" for r in rows)
    failed = [r for r in rows if r["outcome"].startswith("FAILED")]
    print(f"{equal} of {len(rows)} draws equal to their single runs, "
          f"{len(rows) - equal - len(failed)} refused naming a field, {len(failed)} failed")
    for r in failed:
        print(f"draw {r['draw']}: {r['outcome']}")
    out = a.out or (ROOT / "benchmarks" / "results" /
                    f"sweep_property-{jax.devices()[0].platform}-{meta['date']}.json")
    write_result(out, {"meta": meta, "rows": rows,
                       "summary": {"draws": len(rows), "equal": equal, "failed": len(failed),
                                   "refused": len(rows) - equal - len(failed)}})


if __name__ == "__main__":
    main()
