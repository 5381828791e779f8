"""The engine: `make_run(cfg, task, algo) -> run(key, hp)`, built from pure functions.

One tick (t), `tick`:
  1. counters and (arrival_tick mode) inboxes take what arrives at t;
  2. the nodes whose iteration ends at t (at most `train_capacity` of them, gathered) take their
     local steps from their current model (`end_iterations`);
  3. the algorithm queues their post-training messages and averages in their inbox;
  4. they start the next iteration, which ends compute_ticks later (with compute jitter or
     churn: at the next entry of the iteration-end table, `compute_schedule.end_tick`).
A synchronous algorithm's rounds all last compute_ticks and churn never pauses them: a node
offline at a round end (`compute_schedule.is_offline`) skips that round (steps 2-3: no training,
no messages, no mixing; its iteration count stays), and its next round ends compute_ticks later.
Ticks at which no node finishes skip step 2-3 (`lax.cond`); with `iteration_chunk` the finishing
nodes are handled a chunk at a time (`end_finishing_nodes`). Everything random derives from
`fold_in(k_sim, t)` and the node id, so what happens (iterations, messages, counters) does not
depend on chunking or on which nodes happen to be gathered together; the parameters only to
float rounding (a chunked tick adds the same inbox terms in another order).

Every function here is a module-level pure function of an `EngineSpec` (what is fixed for one
run: the resolved config, task, layout, algorithm and graph) and the traced state; `make_engine`
sizes the config (`divjax.engine.sizing.resolve`) and binds them. Host-side checks and sizing live in
`divjax.engine.sizing`; the state's layout in `divjax.engine.state.initial_state`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.network import messages, links as network
from divjax.algorithms import Algorithm, Context, make_algorithm
from divjax.network.compute_schedule import (
    end_tick,
    has_offline,
    has_table,
    is_offline,
    iteration_ends,
    offline_intervals,
    shortest_ticks,
)
from divjax.config import ConfigError, HParams, SimConfig, default_hparams
from divjax.engine.evaluation import evaluate, flat_evaluator  # noqa: F401 (API)
from divjax.engine.flat import FragmentLayout
from divjax.engine.local import (
    has_convolutions,
    make_optimizer,
    make_train_one,
    node_batch_key,
    rows_finite,
)
from divjax.tasks.registry import make_task
from divjax.engine.rows import get_rows, padded_rows, set_rows
from divjax.engine.run_checks import attach_check, call_checker
from divjax.engine.sizing import (
    SIZED_FIELDS,
    algorithm_fields,
    auto_fields,
    check_call_inputs,
    check_memory_early,
    compile_checked,
    host_link_table,
    model_layout,
    needs_resolve,
    optimizer_ok,
    resolve,
    slots_fit,
)
from divjax.engine.state import (  # SimulationError, check_state: re-exported
    ERR_CAPACITY,
    ERR_CLOCK,
    ERR_HPARAMS,
    ERR_RING_TOO_SHORT,
    ERR_SCHEDULE,
    SimState,
    SimulationError,  # noqa: F401
    check_state,
    flag_error,
    flag_nonfinite,
    initial_state,
    tick_keys,
)
from divjax.tasks.base import Task
from divjax.network.topology import CompleteNeighbors, device_neighbors, neighbors
from divjax.engine.xla_options import copy_tags, jit, tag_convolutions


class EngineSpec(NamedTuple):
    """What is fixed for one run (static under jit): the engine's functions take it first."""

    cfg: SimConfig            # resolved: ring_ticks, delay_ticks, train_capacity set
    task: Task
    layout: FragmentLayout
    algo: Algorithm
    neighbors: np.ndarray | CompleteNeighbors  # (n, max_degree) int32 padded neighbour
    #                           lists; the complete graph's are computed, never stored
    degree: np.ndarray        # (n,) int32
    # the algorithm keeps a table of cfg.iteration_slots iterations per node of its own (a
    # download table: `sizing.algorithm_fields`), checked in `init_errors`
    slots_table: bool = False
    auto: tuple = SIZED_FIELDS   # the sized fields `resolve` sized (`sizing.check_sizes`)


class Engine(NamedTuple):
    """Pure functions of one configuration; jit them at the call site."""

    cfg: SimConfig
    task: Task
    layout: FragmentLayout
    init: Callable      # init(key, hp) -> SimState
    advance: Callable   # advance(state, hp) -> (state, metrics): one eval interval of ticks
    evaluate: Callable  # evaluate(state) -> metrics dict
    run_ticks: Callable  # run_ticks(state, hp) -> state: the ticks of `advance`, no evaluation


# ----------------------------------------------------------------------------- state at tick 0


def context(spec: EngineSpec, hp: HParams, k_sim: jax.Array) -> Context:
    """The algorithm's view of the run: config, layout, graph, integer timing (`ends`: k_sim)."""
    table = network.link_table(spec.cfg, hp, spec.layout.fragment_bytes)
    if spec.algo.adjust_timing is not None:
        table = spec.algo.adjust_timing(spec.cfg, table)
    if has_table(spec.cfg):
        off = offline_intervals(spec.cfg, k_sim) if has_offline(spec.cfg) else (None, None)
        ends = (None if spec.algo.synchronous   # rounds of one length, never paused
                else iteration_ends(spec.cfg, table.compute_ticks, k_sim, off))
        table = table._replace(ends=ends, off_start=off[0], off_end=off[1])
    return Context(spec.cfg, spec.layout, device_neighbors(spec.neighbors),
                   jnp.asarray(spec.degree), table)


def init_errors(spec: EngineSpec, hp: HParams, table: network.LinkTable) -> jax.Array:
    """() int32 ERR_* flags of HParams the host checks never saw (a sweep, a custom grid,
    a jitted or vmapped call; `sizing.check_sizes` is the host's rule): timing that outgrows
    the sized rings or iteration tables, or that the int32 link clock cannot hold, or an
    optimizer the CLI would refuse (a negative lr)."""
    cfg = spec.cfg
    if spec.algo.longest_delay is None:
        # a queue that is replaced every iteration bounds every delay by compute + latency;
        # other queues are checked message by message in messages.push
        delay = jnp.max(network.replaced_queue_delay_bound(cfg, table))
        slots = network.ring_slots_for(cfg, delay,
                                       jnp.min(shortest_ticks(cfg, table.compute_ticks)))
        fits = (slots <= cfg.ring_ticks) & (delay <= cfg.delay_ticks)
    else:
        fits = jnp.bool_(True)
    clock_ok = network.clock_fits(cfg, hp, spec.layout.fragment_bytes)
    ends_ok = True if table.ends is None else jnp.all(table.ends[:, -1] >= cfg.num_ticks)
    if spec.slots_table:   # a download table of iteration_slots iterations per node
        ends_ok &= slots_fit(cfg, table.compute_ticks, cfg.iteration_slots)
    return (jnp.where(fits, 0, ERR_RING_TOO_SHORT) | jnp.where(clock_ok, 0, ERR_CLOCK)
            | jnp.where(ends_ok, 0, ERR_SCHEDULE)
            | jnp.where(optimizer_ok(hp), 0, ERR_HPARAMS)).astype(jnp.int32)


def init_state(spec: EngineSpec, key: jax.Array, hp: HParams) -> SimState:
    """Every node's initial model (one shared or n independent), empty rings, tick 0."""
    cfg, layout, task = spec.cfg, spec.layout, spec.task
    check_call_inputs(cfg, key, hp)   # shapes: a clear error at trace time
    n, K, F = cfg.n_nodes, layout.K, layout.F
    k_init, k_sim = jax.random.split(key)
    del key
    ctx = context(spec, hp, k_sim)
    if cfg.same_init:
        params = jnp.broadcast_to(layout.flatten(task.init(k_init)), (n, K, F))
    else:
        params = jax.vmap(lambda k: layout.flatten(task.init(k)))(jax.random.split(k_init, n))
    return initial_state(cfg, spec.algo, ctx, params.astype(jnp.float32),
                         make_optimizer(cfg, hp), cfg.delay_ticks + 1, k_sim,
                         init_errors(spec, hp, ctx.table))


# ----------------------------------------------------------------------------- one tick


def end_iterations(spec: EngineSpec, ctx: Context, hp: HParams, state: SimState,
                   node: jax.Array, keys, t: jax.Array, in_place: bool = False) -> SimState:
    """Train, send and average the nodes `node` (C,) (entries == n are padding); in_place: row
    i is node i or padding (C = n), so no model is gathered or scattered back."""
    cfg, n = spec.cfg, spec.cfg.n_nodes
    tx = make_optimizer(cfg, hp)
    train_one = make_train_one(cfg, spec.task, spec.layout, tx)
    valid, safe, drop = padded_rows(node, n)
    if in_place:
        safe = jnp.arange(n, dtype=node.dtype)
        p, o = state.params, state.opt_state
    else:
        p = get_rows(state.params, (safe,))
        o = jax.tree.map(lambda x: get_rows(x, (safe,)), state.opt_state)
    bkeys = jax.vmap(node_batch_key, (None, 0))(keys.batch, safe)
    if cfg.train_chunk and cfg.train_chunk < node.shape[0]:
        # bounded memory / per-node kernels: chunks of train_chunk nodes in sequence
        trained, o = jax.lax.map(lambda a: train_one(*a), (p, o, bkeys, safe),
                                 batch_size=cfg.train_chunk)
    else:
        trained, o = jax.vmap(train_one)(p, o, bkeys, safe)
    state, after = spec.algo.iteration_end(ctx, state, node, valid, trained, keys, t)
    o = jax.vmap(tx.init)(after) if cfg.reset_optimizer else o
    def put(full, part):   # the new rows into the state: a select in place, else a scatter
        if in_place:
            return jnp.where(valid.reshape((-1,) + (1,) * (full.ndim - 1)), part, full)
        return set_rows(full, (drop,), part)
    params = put(state.params, after)
    # checks the state's new rows, so the averaging fuses into the write-back (profile_ops)
    ok = rows_finite(params if in_place else after, valid)
    ok = ok if spec.algo.keeps_nonfinite else ok & rows_finite(trained, valid)
    state = state.replace(params=params, opt_state=jax.tree.map(put, state.opt_state, o))
    return flag_nonfinite(state, node, ~ok, t)


def end_finishing_nodes(spec: EngineSpec, ctx: Context, hp: HParams, state: SimState,
                        done: jax.Array, keys, t: jax.Array) -> SimState:
    """`end_iterations` for every node with done[i] (at most train_capacity), in one call or,
    with `iteration_chunk` Ch, Ch nodes at a time: only Ch models are gathered at once. Equal
    to all at once: a message sent at t joins an aggregation after t, so no chunk reads what
    another chunk of the same tick sends (a synchronous algorithm completes its round in the
    last chunk: `Algorithm.synchronous`)."""
    n, C, Ch = spec.cfg.n_nodes, spec.cfg.train_capacity, spec.cfg.iteration_chunk
    in_place = n == C and not (Ch and Ch < C)   # every node may finish at once: row i = node i
    if in_place:
        node = jnp.where(done, jnp.arange(n, dtype=jnp.int32), n)
    else:                                # the finishing nodes in order, padded with n
        node = jnp.nonzero(done, size=C, fill_value=n)[0].astype(jnp.int32)    # (C,)
    end = partial(end_iterations, spec, ctx, hp, in_place=in_place)
    if Ch and Ch < C:
        chunks = -(-C // Ch)
        node = jnp.pad(node, (0, chunks * Ch - C), constant_values=n)

        def chunk(i, carry):
            state, clear_slot, clear_node = carry
            state = end(state, jax.lax.dynamic_slice(node, (i * Ch,), (Ch,)), keys, t)
            at, inbox = (i * Ch,), state.inbox
            return (state,
                    jax.lax.dynamic_update_slice(clear_slot, inbox.clear_slot[:Ch], at),
                    jax.lax.dynamic_update_slice(clear_node, inbox.clear_node[:Ch], at))

        needed = (jnp.minimum(jnp.sum(done), C) + Ch - 1) // Ch
        state, clear_slot, clear_node = jax.lax.fori_loop(
            0, needed, chunk, (state, jnp.zeros((chunks * Ch,), jnp.int32),
                               jnp.full((chunks * Ch,), n, jnp.int32)))
        state = state.replace(inbox=state.inbox._replace(
            clear_slot=clear_slot[:C], clear_node=clear_node[:C]))
    else:
        state = end(state, node, keys, t)
    return flag_error(state, jnp.where(jnp.sum(done) > C, ERR_CAPACITY, 0), t)


def tick(spec: EngineSpec, ctx: Context, hp: HParams, state: SimState) -> SimState:
    """Advance the run by one tick (see the module docstring)."""
    cfg, t = spec.cfg, state.t
    keys = tick_keys(state.k_sim, t)
    inbox = messages.clear_collected(cfg, state.inbox)
    state = state.replace(counters=messages.tick_counters(state.counters, t),
                          inbox=messages.arrive(cfg, inbox, t))
    if spec.algo.on_tick is not None:
        state = spec.algo.on_tick(ctx, state, keys, t)
    nodes = jnp.arange(cfg.n_nodes)
    done = train = state.next_end == t                                          # (n,)
    if spec.algo.synchronous:   # fixed rounds: an offline node skips one, the next is c later
        following = t + ctx.table.compute_ticks
        if has_offline(cfg):
            train = done & ~is_offline(ctx.table, nodes, t)
    else:
        following = end_tick(ctx.table, nodes, state.iterations + 1)
    state = jax.lax.cond(
        jnp.any(train), lambda s: end_finishing_nodes(spec, ctx, hp, s, train, keys, t),
        lambda s: s, state)
    return state.replace(
        next_end=jnp.where(done, following, state.next_end),
        iterations=state.iterations + train.astype(jnp.int32),
        t=t + 1,
    )


def run_ticks(spec: EngineSpec, state: SimState, hp: HParams) -> SimState:
    """One evaluation interval of ticks (`cfg.eval_every`), no evaluation."""
    ctx = context(spec, hp, state.k_sim)
    return jax.lax.fori_loop(0, spec.cfg.eval_every, lambda _, s: tick(spec, ctx, hp, s), state)


def advance(spec: EngineSpec, state: SimState, hp: HParams):
    """One evaluation interval: its ticks, then the metrics at its end."""
    state = run_ticks(spec, state, hp)
    return state, evaluate(spec, state)


# ----------------------------------------------------------------------------- assembly


def make_engine(cfg: SimConfig, task: Task | None = None, algo: Algorithm | None = None,
                hp: HParams | None = None) -> Engine:
    """Build the engine for a config. `hp` (concrete) sizes the ring; default_hparams if None."""
    task = task if task is not None else make_task(cfg)
    if algo is None:
        algo = make_algorithm(cfg)     # a built-in name or a plug-in's MODULE:ATTR
    check_memory_early(cfg, task)
    layout = model_layout(cfg, task)
    auto = auto_fields(cfg)
    hp0 = hp if hp is not None else default_hparams(cfg)
    network.check_network(cfg, hp0)
    used = algorithm_fields(cfg, algo, host_link_table(cfg, hp0, layout.fragment_bytes))
    if needs_resolve(cfg, used):
        cfg = resolve(cfg, hp0, layout, algo=algo)
    nb, deg = neighbors(cfg)         # no (n, n) array for the built-in topologies
    if cfg.fanout > int(deg.min()):
        raise ConfigError(
            f"fanout={cfg.fanout} is larger than the smallest node degree {int(deg.min())} "
            f"of topology={cfg.topology!r}: lower --fanout or use a denser topology")
    spec = EngineSpec(cfg, task, layout, algo, nb, deg,
                      "iteration_slots" in used and not algo.synchronous, auto)
    conv = has_convolutions(layout)          # picks the XLA options (`divjax.engine.xla_options`)
    engine = Engine(cfg, task, layout, *(tag_convolutions(partial(f, spec), conv,
                                                          task.xla_defaults)
                                         for f in (init_state, advance, evaluate, run_ticks)))
    attach_check(engine.init, call_checker(spec))   # divjax.jit checks a call's HParams
    return engine


def make_run(cfg: SimConfig, task: Task | None = None, algo: Algorithm | None = None,
             hp: HParams | None = None) -> Callable:
    """Return a pure `run(key, hp) -> (final SimState, metrics)` for jit, vmap and scan.

    Metrics leaves have a leading axis C (one entry per eval interval of `eval_every_s`).

    Example:
        >>> cfg = SimConfig(n_nodes=8, duration_s=10)
        >>> run = divjax.jit(make_run(cfg))   # jax.jit with divjax's compiler options
        >>> state, metrics = run(jax.random.key(0), default_hparams(cfg))
        >>> check_state(state, run.engine.cfg)   # raises SimulationError on NaN, overflow, ...

    A jitted run cannot raise: a diverged or invalid run returns with `state.errors` set and
    `metrics["errors"]` non-zero from the first interval it happened in. Check one of them.

    The run is sized for `hp` (default_hparams(cfg) if None). `divjax.jit(run)` refuses, on the
    host, HParams it was not sized for (`run.check`, `sizing.check_sizes`: build it with them,
    or size it for a grid with `sweep.resolve_grid`); under a plain jax.jit or vmap they raise
    an ERR_* flag instead (`init_errors`). A key or HParams of the wrong shape is a ConfigError
    when the run is traced.
    """
    engine = make_engine(cfg, task, algo, hp)

    def run(key, hp):
        state = engine.init(key, hp)
        return jax.lax.scan(lambda s, _: engine.advance(s, hp), state, None,
                            length=engine.cfg.num_chunks)

    run.engine = engine
    attach_check(run, engine.init.check)   # divjax.jit calls it with a call's (key, hp)
    return copy_tags(run, engine.advance)   # its XLA options


# ----------------------------------------------------------------------------- host side


def simulate(engine: Engine, key: jax.Array, hp: HParams, progress: Callable | None = None,
             state: SimState | None = None, stop_chunk: int | None = None):
    """The Python driver: one jitted eval interval at a time, with progress reports.

    Bit-identical to `make_run` (same tick function, keys folded from the tick). Starts from
    `state` if given (a resumed checkpoint). Returns (state, metrics stacked over chunks).
    """
    check = getattr(engine.init, "check", None)
    if check is not None:   # HParams the engine was not sized for: a clear error
        check(key if state is None else state.k_sim, hp)
    if state is None:
        state = jit(engine.init)(key, hp)
    advance = compile_checked(jit(engine.advance, donate_argnums=0), state, hp,
                              cfg=engine.cfg)
    done_chunks = int(state.t) // engine.cfg.eval_every
    last = engine.cfg.num_chunks if stop_chunk is None else stop_chunk
    history = []
    for c in range(done_chunks, last):
        state, metrics = advance(state, hp)
        check_state(state, engine.cfg, hp)
        metrics = jax.device_get(metrics)
        history.append(metrics)
        if progress is not None:
            progress(c + 1, engine.cfg.num_chunks, metrics)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *history) if history else {}
    return state, stacked
