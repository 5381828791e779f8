"""Shared pieces of the convergence-theory scripts: setup, sweeps, delay bound, fits, output.

Every script builds a least-squares task with a known optimum (divjax.tasks.base.make_synthetic_task),
runs DivShare on the simulated clock for a grid of HParams x seeds, and reduces the metrics to
the quantities that convergence bounds of asynchronous decentralized SGD are made of:
the optimality gap f(x_bar) - f* and the squared gradient norm ||grad f(x_bar)||^2 of the average
model, the consensus distance (1/n) sum_i ||x_i - x_bar||^2, and the delay bound tau (in
iterations of the receiver) that the network produces.

Reference rate (standard, not the DivShare paper's theorem, whose constants are not reproduced):
for asynchronous decentralized SGD with constant step gamma, L-smooth f, gradient variance
sigma^2, heterogeneity zeta^2, spectral-gap-like mixing constant p and delay bound tau, analyses
of this class (Lian et al. 2018 AD-PSGD; Koloskova et al. 2020; Stich & Karimireddy 2020 for
delays) give, up to constants,

    (1/T) sum_t E||grad f(x_bar_t)||^2  <~  F0/(gamma T) + L gamma sigma^2 / n
                                             + L^2 gamma^2 (1/p + tau) (sigma^2 + zeta^2/p),

which, with gamma tuned for the horizon T, is O(sqrt(L F0 sigma^2 / (n T))) + O(tau L F0 / T)
+ higher-order terms: the "O(1/sqrt(nT)) + O(tau/T)" rate the scripts compare against.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from divjax import SimConfig, Task, check_state, default_hparams, make_run
from divjax.config import HParams
from divjax.network.links import latency_bounds_units, link_table
from divjax.engine.sizing import model_layout
from divjax.tasks.base import make_synthetic_task

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# ----------------------------------------------------------------------------- setup


def base_config(tiny: bool, **changes) -> SimConfig:
    """The theory setting: 1 local step per iteration, ~1 s iterations on a 0.1 s clock.

    tiny: n=4, a few simulated seconds (for tests).
    """
    if tiny:
        # ring, delay and capacity fixed so that every tiny script shares one compiled program
        cfg = SimConfig(n_nodes=4, n_fragments=2, fanout=2, local_steps=1, batch_size=8,
                        tick_s=0.25, compute_s=1.0, duration_s=12.0, eval_every_s=3.0,
                        delay_ticks=16, ring_ticks=7)
        cfg = cfg.replace(**changes)
        return cfg.replace(train_capacity=cfg.n_nodes)
    else:
        cfg = SimConfig(n_nodes=16, n_fragments=4, fanout=3, local_steps=1, batch_size=8,
                        tick_s=0.1, compute_s=1.0, duration_s=200.0, eval_every_s=2.0)
    return cfg.replace(**changes)


@functools.lru_cache(maxsize=16)
def theory_task(cfg: SimConfig, tiny: bool, heterogeneity: float = 1.0,
                noise: float = 0.5) -> Task:
    """The synthetic least-squares task plus `grad_sq` = ||grad f(x)||^2 of the global objective.

    `gap` is f(x) - f* with f the global training objective, so its gradient is grad f(x).
    Cached, so that scripts run in one process (the tests) share compiled programs.
    """
    dim, outputs = (8, 2) if tiny else (16, 4)
    task = make_synthetic_task(cfg, dim=dim, outputs=outputs, samples_per_node=64,
                               heterogeneity=heterogeneity, noise=noise)
    base_eval = task.evaluate

    def evaluate(params, node):
        out = base_eval(params, node)
        g = jax.grad(lambda p: base_eval(p, node)["gap"])(params)
        out["grad_sq"] = sum(jnp.sum(x**2) for x in jax.tree.leaves(g))
        return out

    return task._replace(evaluate=evaluate, metric_names=task.metric_names + ("grad_sq",))


def compute_spread(cfg: SimConfig, jitter: float) -> np.ndarray:
    """(n,) compute seconds spread evenly in compute_s * [1 - jitter/2, 1 + jitter/2].

    Deterministic (no RNG): unequal compute times make the nodes' iterations asynchronous.
    Rounded to whole ticks (the clock counts ticks; the engine refuses compute times that are
    not whole ticks to within 1%), so the spread is what the run simulates.
    """
    spread = cfg.compute_s * (1.0 + jitter * (np.linspace(0.0, 1.0, cfg.n_nodes) - 0.5))
    return np.maximum(1, np.round(spread / cfg.tick_s)) * cfg.tick_s


def base_hparams(cfg: SimConfig, task: Task, lr: float, latency_s: float = 0.0,
                 jitter: float = 0.4, slow_nodes: int = 0,
                 slow_copies: float = 1.5) -> HParams:
    """HParams of the theory setting.

    slow_nodes: the last `slow_nodes` nodes get a link that sends only `slow_copies` full-model
    copies per (nominal) iteration, i.e. a fraction slow_copies / fanout of their messages.
    """
    hp = default_hparams(cfg)
    n = cfg.n_nodes
    model_bytes = float(np.sum(model_layout(cfg, task).fragment_bytes))
    bps = np.asarray(hp.upload_bps, np.float64).copy()
    if slow_nodes:
        bps[n - slow_nodes:] = slow_copies * model_bytes / cfg.compute_s
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return hp.replace(lr=f32(lr), compute_s=f32(compute_spread(cfg, jitter)),
                      upload_bps=f32(bps), latency_s=f32(np.full(n, latency_s)))


def take(grid: HParams, h: int) -> HParams:
    """Row h of a grid built by `product`."""
    return jax.tree.map(lambda x: x[h], grid)


# ----------------------------------------------------------------------------- running

_COMPILED: dict = {}  # (resolved cfg, id(task), vmap) -> (task, jitted run)


def run_grid(cfg: SimConfig, task: Task, grid: HParams, seeds: int, base_seed: int = 0,
             vmap: bool = True, node_metrics: bool = True) -> dict:
    """Run every row of `grid` (leading axis H) with `seeds` seeds.

    vmap=True: one jitted program jax.vmap(jax.vmap(run)) over (H, S). vmap=False: one jitted
    single run called in a Python loop (one compile as well; faster to compile on CPU, used by
    --tiny; it holds one run's state and metrics at a time, so it is the one for large n).
    Both return the same numbers.
    Returns metrics as numpy arrays with leading axes (H, S, C) ("node" entries: (H, S, C, n),
    dropped with node_metrics=False: C n floats per metric and run, 0.4 GB at n = 262,144; the
    compiled program is the same, so the other metrics keep their bits).
    """
    run = make_run(cfg, task=task, hp=grid)  # the ring is sized for the whole grid
    keys = jax.random.split(jax.random.key(base_seed), seeds)
    H = int(np.shape(grid.lr)[0])
    cache_key = (run.engine.cfg, id(task), vmap)
    if cache_key not in _COMPILED:
        fn = jax.vmap(jax.vmap(run, (0, None)), (None, 0)) if vmap else run
        _COMPILED[cache_key] = (task, jax.jit(fn))  # holding task keeps id(task) unique
    fn = _COMPILED[cache_key][1]
    if vmap:
        state, m = fn(keys, grid)
        check_state(state, run.engine.cfg)
        return jax.tree.map(np.asarray, jax.device_get(_keep(m, node_metrics)))
    one = fn
    rows = []
    for h in range(H):
        per_seed = []
        for s in range(seeds):
            state, m = one(keys[s], take(grid, h))
            check_state(state, run.engine.cfg)
            per_seed.append(jax.device_get(_keep(m, node_metrics)))
            del state, m
        rows.append(jax.tree.map(lambda *x: np.stack(x), *per_seed))
    return jax.tree.map(lambda *x: np.stack(x), *rows)


def _keep(m: dict, node_metrics: bool) -> dict:
    """The metrics dict without its per-node entries unless node_metrics."""
    return m if node_metrics else {k: v for k, v in m.items() if k != "node"}


def release_caches() -> None:
    """Forget the cached tasks, compiled programs and constants (and JAX's caches).

    The caches let scripts run in one process share programs; a sweep over large n calls this
    between node counts, so one n's task data and executable are freed before the next is built.
    """
    theory_task.cache_clear()
    _COMPILED.clear()
    _CONSTANTS.clear()
    jax.clear_caches()


# ----------------------------------------------------------------------------- measured constants


def problem_constants(cfg: SimConfig, task: Task, batches: int = 256) -> dict:
    """L, mu (Hessian of f), F0 = f(x0) - f*, sigma^2 and zeta^2 at the optimum x*.

    sigma^2: mean over nodes of the variance of one mini-batch gradient of node i at x*;
    zeta^2: mean over nodes of ||grad f_i(x*)||^2 (f_i estimated from `batches` mini-batches).
    Cached per (cfg, task).
    """
    key = (cfg, id(task), batches)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (task, _problem_constants(cfg, task, batches))
    return dict(_CONSTANTS[key][1])


_CONSTANTS: dict = {}


def _problem_constants(cfg: SimConfig, task: Task, batches: int) -> dict:
    x0, unravel = ravel_pytree(task.init(jax.random.key(0)))

    @jax.jit
    def solve(x0):
        gap = lambda x: task.evaluate(unravel(x), jnp.int32(-1))["gap"]  # noqa: E731
        hess = jax.hessian(gap)(x0)
        x_star = x0 - jnp.linalg.solve(hess, jax.grad(gap)(x0))  # exact: f is quadratic
        return hess, x_star, gap(x0), gap(x_star)

    hess, x_star, f0, f_star = solve(x0)
    eig = np.linalg.eigvalsh(np.asarray(hess, np.float64))

    def node_grads(node):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(1), node), batches)
        g = jax.vmap(lambda k: jax.grad(lambda x: task.loss(unravel(x), task.sample_batch(
            k, node)))(x_star))(keys)
        mean = jnp.mean(g, 0)
        return jnp.sum(mean**2), jnp.mean(jnp.sum((g - mean) ** 2, 1))

    zeta, sigma = per_node_chunks(node_grads, cfg.n_nodes)
    return {"L": float(eig[-1]), "mu": float(eig[0]), "F0": float(f0),
            "sigma2": float(jnp.mean(sigma)), "zeta2": float(jnp.mean(zeta)),
            "D": int(x0.size), "gap_at_xstar": float(f_star)}


NODE_CHUNK = 1024  # nodes whose gradient statistics are computed at once


def per_node_chunks(fn, n: int, chunk: int = NODE_CHUNK) -> tuple:
    """jax.vmap(fn)(arange(n)) for fn(node) -> tuple of scalars, `chunk` nodes at a time.

    The vmapped gradients of 256 mini-batches are (nodes, 256, D) floats: 18 GB for all
    262,144 nodes at once, 71 MB per 1,024. For n <= chunk it is the one call it always was
    (same program, same bits); the last chunk is padded with node n - 1 and cut.
    """
    size = min(chunk, n)
    f = jax.jit(jax.vmap(fn))
    if size == n:
        return f(jnp.arange(n))
    parts = []
    for start in range(0, n, size):
        nodes = np.minimum(np.arange(start, start + size), n - 1)
        parts.append([np.asarray(v)[:n - start] for v in f(jnp.asarray(nodes, jnp.int32))])
    return tuple(jnp.asarray(np.concatenate(v)) for v in zip(*parts))


def delay_bound(cfg: SimConfig, task: Task, hp: HParams) -> dict:
    """The delay bound tau in receiver iterations, and the fraction of messages that get sent.

    A message queued at tick t by sender i (at one of its iteration ends) that arrives at tick
    a is averaged in at receiver r's aggregation ceil(a / c_r); its delay in iterations is the
    number of r's aggregations after t up to that one, ceil(a / c_r) - floor(t / c_r) >= 1.
    tau_max is the largest delay over all senders, receivers and iteration ends of the run, for
    the last message a sender gets out before its queue is replaced (the worst case);
    tau_mean averages that worst case over senders, receivers and iteration ends.
    """
    layout = model_layout(cfg, task)
    table = jax.tree.map(np.asarray, link_table(cfg, hp, layout.fragment_bytes))
    c = table.compute_ticks.astype(np.int64)
    lat = np.asarray(latency_bounds_units(table)[1], np.int64)  # each sender's largest latency
    R, M = cfg.link_resolution, cfg.messages_per_iteration
    per_msg = np.mean(table.msg_units, axis=1)                       # (n,) sub-ticks
    fits = np.minimum(M, np.floor(c * R / per_msg))                  # messages sent / iteration
    frac_sent = float(np.mean(fits / max(M, 1)))
    d = np.ceil((fits * per_msg + lat) / R).astype(np.int64)         # enqueue -> arrival, ticks
    tau_max, total, count = _span_stats(c, d, cfg.num_ticks)
    return {"tau_max": tau_max, "tau_mean": float(np.float64(total) / count),
            "frac_sent": frac_sent}


def _span_stats(c: np.ndarray, d: np.ndarray, T: int) -> tuple[int, int, int]:
    """(max, sum, count) of ceil((t + d_i) / c_r) - floor(t / c_r) over senders i, receivers
    r != i and sender i's iteration ends t = c_i, 2 c_i, ... <= T.

    The span depends on the sender only through (c_i, d_i) and on the receiver only through
    c_r, so senders and receivers are grouped by those values: O(groups x ends) instead of
    O(n^2 x ends). Integer sums, so the mean is exactly what averaging every span gave.
    """
    cr, per_c = np.unique(c, return_counts=True)                      # receivers by c_r
    pairs, senders = np.unique(np.stack([c, d], 1), axis=0, return_counts=True)
    tau_max, total, count = 0, 0, 0
    for (ci, di), m in zip(pairs, senders):
        t = np.arange(ci, T + 1, ci)[:, None]                         # the sender's ends
        span = -(-(t + di) // cr[None, :]) - t // cr[None, :]         # (ends, receiver groups)
        others = per_c - (cr == ci)                                   # receivers r != i
        if t.size and others.sum():
            tau_max = max(tau_max, int(span[:, others > 0].max()))
            total += int(m) * int((span * others).sum())
            count += int(m) * t.size * int(others.sum())
    return tau_max, total, count


# ----------------------------------------------------------------------------- reductions


def tail_mean(y: np.ndarray, frac: float = 0.25) -> np.ndarray:
    """Mean of the last `frac` of the last axis (the plateau of a constant-step run)."""
    k = max(1, int(round(y.shape[-1] * frac)))
    return np.mean(y[..., -k:], axis=-1)


def plateau_reached(y: np.ndarray, tol: float = 0.25) -> bool:
    """True if the mean of the third quarter of a 1-D curve is within `tol` of the last quarter's.

    A constant-lr run whose transient has not died out by then has no plateau to compare.
    """
    q = max(1, y.shape[-1] // 4)
    third, last = float(np.mean(y[-2 * q:-q])), float(np.mean(y[-q:]))
    return abs(third - last) <= tol * abs(last)


def running_mean(y: np.ndarray) -> np.ndarray:
    """(1/t) sum_{s<=t} y_s along the last axis (the left side of non-convex bounds)."""
    return np.cumsum(y, axis=-1) / np.arange(1, y.shape[-1] + 1)


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (points with x, y > 0)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def first_below(iters: np.ndarray, y: np.ndarray, eps: float) -> float:
    """First iteration count at which y <= eps (nan if never), along the last axis (1-D)."""
    hit = np.flatnonzero(y <= eps)
    return float(iters[hit[0]]) if hit.size else float("nan")


# ----------------------------------------------------------------------------- CLI and output


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=name, description=doc.strip().splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS / name,
                   help=f"output directory (default scripts/theory/results/{name}/)")
    p.add_argument("--tiny", action="store_true", help="n=4, a few seconds (tests)")
    p.add_argument("--seeds", type=int, default=0, help="seeds per point (0 = script default)")
    p.add_argument("--base-seed", type=int, default=0)
    p.add_argument("--loop", action="store_true",
                   help="loop over the grid instead of vmapping it (default with --tiny)")
    return p


def parse_args(name: str, doc: str, argv=None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The scripts' common flags (or `parser`'s, built on `parser(name, doc)`), with the default
    seed count filled in (2 tiny, 4 otherwise)."""
    args = (parser or globals()["parser"](name, doc)).parse_args(argv)
    args.seeds = args.seeds or (2 if args.tiny else 4)
    return args


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.3g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.2e}"
    return str(v)


def write_outputs(out: Path, name: str, columns: list[str], rows: list[dict], meta: dict,
                  fig, notes: list[str] = ()) -> dict:
    """Write `<name>.md`, `<name>.json` and `<name>.png` to `out`; return the paths.

    NaN entries of `rows` (not applicable / never reached) become None, in place, so the JSON
    is strict.
    """
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {name}", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    if notes:
        lines += [""] + [f"- {x}" for x in notes]
    lines += ["", "Setting: `" + json.dumps(meta, default=str) + "`", ""]
    paths = {"md": out / f"{name}.md", "json": out / f"{name}.json", "png": out / f"{name}.png"}
    paths["md"].write_text("\n".join(lines))
    paths["json"].write_text(json.dumps({"columns": columns, "rows": rows, "notes": list(notes),
                                         "meta": meta}, indent=1, default=str))
    fig.savefig(paths["png"], dpi=110, bbox_inches="tight")
    return paths


def meta_of(cfg: SimConfig, args, **extra) -> dict:
    return {"n_nodes": cfg.n_nodes, "n_fragments": cfg.n_fragments, "fanout": cfg.fanout,
            "local_steps": cfg.local_steps, "batch_size": cfg.batch_size, "tick_s": cfg.tick_s,
            "compute_s": cfg.compute_s, "duration_s": cfg.duration_s,
            "eval_every_s": cfg.eval_every_s, "seeds": args.seeds, "base_seed": args.base_seed,
            "tiny": args.tiny, "jax": jax.__version__, "backend": jax.default_backend(),
            "date": time.strftime("%Y-%m-%d"), **extra}


def matplotlib_pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(out, name, columns, rows, meta, fig, notes) -> dict:
    """Write the table, JSON and plot of a script, print the table, and return them."""
    import matplotlib.pyplot as plt

    paths = write_outputs(out, name, columns, rows, meta, fig, notes)
    plt.close(fig)
    print(paths["md"].read_text())
    return {"rows": rows, "paths": paths, "meta": meta}
