"""A memory model of a run: bytes per node for the state, optimizer, ring buffer and data, and
the largest number of nodes that fits on the current device.

The state's parts are not hand-counted: `abstract_state` builds the engine's initial `SimState`
with the engine's own builder (`divjax.engine.state.initial_state`) under `jax.eval_shape`, without
allocating anything, and the model sums the bytes of its leaves. So every array an algorithm
keeps (AD-PSGD's ping table with its per-message records and its copy of every model, Swift's
queues, ...) and every field a change adds are counted as they are. With n nodes, K fragments
of F floats, R ring slots, Lc counter-ring ticks and C gathered (training) nodes, the parts are:

  params       n K F 4                       the node models, (n, K, F)          (state)
  optimizer    n K F 4 * (optimizer floats per parameter; SGD 0, momentum 1)     (state)
  algorithm    the algorithm's own state (SimState.algo_state)                    (state)
  ring         R n K (F + 1) 4 + 8 C         payload sums and counts in flight     (state)
  pending      n K (F + 1) 4                 only with delivery="arrival_tick"     (state)
  counters     (Lc + 1) n (K + 2) 4 + 8 n    counters, next_end, iterations, clock (state)
  hparams      the HParams of a call (per-node compute, bandwidth, latency: 16 n)  (argument)
  temporaries  XLA's temporaries of one eval interval, traced (`memory_temps`): keys of the
               local steps, gathered, trained and averaged models, gradients, activations,
               fragments drawn and sent, scatter operands, the evaluation's arrays
  training     C' K F 4 * (4 + opt)          only where no temporaries are traced (`resolve`,
               + C activation_bytes          which has no task): gathered, trained, averaged
                                            models, gradients; activations of one node's batch
  neighbours   n (max_degree + 1) 4          the padded neighbour table and degrees
                                            (complete graph: degrees only, no table)
  data         what the task keeps on the device (node shards + shared test sets)
  constants    0: divjax.jit passes a task's arrays to the program as arguments; 2 x data
               with DIVJAX_EMBED_CONSTANTS=1 (embedded as constants, as a plain jax.jit does):
               the measured difference, 2.1x the least-squares task's data (issue 33)
  pairs        n^2 (4 + 4 + 1)               only what a user's files make per pair: latency_file,
                                            loss_file, a file:PATH topology (`pair_bytes`)

(the formulas of the state parts are what the engine keeps today, for orientation; the figures
come from eval_shape). `memory_model` returns these parts, their total and the same figures per
node; `memory_scale.largest_n` bisects n against a budget (default: 80% of the device's memory).
With `temporaries` (the dry run, largest_n) the total is what a run's compiled interval needs
(XLA's arguments, outputs and temporaries), tests/test_memory_temps.py checks it against XLA's
own figure; without (`sizing.resolve`'s state check, before the engine exists) it is the state
and the hand-counted training buffers, a lower figure that `sizing.compile_checked` completes.
`compiled_memory` reads XLA's own figures (argument, output and temporary buffers) of a compiled
function; the benchmarks report both, and tests/test_memory_state.py checks that the state parts
are exactly the bytes of `jax.eval_shape(engine.init)` for every algorithm.
"""

from __future__ import annotations

import contextlib
import functools
import math
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from divjax.config import SimConfig, default_hparams, download_limited

F32 = 4
DEFAULT_RING_SLOTS = 3      # receiver_iteration with latency < compute time: ceil((c+l)/c)+1
FRACTION = 0.8              # share of the device's memory a run may plan to use


def optimizer_floats_per_param(cfg: SimConfig) -> int:
    """Floats of optimizer state per parameter (optax SGD: none; with momentum: one)."""
    return 1 if cfg.momentum_buffer else 0


def max_degree(cfg: SimConfig) -> int:
    """Width of the padded neighbour table the engine stores, in closed form for the built-in
    topologies (0 for the complete graph: its neighbours are computed, not stored; see
    `topology.neighbors`). Only a file's graph is read (and built) to size it; an unknown
    topology counts as complete (it is reported elsewhere)."""
    from divjax.network.topology import table_width

    try:
        return table_width(cfg)
    except Exception:  # noqa: BLE001  (an unknown or broken topology is reported elsewhere)
        return 0


# Bytes per message of a D-PSGD round's download ordering (`queues.sync_download_ticks`: the
# host edge list, then about a dozen int32 arrays of the messages and their sort on the device)
ROUND_MESSAGE_BYTES = 64


def pair_bytes(cfg: SimConfig) -> int:
    """Bytes of the per-pair (n x n) arrays a user's files bring: a latency_file's (n, n) int32
    latency table and a loss_file's (n, n) float32 probabilities on the device, a topology
    edge list's (n, n) bool adjacency on the host while the table is built; and D-PSGD with
    download limits on the complete graph, whose round sends n (n - 1) models, each ordered
    on its receiver's download link when the run is built. Nothing else in a run is per pair
    (the built-in topologies, regions and loss rates are O(n))."""
    n = cfg.n_nodes
    n2 = n * n
    round_messages = (n * (n - 1) if cfg.algorithm == "dpsgd" and cfg.topology == "complete"
                      and download_limited(cfg) else 0)
    return (4 * n2 * bool(cfg.latency_file) + 4 * n2 * bool(cfg.loss_file)
            + n2 * cfg.topology.startswith("file:") + ROUND_MESSAGE_BYTES * round_messages)


def task_data_bytes(task: Any) -> int:
    """Bytes of device arrays a task's functions close over (its data on the device).

    Walks the closures of the task's functions (and of functions they close over), counting
    each distinct jax.Array once.
    """
    seen_fn, seen_arr, total = set(), set(), 0
    stack = [getattr(task, name) for name in ("init", "loss", "sample_batch", "evaluate",
                                               "make_local_train")
             if getattr(task, name, None) is not None]
    while stack:
        obj = stack.pop()
        if isinstance(obj, jax.Array):
            if id(obj) not in seen_arr:
                seen_arr.add(id(obj))
                total += int(obj.nbytes)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if isinstance(obj, list | tuple):
            stack.extend(obj)
            continue
        fn = getattr(obj, "func", obj)  # functools.partial
        if callable(fn) and id(fn) not in seen_fn:
            seen_fn.add(id(fn))
            for cell in getattr(fn, "__closure__", None) or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    stack.append(cell.cell_contents)
            if fn is not obj:
                stack.extend(list(getattr(obj, "args", ())) +
                             list(getattr(obj, "keywords", {}).values()))
    return total


# SimState fields -> parts of the model; inbox fields named pending* are "pending", the rest
# of the inbox "ring", and every other field (counters, clocks, key) "counters".
STATE_FIELD_PARTS = {"params": "params", "opt_state": "optimizer", "algo_state": "algorithm"}
STATE_PARTS = ("params", "optimizer", "algorithm", "ring", "pending", "counters")


def abstract_state(cfg: SimConfig, layout: Any, ring_slots: int, train_capacity: int,
                   counter_ticks: int, algo: Any = None) -> Any:
    """The engine's initial `SimState` for `cfg`, as ShapeDtypeStructs (`jax.eval_shape`: no
    array is allocated, so it is cheap at any n).

    Built by the engine's own `state.initial_state`, with the algorithm's own `init`: the
    algorithm sees `cfg` with ring_ticks=ring_slots, train_capacity and delay_ticks =
    counter_ticks - 1 (the resolved values the engine would hand it).

    Args:
      layout: a FragmentLayout, or anything with K and F (and optionally D, fragment_bytes).
      algo: an Algorithm; default `make_algorithm(cfg)`.
    """
    from divjax.network import links as network
    from divjax.algorithms import Context, make_algorithm
    from divjax.engine.local import make_optimizer
    from divjax.engine.state import initial_state

    n, K, F = cfg.n_nodes, int(layout.K), int(layout.F)
    cfg = cfg.replace(ring_ticks=int(ring_slots), train_capacity=min(int(train_capacity), n),
                      delay_ticks=max(0, int(counter_ticks) - 1))
    if algo is None:
        algo = make_algorithm(cfg)
    fragment_bytes = np.asarray(getattr(layout, "fragment_bytes", np.full(K, F * F32)))
    hp = jax.eval_shape(lambda: default_hparams(cfg))  # shapes only (values never matter)

    def init(hp, neighbors, degree):  # the engine's own state builder, from zeros
        # (algo.adjust_timing changes timing values, never shapes: skipped, so that D-PSGD's
        # graph is not built just to size the state)
        table = network.link_table(cfg, hp, fragment_bytes)
        ctx = Context(cfg, layout, neighbors, degree, table)
        params = jnp.zeros((n, K, F), jnp.float32)
        return initial_state(cfg, algo, ctx, params, make_optimizer(cfg, hp),
                             int(counter_ticks), jax.random.key(0), jnp.zeros((), jnp.int32))

    width = max_degree(cfg)
    from divjax.network.topology import CompleteNeighbors

    table = (jax.ShapeDtypeStruct((n, width), jnp.int32) if width
             else CompleteNeighbors(n))   # a static pytree: no leaves, nothing allocated
    return jax.eval_shape(init, hp, table, jax.ShapeDtypeStruct((n,), jnp.int32))


def state_part_bytes(state: Any) -> dict:
    """Bytes of a (possibly abstract) SimState, by part of the memory model (STATE_PARTS)."""
    parts = dict.fromkeys(STATE_PARTS, 0)
    for name in state.__dataclass_fields__:
        value = getattr(state, name)
        if name == "inbox" and hasattr(value, "_fields"):
            for field in value._fields:
                part = "pending" if field.startswith("pending") else "ring"
                parts[part] += state_bytes(getattr(value, field))
        elif name == "inbox":
            parts["ring"] += state_bytes(value)
        else:
            parts[STATE_FIELD_PARTS.get(name, "counters")] += state_bytes(value)
    return parts


@functools.lru_cache(maxsize=256)
def _state_parts_cached(cfg: SimConfig, K: int, F: int, D: int, R: int, C: int,
                        Lc: int) -> tuple:
    layout = SimpleNamespace(K=K, F=F, D=D, fragment_bytes=np.full(K, F * F32, np.int64))
    return tuple(state_part_bytes(abstract_state(cfg, layout, R, C, Lc)).items())


def state_parts(cfg: SimConfig, K: int, F: int, D: int, ring_slots: int, train_capacity: int,
                counter_ticks: int, algo: Any = None) -> dict:
    """Bytes of the engine's state by part (`abstract_state`, cached per configuration)."""
    if algo is not None:  # a custom algorithm: not cached (it need not be hashable)
        layout = SimpleNamespace(K=K, F=F, D=D, fragment_bytes=np.full(K, F * F32, np.int64))
        return state_part_bytes(abstract_state(cfg, layout, ring_slots, train_capacity,
                                               counter_ticks, algo))
    return dict(_state_parts_cached(cfg, K, F, D, ring_slots, train_capacity, counter_ticks))


def memory_model(cfg: SimConfig, layout: Any, ring_slots: int | None = None,
                 train_capacity: int | None = None, data_bytes: int = 0,
                 activation_bytes: int = 0, counter_ticks: int | None = None,
                 available: int | None = None, algo: Any = None,
                 temporaries: int | None = None) -> dict:
    """Bytes a run needs, by part, in total and per node.

    Args:
      cfg: the config (n, K, delivery, optimizer, topology are read from it).
      layout: a FragmentLayout, or anything with K and F (or an int D: K = n_fragments,
        F = ceil(D / K)).
      ring_slots: R; default cfg.ring_ticks, else DEFAULT_RING_SLOTS.
      train_capacity: C; default cfg.train_capacity, else n (every node may finish together).
      data_bytes: the task's device data (see `task_data_bytes`), counted as it is.
      activation_bytes: temporary bytes of one node's local step beyond its parameters
        (activations); multiplied by C.
      counter_ticks: Lc; default cfg.delay_ticks + 1, else ring_slots + 1.
      available: device bytes; default `available_memory_bytes()`.
      algo: the Algorithm the engine runs; default `make_algorithm(cfg)`.
      temporaries: XLA's temporaries of one eval interval (`memory_temps.interval_temporaries`);
        they hold the training buffers, so "training" is then 0. None: not traced, the hand
        count of the training buffers instead.
    The state parts (STATE_PARTS) are the bytes of `abstract_state`: the engine's own initial
    state under jax.eval_shape, algorithm state included.
    Returns:
      {"parts": {name: bytes}, "total": bytes, "per_node": {name: bytes}, "fixed": bytes,
       "available": bytes, "budget": FRACTION * available, "fits": bool, "n": n, "K", "F", "D"}
    """
    n = cfg.n_nodes
    if isinstance(layout, int | np.integer):
        K = cfg.n_fragments
        F, D = math.ceil(int(layout) / K), int(layout)
    else:
        K, F, D = int(layout.K), int(layout.F), int(getattr(layout, "D", layout.K * layout.F))
    R = ring_slots if ring_slots is not None else (cfg.ring_ticks or DEFAULT_RING_SLOTS)
    C = train_capacity if train_capacity is not None else (cfg.train_capacity or n)
    Lc = counter_ticks if counter_ticks is not None else (
        cfg.delay_ticks + 1 if cfg.delay_ticks else R + 1)
    opt = optimizer_floats_per_param(cfg)
    model = K * F * F32
    parts = state_parts(cfg, K, F, D, R, C, Lc, algo)
    parts["neighbours"] = n * (max_degree(cfg) * F32 + F32)
    # gathered copies of the finishing nodes (params, trained, averaged, optimizer) for all C,
    # plus gradient and activations for the nodes trained at once (train_chunk of them)
    gathered = min(C, cfg.iteration_chunk) if cfg.iteration_chunk > 0 else C   # -1: not chosen yet
    at_once = min(gathered, cfg.train_chunk) if cfg.train_chunk else gathered
    # (+ the zeros block that clears the collected inbox entries, as large as the gathered set)
    parts["training"] = gathered * (4 + opt) * model + at_once * (model + int(activation_bytes))
    parts["hparams"] = hparams_bytes(cfg)
    parts["temporaries"] = 0
    if temporaries is not None:   # traced: the training buffers are among them
        parts["temporaries"], parts["training"] = int(temporaries), 0
    parts["data"] = int(data_bytes)
    parts["constants"] = int(data_bytes) * constant_copies()
    parts["pairs"] = pair_bytes(cfg)
    per_node = {k: v / n for k, v in parts.items()}
    total = int(sum(parts.values()))
    have = available_memory_bytes() if available is None else int(available)
    return {"parts": parts, "total": total, "per_node": per_node,
            "available": have, "budget": int(FRACTION * have), "fits": total <= FRACTION * have,
            "n": n, "K": K, "F": F, "D": D, "ring_slots": R, "train_capacity": C}


def hparams_bytes(cfg: SimConfig) -> int:
    """Bytes of one call's HParams (an argument of every compiled interval)."""
    return state_bytes(jax.eval_shape(lambda: default_hparams(cfg)))


def constant_copies() -> int:
    """Copies of a task's closed-over device arrays a compiled program adds: 0 for divjax's own
    programs, which `divjax.jit` hands the arrays as arguments (`divjax.engine.hoist`); 2 where
    they are embedded as constants (DIVJAX_EMBED_CONSTANTS=1, JAX 0.10's default for a plain
    `jax.jit`: measured 23.6 against 12.9 KB per node with them passed as arguments, for 5.1
    KB of data per node; issue 33)."""
    from divjax.engine import hoist

    hoisted = (hoist.enabled({})
               or getattr(jax.config, "jax_use_simplified_jaxpr_constants", False))
    return 0 if hoisted else 2


def state_bytes(state: Any) -> int:
    """Bytes of a (possibly abstract, e.g. from jax.eval_shape) state pytree."""
    total = 0
    for x in jax.tree.leaves(state):
        if not hasattr(x, "shape"):
            continue
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            total += int(np.prod(x.shape)) * 8  # a threefry key: two uint32
        else:
            total += int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
    return total


def compiled_memory(compiled: Any) -> dict:
    """XLA's buffer sizes of a compiled function (`jax.jit(f).lower(...).compile()`).

    peak_estimate = arguments + outputs + temporaries - aliased (donated) bytes; on backends
    without the analysis, the dict is empty."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return {}
    if m is None:
        return {}
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["peak_estimate"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def available_memory_bytes() -> int:
    """Memory of the default device: the accelerator's limit, or the host's RAM on CPU."""
    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001  (CPU backends may not implement it)
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError):
        return 1 << 40


CAVEAT_TRACED = (
    "  (the state, the HParams, the task's data, and XLA's temporaries of one eval interval "
    "traced from its jaxpr with one copy of the carried state (memory_temps): 1.0-1.7x XLA's "
    "own figure for the built-in algorithms and tasks, tests/test_memory_temps.py; with "
    "DIVJAX_EMBED_CONSTANTS=1, the data's two extra copies as constants (measured). Not "
    "counted: XLA's runtime "
    "and compiler memory, a few hundred MB per process; a run checks XLA's own figure before "
    "it starts)")
CAVEAT_STATE = (
    "  (the arrays the engine keeps and the training buffers, counted by hand; XLA's "
    "temporaries come on top: the dry run traces them; a run checks XLA's own figure before "
    "it starts)")


def format_model(m: dict) -> str:
    """Human-readable summary (what `divjax run --dry-run` prints)."""
    gib = lambda b: f"{b / 2**30:.3f} GiB"  # noqa: E731
    lines = [f"memory for n={m['n']} nodes, K={m['K']} fragments of F={m['F']} floats "
             f"(D={m['D']}), ring slots={m['ring_slots']}, training capacity="
             f"{m['train_capacity']}:"]
    for k, v in m["parts"].items():
        if v:
            lines.append(f"  {k:<11} {gib(v):>12}   {m['per_node'][k] / 2**10:10.1f} KiB/node")
    lines.append(f"  {'total':<11} {gib(m['total']):>12}   of {gib(m['available'])} "
                 f"({'fits' if m['fits'] else 'does NOT fit'} in {FRACTION:.0%})")
    lines.append(CAVEAT_TRACED if m["parts"].get("temporaries") else CAVEAT_STATE)
    return "\n".join(lines)
