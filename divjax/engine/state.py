"""The simulation state: one immutable pytree that the tick function maps to the next."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from divjax.network.messages import Counters, Inbox, init_counters, init_inbox

# Bit flags of SimState.errors; the host turns them into clear exceptions (sim.check_state).
ERR_RING_TOO_SHORT = 1   # a message's delay exceeded the ring
ERR_CAPACITY = 2         # more nodes finished in one tick than train_capacity
ERR_NONFINITE = 4        # a trained model holds NaN or inf
ERR_HISTORY = 8          # inbox "latest": a replaced message's snapshot left the history
ERR_CLOCK = 16           # HParams invalid or too large for the int32 link clock
ERR_SCHEDULE = 32        # compute jitter: the iteration-end table is shorter than the run
#                          (or a download table, DivShare's, Swift's or AD-PSGD's pre-pass,
#                          holds fewer iterations than these HParams run)
ERR_HPARAMS = 64         # a negative or non-finite lr or weight decay, or momentum not in [0, 1)


@struct.dataclass
class SimState:
    params: jax.Array        # (n, K, F) float32: every node's flat model, in fragment order
    opt_state: Any           # optax state, leaves (n, ...): one per node
    algo_state: Any          # algorithm-specific pytree, leaves (n, ...) or ()
    inbox: Inbox             # messages in flight and arrived payloads
    counters: Counters       # per-node sent / dropped / delivered
    next_end: jax.Array      # (n,) int32: tick at which each node finishes its current iteration
    iterations: jax.Array    # (n,) int32: iterations each node has finished
    errors: jax.Array        # () int32: ERR_* bit flags raised during the run
    first_error_tick: jax.Array  # () int32: tick of the first error (-1 if none)
    first_error_node: jax.Array  # () int32: the first node whose model became NaN/inf (-1)
    t: jax.Array             # () int32: the next tick to simulate
    k_sim: jax.Array         # () typed PRNG key of the simulation stream (ticks fold into it)


class TickKeys(NamedTuple):
    """Keys of tick t; each depends only on (sim key, t), never on how the run is chunked."""

    batch: jax.Array   # mini-batch sampling (folded with the node id)
    route: jax.Array   # receivers and queue order (folded with the node id)
    spare: jax.Array   # reserved for algorithms that need more randomness


def tick_keys(k_sim: jax.Array, t: jax.Array) -> TickKeys:
    return TickKeys(*jax.random.split(jax.random.fold_in(k_sim, t), 3))


def flag_error(state: SimState, err: jax.Array, t: jax.Array) -> SimState:
    """Raise ERR_* bits (traced) in the state; the host turns them into exceptions."""
    err = jax.numpy.asarray(err, jax.numpy.int32)
    return state.replace(
        errors=state.errors | err,
        first_error_tick=jax.numpy.where((state.first_error_tick < 0) & (err > 0), t,
                                         state.first_error_tick))


def initial_state(cfg: Any, algo: Any, ctx: Any, params: jax.Array, tx: Any,
                  counter_ticks: int, k_sim: jax.Array, errors: jax.Array) -> SimState:
    """The state at tick 0 from its parts: the one place that lays a SimState out.

    The engine (`sim.init_state`) and the memory model (`memory.abstract_state`, under
    `jax.eval_shape`) both build it here, so the model counts exactly what a run holds.
    cfg is resolved (ring_ticks, train_capacity set); ctx an algorithms.Context; params
    (n, K, F) float32; tx the optax optimizer; errors () int32 ERR_* flags of the init checks.
    """
    n, K, F = params.shape
    return SimState(
        params=params,
        opt_state=jax.vmap(tx.init)(params),
        algo_state=algo.init(ctx._replace(k_sim=k_sim), params),
        inbox=init_inbox(cfg, cfg.ring_ticks, K, F, cfg.train_capacity),
        counters=init_counters(n, K, counter_ticks),
        next_end=(ctx.table.compute_ticks if ctx.table.ends is None
                  else ctx.table.ends[:, 0]),
        iterations=jnp.zeros((n,), jnp.int32),
        errors=errors,
        first_error_tick=jnp.where(errors > 0, 0, -1).astype(jnp.int32),
        first_error_node=jnp.full((), -1, jnp.int32),
        t=jnp.zeros((), jnp.int32),
        k_sim=k_sim,
    )


def flag_nonfinite(state: SimState, node: jax.Array, bad: jax.Array, t: jax.Array) -> SimState:
    """Raise ERR_NONFINITE if any of the nodes `node` (C,) has `bad` (C,) set, and remember the
    first such node (the smallest id at the first tick it happened)."""
    n_bad = jnp.min(jnp.where(bad, node, jnp.iinfo(jnp.int32).max))
    first = jnp.where((state.first_error_node < 0) & jnp.any(bad), n_bad, state.first_error_node)
    state = flag_error(state, jnp.where(jnp.any(bad), ERR_NONFINITE, 0), t)
    return state.replace(first_error_node=first.astype(jnp.int32))


class SimulationError(RuntimeError):
    """Something went wrong inside a run (NaN, ring or capacity overflow): what, and the fix."""


def check_state(state: SimState, cfg: Any, hp: Any = None) -> None:
    """Raise a clear error if the run raised any error flag (host side).

    `hp` (the HParams the run was called with; optional) lets a divergence name the learning
    rate that ran (it may differ from `cfg.lr`: a sweep point, `hp.replace(lr=...)`)."""
    shaped = np.asarray(jax.device_get(state.errors))   # (), or sweep axes (..., H)
    errors = shaped.reshape(-1)
    first = np.asarray(jax.device_get(state.first_error_tick)).reshape(-1)
    if not errors.any():
        return
    i = int(np.flatnonzero(errors)[0])
    e, when = int(errors[i]), float(first[i]) * cfg.tick_s
    msgs = []
    if e & ERR_NONFINITE:
        node = int(np.asarray(jax.device_get(state.first_error_node)).reshape(-1)[i])
        msgs.append(f"node {node}'s model became NaN/inf at simulated time {when:.3f}s: "
                    f"training diverged; lower --lr ({_lr_that_ran(hp, shaped.shape, i)}) "
                    f"or check the data")
    if e & ERR_RING_TOO_SHORT:
        msgs.append("the delay ring is shorter than the longest message delay of these HParams: "
                    "build the run with these HParams (make_run(cfg, hp=hp)), or set "
                    "--ring-ticks 0 --delay-ticks 0 (auto), or raise --delay-ticks (AD-PSGD, "
                    "whose pong delays depend on random pings; or its --ping-slots)")
    if e & ERR_CLOCK:
        msgs.append("the HParams given to the run hold a non-positive, non-finite or too large "
                    "compute time, bandwidth or latency for the int32 link clock: check them "
                    "(they come from --compute-s, --fast-mbps / --straggler-mbps, --download-mbps "
                    "/ --straggler-download-mbps, --latency-ms or a --grid of them), or raise "
                    "--tick-s / lower --link-resolution")
    if e & ERR_HISTORY:
        msgs.append(f"AD-PSGD's snapshot history (inbox_history={cfg.inbox_history}) is too "
                    f"short to take a replaced message out of an inbox (first at {when:.3f}s): "
                    f"raise --inbox-history, or set it to 0 (auto), or use --inbox sum")
    if e & ERR_SCHEDULE:
        msgs.append("the compute-jitter table ends before the run, or a download table "
                    "(DivShare, Swift, AD-PSGD) holds fewer iterations than these HParams run "
                    "(iteration_slots): build the run with these HParams (make_run(cfg, "
                    "hp=hp)), or set --iteration-slots 0 (auto)")
    if e & ERR_HPARAMS:
        msgs.append("the HParams given to the run hold a negative or non-finite lr or "
                    "weight_decay, or a momentum outside [0, 1) (the CLI refuses them too): "
                    "fix them, e.g. hp.replace(lr=0.05)")
    if e & ERR_CAPACITY:
        msgs.append(f"more than train_capacity={cfg.train_capacity} nodes finished at one tick "
                    f"(first at {when:.3f}s): set --train-capacity 0 (auto)")
    raise SimulationError("; ".join(msgs))


def _lr_that_ran(hp: Any, shape: tuple, i: int) -> str:
    """The learning rate of the point that diverged (flat index i of error flags of `shape`):
    hp.lr, picked by broadcasting it against the flags when it carries sweep axes."""
    if hp is None:
        return "the HParams.lr the run was called with; --lr only sets the default"
    lr = np.asarray(jax.device_get(hp.lr), np.float64)
    if lr.size == 1:
        return f"the run's lr={float(lr.reshape(-1)[0]):g}"
    try:   # a sweep: error flags (..., H) against lr (H,)
        return f"that point's lr={float(np.broadcast_to(lr, shape).reshape(-1)[i]):g}"
    except ValueError:
        return f"the run's lr ranged over {lr.min():g}..{lr.max():g}"
