"""Host-side sizing and checks of a run, before anything is allocated or compiled.

`resolve` checks the network of an HParams, sizes the delay rings (`network.ring_slots_needed`
and the algorithm's `longest_delay`), the training capacity and the algorithm's own fields, and
refuses a state that does not fit the device (`memory_model`, derived from the engine's own
state under `jax.eval_shape`), with the fixes that apply (`memory_advice`). `model_layout` is the
fixed fragment partition of a task's model.

`check_sizes` is the one rule for what a built run may be called with (`SIZED_FIELDS` against
the HParams of a call or of every grid point, with `resolve`'s own sizing); `resolve_points`
sizes a sweep's group for all of its points; `check_call_inputs` refuses a call's key and
HParams shapes at trace time, `optimizer_ok` and `slots_fit` are the rules `sim.init_errors`
applies inside jit.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from divjax.network import links as network
from divjax.algorithms import Algorithm
from divjax.network.compute_schedule import (  # noqa: F401 (auto_iteration_chunk: API)
    auto_iteration_chunk,
    has_table,
    longest_ticks,
    shortest_ticks,
    slots_needed,
)
from divjax.config import ConfigError, HParams, SimConfig
from divjax.config_checks import check_link_clock
from divjax.engine.flat import FragmentLayout, make_layout
from divjax.engine.memory import (available_memory_bytes, compiled_memory, memory_model,
                                  task_data_bytes)
from divjax.tasks.base import Task


def model_layout(cfg: SimConfig, task: Task) -> FragmentLayout:
    """The fixed fragment partition of the task's model (shapes only; no training)."""
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return make_layout(template, cfg.n_fragments, cfg.fragment_seed)


def memory_estimate(cfg: SimConfig, layout: FragmentLayout, ring_slots: int,
                    algo: Algorithm | None = None) -> dict:
    """Bytes the run's state needs, by part, and their "total" (see divjax.engine.memory)."""
    m = memory_model(cfg, layout, ring_slots=ring_slots, available=1, algo=algo)
    return {**{k: v for k, v in m["parts"].items() if v}, "total": m["total"]}


def check_memory_early(cfg: SimConfig, task: Task) -> None:
    """Refuse, from shapes and the task's data, a run that cannot fit (before allocating)."""
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    leaves = jax.tree.leaves(shapes)
    D = sum(int(np.prod(x.shape)) for x in leaves)
    if cfg.n_fragments > D:
        raise ConfigError(
            f"n_fragments={cfg.n_fragments} is larger than the model's parameter count D={D}: "
            f"use --n-fragments between 1 and {D}")
    per_model = 4 * (D + len(leaves) * cfg.n_fragments)
    # params, at least one ring slot and the task's data (XLA's figure adds the rest later)
    lower_bound = cfg.n_nodes * per_model * 2 + task_data_bytes(task)
    have = available_memory_bytes()
    if lower_bound > 0.8 * have:
        raise ConfigError(
            f"n_nodes={cfg.n_nodes} models of D={D} parameters need at least "
            f"{lower_bound / 2**30:.1f} GiB (parameters, one ring slot, the task's data) but "
            f"the device has {have / 2**30:.1f} GiB: lower --n-nodes (at most "
            f"{int(0.8 * have * cfg.n_nodes // lower_bound)}) or use a smaller model")


def resolve(cfg: SimConfig, hp: HParams, layout: FragmentLayout,
            check_memory: bool = True, algo: Algorithm | None = None) -> SimConfig:
    """Check the network in `hp` and size the ring and the training capacity for it.

    Returns cfg with `ring_ticks` and `train_capacity` set (fields left at 0 are filled with the
    smallest values that fit; explicit values are checked). Raises ConfigError with the fix.
    `hp` may carry sweep axes (sized for all of its points at once).
    """
    network.check_network(cfg, hp)
    check_link_clock(cfg, hp, layout.fragment_bytes)   # names the flags, before compiling
    return resolve_table(cfg, host_link_table(cfg, hp, layout.fragment_bytes), layout,
                         check_memory, algo)


def resolve_table(cfg: SimConfig, table: network.LinkTable, layout: FragmentLayout,
                  check_memory: bool = True, algo: Algorithm | None = None) -> SimConfig:
    """`resolve` from the host link table of checked HParams (`host_link_table`)."""
    if algo is not None and algo.adjust_timing is not None:
        table = algo.adjust_timing(cfg, table)
    longest = longest_ticks(cfg, np.asarray(table.compute_ticks))
    if np.max(longest) * cfg.link_resolution >= 2**30:
        raise ConfigError(
            f"compute_s / tick_s * link_resolution is too large for the int32 link clock: "
            f"raise tick_s={cfg.tick_s} or lower link_resolution={cfg.link_resolution}")
    if np.max(table.msg_units) >= 2**30 // max(1, cfg.messages_per_iteration):
        raise ConfigError("a message takes too long on the slowest upload link for the int32 "
                          "link clock: raise the bandwidth (--fast-mbps / --straggler-mbps, "
                          "HParams.upload_bps) or tick_s, or lower link_resolution")
    if algo is not None and algo.longest_delay is not None:
        delay = int(algo.longest_delay(cfg, table))
    else:
        delay = network.longest_delay_ticks(cfg, table)
    if cfg.delay_ticks == 0:
        cfg = cfg.replace(delay_ticks=delay)
    elif cfg.delay_ticks < delay:
        raise ConfigError(f"delay_ticks={cfg.delay_ticks} is below the longest delay {delay} "
                          f"ticks; set --delay-ticks {delay} or 0 (auto)")
    need = network.ring_slots_needed(cfg, table, delay)
    if cfg.ring_ticks == 0:
        cfg = cfg.replace(ring_ticks=need)
    elif cfg.ring_ticks < need:
        raise ConfigError(
            f"ring_ticks={cfg.ring_ticks} cannot hold the longest delay: delivery="
            f"{cfg.delivery!r} needs at least {need} slots (longest delay "
            f"{delay} ticks); set --ring-ticks {need} or 0 (auto)")
    if algo is not None and algo.resolve_sizes is not None:
        cfg = algo.resolve_sizes(cfg, table)
    from divjax.network.compute_schedule import check_churn_clock  # also on every build
    check_churn_clock(cfg)
    if has_table(cfg):   # the iteration-end table reaches past the run's end
        need = slots_needed(cfg, table.compute_ticks)
        if cfg.iteration_slots == 0:
            cfg = cfg.replace(iteration_slots=need)
        elif cfg.iteration_slots < need:
            raise ConfigError(f"iteration_slots={cfg.iteration_slots} cannot hold the "
                              f"iteration ends of the run: set --iteration-slots {need} or 0")
    worst, mean = network.finishers_per_tick(cfg, table)
    if cfg.iteration_chunk == -1:
        cfg = cfg.replace(iteration_chunk=auto_iteration_chunk(
            cfg.train_capacity or worst, mean))
    if cfg.train_capacity == 0:
        cfg = cfg.replace(train_capacity=worst)
    elif cfg.train_capacity < worst:
        raise ConfigError(
            f"train_capacity={cfg.train_capacity} is too small: {worst} nodes finish an "
            f"iteration at the same tick; set --train-capacity {worst} or 0 (auto)")
    if check_memory:
        est = memory_estimate(cfg, layout, cfg.ring_ticks, algo=algo)
        have = available_memory_bytes()
        if est["total"] > 0.8 * have:
            raise ConfigError(
                f"the state needs about {est['total'] / 2**30:.2f} GiB "
                f"({', '.join(f'{k} {v / 2**30:.2f}' for k, v in est.items() if k != 'total')}"
                f" GiB) but the device has {have / 2**30:.2f} GiB: "
                + "; ".join(memory_advice(cfg, est)))
    return cfg


# ----------------------------------------------------------------------------- one rule for calls
#
# A run is built for the HParams it was sized with (`resolve`): the fields below fix the length
# of its rings, tables and histories. `check_sizes` checks any other HParams against them, on
# the host, before a call runs (`divjax.jit` and `simulate` call it through `run.check` and
# `engine.init.check`; a sweep for every grid point); `sim.init_errors` checks the same inside
# jit, where a traced HParams that does not fit raises an ERR_* flag instead of a wrong result.

# The fields `resolve` sizes (0 = auto); the others are sized for delay_ticks, so it comes first.
SIZED_FIELDS = ("delay_ticks", "ring_ticks", "train_capacity", "iteration_slots",
                "inbox_history", "ping_slots")
PER_NODE_FIELDS = ("compute_s", "upload_bps", "latency_s", "download_bps")
# The optimizer's HParams, with the range the CLI demands of its flag (config_checks): the same
# rule on numpy values (host) and traced ones (`optimizer_ok`, ERR_HPARAMS).
OPTIMIZER_RULES = (
    ("lr", "the learning rate must be a finite number >= 0", lambda v: (v >= 0) & (v < np.inf)),
    ("momentum", "SGD momentum must be in [0, 1)", lambda v: (v >= 0) & (v < 1)),
    ("weight_decay", "weight decay must be a finite number >= 0",
     lambda v: (v >= 0) & (v < np.inf)),
)
# AD-PSGD's bounds: `resolve` sizes them (a sweep: for every point), but a run that outgrows
# them raises ERR_HISTORY / ERR_RING_TOO_SHORT exactly where it happens, inside jit, so a call
# is not refused for a bound it may never reach
BOUND_FIELDS = ("inbox_history", "ping_slots")
BUILD_HINT = ("build the run with these HParams (make_run(cfg, hp=hp)), or size it for all of "
              "them (a sweep does)")


@functools.lru_cache(maxsize=64)
def _table_program(cfg: SimConfig, fragment_bytes: tuple, dtype: str, lead: int, stamp):
    fb = np.asarray(fragment_bytes, dtype)
    fn = lambda h: network.link_table(cfg, h, fb)  # noqa: E731
    for _ in range(lead):
        fn = jax.vmap(fn)
    return jax.jit(fn)


def host_link_table(cfg: SimConfig, hp: HParams, fragment_bytes) -> network.LinkTable:
    """`network.concrete_link_table` (numpy leaves; hp may carry sweep axes), its program
    compiled once per config, layout and number of sweep axes (a trace file: and its version)."""
    fb = np.asarray(fragment_bytes)
    stamp = None
    if cfg.trace_file and os.path.exists(cfg.trace_file):
        st = os.stat(cfg.trace_file)
        stamp = (st.st_mtime_ns, st.st_size)
    fn = _table_program(cfg, tuple(fb.tolist()), str(fb.dtype),
                        max(0, np.ndim(hp.compute_s) - 1), stamp)
    return jax.tree.map(np.asarray, fn(hp))


def check_call_inputs(cfg: SimConfig, key, hp) -> None:
    """ConfigError unless `run(key, hp)` gets one typed key and one HParams point of this run's
    n_nodes (shapes and types only, so it holds under jit and vmap: a vmapped axis is gone)."""
    if not isinstance(hp, HParams):
        raise ConfigError(f"run(key, hp): hp is a {type(hp).__name__}, not an HParams: build "
                          f"it with divjax.default_hparams(cfg)")
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jax.dtypes.prng_key) or np.shape(key) != ():
        raise ConfigError(
            f"run(key, hp): key has dtype {dtype} and shape {np.shape(key)}: pass one typed "
            f"key, jax.random.key(seed) (an old-style jax.random.PRNGKey(seed) converts with "
            f"jax.random.wrap_key_data(k)); vmap the run over several keys")
    n = cfg.n_nodes
    for f in dataclasses.fields(HParams):
        shape, want = np.shape(getattr(hp, f.name)), (n,) if f.name in PER_NODE_FIELDS else ()
        if shape == want:
            continue
        if want and len(shape) == 1:
            raise ConfigError(
                f"run(key, hp): HParams.{f.name} has {shape[0]} entries, the run was built for "
                f"n_nodes={n}: build the HParams with default_hparams(cfg) of the run's config "
                f"(one entry per node)")
        raise ConfigError(f"run(key, hp): HParams.{f.name} has shape {shape}, the run takes "
                          f"{want}: one point per call; vmap the run over a sweep axis")


def check_optimizer(hp: HParams) -> None:
    """ConfigError for an lr, momentum or weight decay the CLI would refuse (any sweep axes)."""
    for name, rule, ok in OPTIMIZER_RULES:
        v = np.asarray(getattr(hp, name), np.float64)
        bad = ~ok(v)
        if bad.any():
            first = v[tuple(np.argwhere(bad)[0])] if v.ndim else v
            raise ConfigError(f"HParams.{name}={float(first)!r} is invalid: {rule} (as "
                              f"--{name.replace('_', '-')}); fix it, e.g. hp.replace({name}=...)")


def optimizer_ok(hp: HParams) -> jax.Array:
    """() bool, traced: `check_optimizer`'s rule inside jit (ERR_HPARAMS when False)."""
    ok = jnp.bool_(True)
    for name, _, rule in OPTIMIZER_RULES:
        ok &= jnp.all(rule(jnp.asarray(getattr(hp, name))))
    return ok


def network_points(cfg: SimConfig, hp: HParams) -> list[HParams]:
    """The distinct networks of `hp` (its per-node fields; leaves may carry sweep axes), each
    as the HParams of one point (optimizer fields 0: they size nothing)."""
    arrs = np.broadcast_arrays(*(np.asarray(getattr(hp, f), np.float32)
                                 for f in PER_NODE_FIELDS))
    rows = np.stack([a.reshape(-1, cfg.n_nodes) for a in arrs], axis=1)     # (P, 4, n)
    unique = {r.tobytes(): r for r in rows}
    zero = jnp.zeros((), jnp.float32)
    return [HParams(lr=zero, momentum=zero, weight_decay=zero,
                    **{f: jnp.asarray(r[i]) for i, f in enumerate(PER_NODE_FIELDS)})
            for r in unique.values()]


def check_sizes(cfg: SimConfig, hp: HParams, layout: FragmentLayout,
                algo: Algorithm | None = None, auto: tuple = SIZED_FIELDS,
                where: str = "these HParams") -> None:
    """The one rule for what a built run may be called with: raise ConfigError (naming the
    field and the fix) unless a run built as `cfg` (resolved) holds `hp` (concrete; one
    point, or a grid's leaves with sweep axes): a valid optimizer and network, and for every
    distinct network what `resolve` would demand: each field in `auto` (sized by `resolve`
    when the run was built) at least what it gives these HParams (for the run's delay_ticks:
    the rings and tables are sized for it), each explicit one accepted by it (as when the
    run was built). AD-PSGD's ping and history bounds (BOUND_FIELDS) are checked inside jit,
    exactly."""
    check_optimizer(hp)
    network.check_network(cfg, hp)
    for point in network_points(cfg, hp):
        table = host_link_table(cfg, point, layout.fragment_bytes)
        try:
            short = _short_fields(cfg, table, layout, algo, auto)
        except ConfigError as e:
            raise ConfigError(f"{where} do not fit the run as built: {e}; or {BUILD_HINT}"
                              ) from None
        if short:
            raise ConfigError(
                f"{where} do not fit the run as built: "
                + ", ".join(f"{f}={have} is too small for them (they need {want})"
                            for f, have, want in short)
                + f": {BUILD_HINT}, or set "
                + " ".join(f"--{f.replace('_', '-')} {want}" for f, _, want in short)
                + " (or more)")


def _short_fields(cfg: SimConfig, table: network.LinkTable, layout: FragmentLayout,
                  algo: Algorithm | None, auto: tuple) -> list[tuple[str, int, int]]:
    """(field, built, needed) of every `auto` field of a built cfg below what `resolve` gives
    one point's link table (sized for the run's delay_ticks, or for the point's own longest
    delay when that is longer); resolve's ConfigError for an explicit field it refuses."""
    free = cfg.replace(**{f: 0 for f in auto if f != "delay_ticks"}, iteration_chunk=-1)
    try:
        need, short = resolve_table(free, table, layout, False, algo), []
    except ConfigError:
        if "delay_ticks" not in auto:
            raise
        need = resolve_table(free.replace(delay_ticks=0), table, layout, False, algo)
        if need.delay_ticks <= cfg.delay_ticks:    # the error was not about the delay
            raise
        short = [("delay_ticks", cfg.delay_ticks, need.delay_ticks)]
    return short + [(f, getattr(cfg, f), getattr(need, f)) for f in auto
                    if f != "delay_ticks" and f not in BOUND_FIELDS
                    and getattr(cfg, f) < getattr(need, f)]


def resolve_points(cfg: SimConfig, hp: HParams, layout: FragmentLayout,
                   algo: Algorithm | None = None) -> SimConfig:
    """One config for every point of `hp` (leaves with sweep axes): every SIZED_FIELD left at
    0 the largest any point needs (`resolve`'s own sizing, point by point; the others for
    the largest delay_ticks), explicit values kept and checked (resolve's errors). Every
    point then passes `check_sizes`. Raises ConfigError naming the field and the fix."""
    network.check_network(cfg, hp)
    tables = [host_link_table(cfg, p, layout.fragment_bytes) for p in network_points(cfg, hp)]
    got = [resolve_table(cfg, t, layout, False, algo) for t in tables]
    delay = max(c.delay_ticks for c in got)
    got = [c if c.delay_ticks == delay else
           resolve_table(cfg.replace(delay_ticks=delay), t, layout, False, algo)
           for c, t in zip(got, tables, strict=True)]
    chunks = [c.iteration_chunk for c in got]        # any chunk gives the same results
    out = cfg.replace(**{f: max(getattr(c, f) for c in got) for f in SIZED_FIELDS},
                      iteration_chunk=0 if 0 in chunks else max(chunks))
    check_sizes(out, hp, layout, algo, auto_fields(cfg), where="a grid point's HParams")
    return out


def auto_fields(cfg: SimConfig) -> tuple:
    """The SIZED_FIELDS a config leaves to `resolve` (0 = auto)."""
    return tuple(f for f in SIZED_FIELDS if getattr(cfg, f) == 0)


ALGORITHM_FIELDS = ("iteration_slots", "inbox_history", "ping_slots")   # resolve_sizes's


def algorithm_fields(cfg: SimConfig, algo: Algorithm | None, table: network.LinkTable
                     ) -> tuple:
    """The sized fields the algorithm's own `resolve_sizes` fills for this config, asked with
    them at 0 (host, numpy table): DivShare's, Swift's and AD-PSGD's download tables
    (iteration_slots), AD-PSGD's ping table and snapshot history."""
    if algo is None or algo.resolve_sizes is None:
        return ()
    got = algo.resolve_sizes(cfg.replace(**{f: 0 for f in ALGORITHM_FIELDS}), table)
    return tuple(f for f in ALGORITHM_FIELDS if getattr(got, f))


def needs_resolve(cfg: SimConfig, used: tuple) -> bool:
    """Whether `resolve` would fill a field this run uses (`used`: `algorithm_fields`) that
    cfg leaves at 0 (auto); a config sized for a grid (`resolve_points`) needs nothing more."""
    return (cfg.ring_ticks == 0 or cfg.train_capacity == 0 or cfg.delay_ticks == 0
            or cfg.iteration_chunk == -1 or (has_table(cfg) and cfg.iteration_slots == 0)
            or any(getattr(cfg, f) == 0 for f in used))


def slots_fit(cfg: SimConfig, compute_ticks: jax.Array, slots: int) -> jax.Array:
    """() bool, traced: `slots_needed` (the host's rule) of these compute times <= slots."""
    c_min = jnp.min(shortest_ticks(cfg, compute_ticks))
    return -(-cfg.num_ticks // c_min) + 1 <= slots


def memory_advice(cfg: SimConfig, est: dict) -> list[str]:
    """The fixes that apply to this config (for the memory error): never one already on."""
    tips = []
    if est.get("training", 0) > 0.2 * est["total"] and (
            cfg.iteration_chunk <= 0 or cfg.iteration_chunk > 64):
        tips.append("--iteration-chunk 64 (end the iterations of 64 finishing nodes at a time: "
                    "the training buffers shrink; the results change only by float rounding)")
    if cfg.delivery == "arrival_tick":
        tips.append("--delivery receiver_iteration (2-3 ring slots instead of one per tick of "
                    "the longest delay; same results)")
    elif est.get("ring", 0) > 0.3 * est["total"]:
        tips.append("a coarser --tick-s or faster links (fewer messages in flight per slot)")
    tips.append(f"lower --n-nodes (now {cfg.n_nodes})")
    return tips


def compile_checked(fn, *args, cfg: SimConfig, what: str = "one eval interval",
                    fix: str = "", budget: int | None = None):
    """`fn.lower(*args).compile()` (fn jitted), refused before it runs when XLA's own buffer
    figures (arguments + outputs + temporaries - donated; `memory.compiled_memory`) exceed
    90% of the device: the state estimate of `resolve` counts the state, not the temporaries
    that the compiled step adds (gathered models, scatter buffers). On backends without the
    analysis, the program is returned unchecked."""
    compiled = fn.lower(*args).compile()
    peak = compiled_memory(compiled).get("peak_estimate", 0)
    have = available_memory_bytes() if budget is None else budget
    if peak > 0.9 * have:
        est = {"total": peak}
        raise ConfigError(
            f"the compiled program for {what} needs about {peak / 2**30:.2f} GiB (XLA's "
            f"arguments, outputs and temporaries) but the device has {have / 2**30:.2f} GiB: "
            + "; ".join(([fix] if fix else []) + memory_advice(cfg, est)))
    return compiled
