"""The engine: `make_run(cfg, task, algo) -> run(key, hp)`, the tick, evaluation, config checks.

One tick (t):
  1. counters and (arrival_tick mode) inboxes take what arrives at t;
  2. the nodes whose iteration ends at t (at most `train_capacity` of them, gathered) take their
     local steps from their current model;
  3. the algorithm queues their post-training messages and averages in their inbox;
  4. they start the next iteration, which ends compute_ticks later.
Ticks at which no node finishes skip step 2-3 (`lax.cond`). Everything random derives from
`fold_in(k_sim, t)` and the node id, so results do not depend on chunking or on which nodes
happen to be gathered together.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax import network
from divjax.algorithms import ALGORITHMS, Algorithm, Context
from divjax.config import ConfigError, HParams, SimConfig, default_hparams
from divjax.flat import FragmentLayout, make_layout
from divjax.local import (
    all_finite,
    loop_over_nodes,
    make_optimizer,
    make_train_one,
    node_batch_key,
)
from divjax.memory import available_memory_bytes, memory_model
from divjax.rows import get_rows, set_rows
from divjax.state import (
    ERR_CAPACITY,
    ERR_CLOCK,
    ERR_HISTORY,
    ERR_NONFINITE,
    ERR_RING_TOO_SHORT,
    SimState,
    flag_error,
    tick_keys,
)
from divjax.tasks import Task, make_task
from divjax.topology import adjacency, neighbor_table


def model_layout(cfg: SimConfig, task: Task) -> FragmentLayout:
    """The fixed fragment partition of the task's model (shapes only; no training)."""
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return make_layout(template, cfg.n_fragments, cfg.fragment_seed)


# ----------------------------------------------------------------------------- config checks


def memory_estimate(cfg: SimConfig, layout: FragmentLayout, ring_slots: int,
                    algo: Algorithm | None = None) -> dict:
    """Bytes the run's state needs, by part, and their "total" (see divjax.memory)."""
    m = memory_model(cfg, layout, ring_slots=ring_slots, available=1, algo=algo)
    return {**{k: v for k, v in m["parts"].items() if v}, "total": m["total"]}


def check_memory_early(cfg: SimConfig, task: Task) -> None:
    """Refuse, from shapes alone, a state that cannot fit (before anything is allocated)."""
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    leaves = jax.tree.leaves(shapes)
    D = sum(int(np.prod(x.shape)) for x in leaves)
    if cfg.n_fragments > D:
        raise ConfigError(
            f"n_fragments={cfg.n_fragments} is larger than the model's parameter count D={D}: "
            f"use --n-fragments between 1 and {D}")
    per_model = 4 * (D + len(leaves) * cfg.n_fragments)
    # params + at least one ring slot + the gathered training copies
    lower_bound = cfg.n_nodes * per_model * 2
    have = available_memory_bytes()
    if lower_bound > 0.8 * have:
        raise ConfigError(
            f"n_nodes={cfg.n_nodes} models of D={D} parameters need at least "
            f"{lower_bound / 2**30:.1f} GiB (parameters and one ring slot) but the device has "
            f"{have / 2**30:.1f} GiB: lower --n-nodes (at most "
            f"{int(0.8 * have // (2 * per_model))}) or use a smaller model")


def resolve(cfg: SimConfig, hp: HParams, layout: FragmentLayout,
            check_memory: bool = True, algo: Algorithm | None = None) -> SimConfig:
    """Check the network in `hp` and size the ring and the training capacity for it.

    Returns cfg with `ring_ticks` and `train_capacity` set (fields left at 0 are filled with the
    smallest values that fit; explicit values are checked). Raises ConfigError with the fix.
    """
    network.check_network(cfg, hp)
    table = network.concrete_link_table(cfg, hp, layout.fragment_bytes)
    if algo is not None and algo.adjust_timing is not None:
        table = algo.adjust_timing(cfg, table)
    if np.max(table.compute_ticks) * cfg.link_resolution >= 2**30:
        raise ConfigError(
            f"compute_s / tick_s * link_resolution is too large for the int32 link clock: "
            f"raise tick_s={cfg.tick_s} or lower link_resolution={cfg.link_resolution}")
    if np.max(table.msg_units) >= 2**30 // max(1, cfg.messages_per_iteration):
        raise ConfigError("a message takes too long on the slowest link for the int32 link clock: "
                          "raise the bandwidth or tick_s, or lower link_resolution")
    if algo is not None and algo.longest_delay is not None:
        delay = int(algo.longest_delay(cfg, table))
    else:
        delay = network.longest_delay_ticks(table, cfg.link_resolution)
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
    worst = network.max_simultaneous_finishers(cfg, table)
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


def memory_advice(cfg: SimConfig, est: dict) -> list[str]:
    """The fixes that apply to this config (for the memory error): never one already on."""
    tips = []
    if est.get("training", 0) > 0.2 * est["total"] and (
            cfg.iteration_chunk == 0 or cfg.iteration_chunk > 64):
        tips.append("--iteration-chunk 64 (end the iterations of 64 finishing nodes at a time: "
                    "the training buffers shrink, the results do not change)")
    if cfg.delivery == "arrival_tick":
        tips.append("--delivery receiver_iteration (2-3 ring slots instead of one per tick of "
                    "the longest delay; same results)")
    elif est.get("ring", 0) > 0.3 * est["total"]:
        tips.append("a coarser --tick-s or faster links (fewer messages in flight per slot)")
    tips.append(f"lower --n-nodes (now {cfg.n_nodes})")
    return tips


# ----------------------------------------------------------------------------- the engine


class Engine(NamedTuple):
    """Pure functions of one configuration; jit them at the call site."""

    cfg: SimConfig
    task: Task
    layout: FragmentLayout
    init: Callable      # init(key, hp) -> SimState
    advance: Callable   # advance(state, hp) -> (state, metrics): one eval interval of ticks
    evaluate: Callable  # evaluate(state) -> metrics dict
    run_ticks: Callable  # run_ticks(state, hp) -> state: the ticks of `advance`, no evaluation


def make_engine(cfg: SimConfig, task: Task | None = None, algo: Algorithm | None = None,
                hp: HParams | None = None) -> Engine:
    """Build the engine for a config. `hp` (concrete) sizes the ring; default_hparams if None."""
    task = task if task is not None else make_task(cfg)
    if algo is None:
        if cfg.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm={cfg.algorithm!r} is unknown: choose one of "
                              f"{sorted(ALGORITHMS)}")
        algo = ALGORITHMS[cfg.algorithm](cfg)
    check_memory_early(cfg, task)
    layout = model_layout(cfg, task)
    if (cfg.ring_ticks == 0 or cfg.train_capacity == 0 or cfg.delay_ticks == 0
            or (algo.resolve_sizes is not None and cfg.inbox_history == 0)):
        cfg = resolve(cfg, hp if hp is not None else default_hparams(cfg), layout, algo=algo)
    adj = adjacency(cfg)
    nb_np, deg_np = neighbor_table(adj)
    if cfg.fanout > int(deg_np.min()):
        raise ConfigError(
            f"fanout={cfg.fanout} is larger than the smallest node degree {int(deg_np.min())} "
            f"of topology={cfg.topology!r}: lower --fanout or use a denser topology")
    n, K, F = cfg.n_nodes, layout.K, layout.F
    C, E = cfg.train_capacity, cfg.eval_every
    Ch = cfg.iteration_chunk
    ring_slots = cfg.ring_ticks
    counter_ticks = cfg.delay_ticks + 1  # the counters' ring: longest delay + 1 ticks
    real = jnp.asarray(layout.real_mask())
    frag_bytes = jnp.asarray(layout.fragment_bytes, jnp.float32)

    def context(hp):
        table = network.link_table(cfg, hp, layout.fragment_bytes)
        if algo.adjust_timing is not None:
            table = algo.adjust_timing(cfg, table)
        return Context(cfg, layout, jnp.asarray(nb_np), jnp.asarray(deg_np), table)

    def init(key: jax.Array, hp: HParams) -> SimState:
        k_init, k_sim = jax.random.split(key)
        del key
        ctx = context(hp)
        if cfg.same_init:
            one = layout.flatten(task.init(k_init))
            params = jnp.broadcast_to(one, (n, K, F))
        else:
            params = jax.vmap(lambda k: layout.flatten(task.init(k)))(
                jax.random.split(k_init, n))
        params = params.astype(jnp.float32)
        tx = make_optimizer(cfg, hp)
        table = ctx.table
        # a queue that is replaced every iteration bounds every delay by compute + latency;
        # other queues are checked message by message in network.push
        if algo.longest_delay is None:
            delay = jnp.max(network.replaced_queue_delay_bound(table, cfg.link_resolution))
            c_min = jnp.min(table.compute_ticks)
            slots = delay if cfg.delivery == "arrival_tick" else (delay + c_min - 1) // c_min + 1
            fits = (slots <= ring_slots) & (delay <= cfg.delay_ticks)
        else:
            fits = jnp.bool_(True)
        errors = (jnp.where(fits, 0, ERR_RING_TOO_SHORT)
                  | jnp.where(network.clock_fits(cfg, hp, layout.fragment_bytes), 0,
                              ERR_CLOCK)).astype(jnp.int32)
        return SimState(
            params=params,
            opt_state=jax.vmap(tx.init)(params),
            algo_state=algo.init(ctx, params),
            inbox=network.init_inbox(cfg, ring_slots, K, F, C),
            counters=network.init_counters(n, K, counter_ticks),
            next_end=table.compute_ticks,
            iterations=jnp.zeros((n,), jnp.int32),
            errors=errors,
            first_error_tick=jnp.where(errors > 0, 0, -1).astype(jnp.int32),
            t=jnp.zeros((), jnp.int32),
            k_sim=k_sim,
        )


    def tick(state: SimState, hp: HParams, ctx: Context) -> SimState:
        t = state.t
        keys = tick_keys(state.k_sim, t)
        tx = make_optimizer(cfg, hp)
        train_one = make_train_one(cfg, task, layout, tx)
        inbox = network.clear_collected(cfg, state.inbox)
        state = state.replace(counters=network.tick_counters(state.counters, t),
                              inbox=network.arrive(cfg, inbox, t))
        if algo.on_tick is not None:
            state = algo.on_tick(ctx, state, keys, t)
        done = state.next_end == t                                              # (n,)

        def end_iterations(state: SimState, node: jax.Array) -> SimState:
            """Train, send and average the nodes `node` (entries == n are padding)."""
            valid = node < n
            safe = jnp.minimum(node, n - 1)
            drop = jnp.where(valid, node, n)
            p = get_rows(state.params, (safe,))
            o = jax.tree.map(lambda x: get_rows(x, (safe,)), state.opt_state)
            bkeys = jax.vmap(node_batch_key, (None, 0))(keys.batch, safe)
            if cfg.train_chunk and cfg.train_chunk < node.shape[0]:
                # bounded memory / per-node kernels: chunks of train_chunk nodes in sequence
                trained, o = jax.lax.map(lambda a: train_one(*a), (p, o, bkeys, safe),
                                         batch_size=cfg.train_chunk)
            else:
                trained, o = jax.vmap(train_one)(p, o, bkeys, safe)
            state, after = algo.iteration_end(ctx, state, node, valid, trained, keys, t)
            if cfg.reset_optimizer:
                o = jax.vmap(tx.init)(after)
            err = jnp.where(all_finite(after, valid) & all_finite(trained, valid), 0,
                            ERR_NONFINITE)
            state = state.replace(
                params=set_rows(state.params, (drop,), after),
                opt_state=jax.tree.map(lambda full, part: set_rows(full, (drop,), part),
                                       state.opt_state, o))
            return flag_error(state, err, t)

        def work(state: SimState) -> SimState:
            node = jnp.nonzero(done, size=C, fill_value=n)[0].astype(jnp.int32)   # (C,)
            if Ch and Ch < C:
                # chunks of Ch nodes, one after another: only Ch models are gathered at once.
                # Equal to all at once: a message sent at t joins an aggregation after t, so no
                # chunk reads what another chunk of the same tick sends.
                chunks = -(-C // Ch)
                node = jnp.pad(node, (0, chunks * Ch - C), constant_values=n)

                def chunk(i, carry):
                    state, clear_slot, clear_node = carry
                    state = end_iterations(state, jax.lax.dynamic_slice(node, (i * Ch,), (Ch,)))
                    at = (i * Ch,)
                    inbox = state.inbox
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
                state = end_iterations(state, node)
            return flag_error(state, jnp.where(jnp.sum(done) > C, ERR_CAPACITY, 0), t)

        state = jax.lax.cond(jnp.any(done), work, lambda s: s, state)
        return state.replace(
            next_end=jnp.where(done, t + ctx.table.compute_ticks, state.next_end),
            iterations=state.iterations + done.astype(jnp.int32),
            t=t + 1,
        )

    if task.make_flat_evaluate is not None:
        evaluate_flat = task.make_flat_evaluate(layout)
    else:
        def evaluate_flat(p, node):
            return task.evaluate(layout.unflatten(p), node)

    eval_node_by_node = loop_over_nodes(layout)

    def evaluate(state: SimState) -> dict:
        params = state.params
        avg = jnp.mean(params, axis=0)

        def one_node(a):  # metrics and squared distance to the average, eval_chunk at a time
            p, node = a
            return (evaluate_flat(p, node),
                    jnp.sum(jnp.where(real, p - avg, 0.0) ** 2))

        nodes = (params, jnp.arange(n, dtype=jnp.int32))
        if eval_node_by_node:  # per-node convolutions under vmap are grouped: slow on CPU
            per_node, dist2 = jax.lax.map(one_node, nodes)
        else:
            per_node, dist2 = jax.lax.map(one_node, nodes, batch_size=min(cfg.eval_chunk, n))
        avg_metrics = evaluate_flat(avg, jnp.int32(-1))
        out = {"time_s": state.t.astype(jnp.float32) * cfg.tick_s}
        for name in task.metric_names:
            v = per_node[name]
            out[f"{name}_mean"] = jnp.mean(v)
            out[f"{name}_min"] = jnp.min(v)
            out[f"{name}_max"] = jnp.max(v)
            out[f"{name}_avgmodel"] = avg_metrics[name]
        out["consensus"] = jnp.mean(dist2)
        c = state.counters
        out["bytes_sent"] = jnp.sum(c.sent.astype(jnp.float32) * frag_bytes)
        out["msgs_sent"] = jnp.sum(c.sent).astype(jnp.float32)
        out["msgs_delivered"] = jnp.sum(c.delivered).astype(jnp.float32)
        out["msgs_dropped"] = jnp.sum(c.dropped).astype(jnp.float32)
        out["msgs_replaced"] = jnp.sum(c.replaced).astype(jnp.float32)
        # the run's ERR_* flags so far (0 = none): a jitted make_run cannot raise, so check
        # this metric, or call divjax.check_state(state, cfg) on the final state
        out["errors"] = state.errors.astype(jnp.float32)
        out["iterations_mean"] = jnp.mean(state.iterations.astype(jnp.float32))
        out["node"] = {name: per_node[name] for name in task.metric_names}
        return out

    def run_ticks(state: SimState, hp: HParams) -> SimState:
        ctx = context(hp)
        return jax.lax.fori_loop(0, E, lambda _, s: tick(s, hp, ctx), state)

    def advance(state: SimState, hp: HParams):
        state = run_ticks(state, hp)
        return state, evaluate(state)

    return Engine(cfg, task, layout, init, advance, evaluate, run_ticks)


def make_run(cfg: SimConfig, task: Task | None = None, algo: Algorithm | None = None,
             hp: HParams | None = None) -> Callable:
    """Return a pure `run(key, hp) -> (final SimState, metrics)` for jit, vmap and scan.

    Metrics leaves have a leading axis C (one entry per eval interval of `eval_every_s`).

    Example:
        >>> cfg = SimConfig(n_nodes=8, duration_s=10)
        >>> run = jax.jit(make_run(cfg))
        >>> state, metrics = run(jax.random.key(0), default_hparams(cfg))
        >>> check_state(state, run.engine.cfg)   # raises SimulationError on NaN, overflow, ...

    A jitted run cannot raise: a diverged or invalid run returns with `state.errors` set and
    `metrics["errors"]` non-zero from the first interval it happened in. Check one of them.
    """
    engine = make_engine(cfg, task, algo, hp)

    def run(key, hp):
        state = engine.init(key, hp)
        return jax.lax.scan(lambda s, _: engine.advance(s, hp), state, None,
                            length=engine.cfg.num_chunks)

    run.engine = engine
    return run


# ----------------------------------------------------------------------------- host side


class SimulationError(RuntimeError):
    """Something went wrong inside a run (NaN, ring or capacity overflow): says what and how to fix."""


def check_state(state: SimState, cfg: SimConfig) -> None:
    """Raise a clear error if the run raised any error flag (host side)."""
    errors = np.asarray(jax.device_get(state.errors)).reshape(-1)
    first = np.asarray(jax.device_get(state.first_error_tick)).reshape(-1)
    if not errors.any():
        return
    i = int(np.flatnonzero(errors)[0])
    e, when = int(errors[i]), float(first[i]) * cfg.tick_s
    msgs = []
    if e & ERR_NONFINITE:
        msgs.append(f"a node model became NaN/inf at simulated time {when:.3f}s: training "
                    f"diverged; lower --lr (now {cfg.lr}) or check the data")
    if e & ERR_RING_TOO_SHORT:
        msgs.append("the delay ring is shorter than the longest message delay of these HParams: "
                    "build the run with these HParams (make_run(cfg, hp=hp)), or set "
                    "--ring-ticks 0 --delay-ticks 0 (auto), or raise --delay-ticks (AD-PSGD, "
                    "whose pong delays depend on random pings)")
    if e & ERR_CLOCK:
        msgs.append("the HParams given to the run hold a non-positive, non-finite or too large "
                    "compute time, bandwidth or latency for the int32 link clock: check them, "
                    "or raise tick_s / lower link_resolution")
    if e & ERR_HISTORY:
        msgs.append(f"AD-PSGD's snapshot history (inbox_history={cfg.inbox_history}) is too "
                    f"short to take a replaced message out of an inbox (first at {when:.3f}s): "
                    f"raise --inbox-history, or set it to 0 (auto), or use --inbox sum")
    if e & ERR_CAPACITY:
        msgs.append(f"more than train_capacity={cfg.train_capacity} nodes finished at one tick "
                    f"(first at {when:.3f}s): set --train-capacity 0 (auto)")
    raise SimulationError("; ".join(msgs))


def simulate(engine: Engine, key: jax.Array, hp: HParams, progress: Callable | None = None,
             state: SimState | None = None, stop_chunk: int | None = None):
    """The Python driver: one jitted eval interval at a time, with progress reports.

    Bit-identical to `make_run` (same tick function, keys folded from the tick). Starts from
    `state` if given (e.g. a resumed checkpoint). Returns (state, metrics stacked over chunks).
    Not jittable: host loop.
    """
    advance = jax.jit(engine.advance, donate_argnums=0)
    if state is None:
        state = jax.jit(engine.init)(key, hp)
    done_chunks = int(state.t) // engine.cfg.eval_every
    last = engine.cfg.num_chunks if stop_chunk is None else stop_chunk
    history = []
    for c in range(done_chunks, last):
        state, metrics = advance(state, hp)
        check_state(state, engine.cfg)
        metrics = jax.device_get(metrics)
        history.append(metrics)
        if progress is not None:
            progress(c + 1, engine.cfg.num_chunks, metrics)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *history) if history else {}
    return state, stacked
