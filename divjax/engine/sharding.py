"""The node axis sharded across devices: one run (or a sweep) on every device JAX sees.

Every per-node array of the state (the models, optimizer state, the ring buffer, the counters)
is split along its node axis over a one-dimensional `Mesh` named "nodes"; everything else
(the clock, keys, error flags, and hyperparameters) is replicated. The engine code is unchanged:
`jax.lax.with_sharding_constraint` pins the state's layout after `init` and after each eval
interval, and XLA's SPMD partitioner splits the tick (gathers of the finishing nodes, their
training, the scatter of their fragments into the receivers' ring slots) and inserts the
collectives. Random numbers are drawn from the same keys, so a sharded run gives the same
results as a run on one device (tests/test_sharding.py).

    >>> run = make_sharded_run(cfg, hp=hp)             # all of jax.devices()
    >>> state, metrics = jax.jit(run)(jax.random.key(0), hp)

On several hosts (or several processes on one host), call `initialize_distributed(...)` (which
is `jax.distributed.initialize`, with gloo collectives for CPU devices) first in every process;
`jax.devices()` then lists the devices of all processes and the same code shards over them. Every
process builds the same config, key and data and calls the run; `fetch` gathers the results to
host memory on every process (scripts/distributed_run.py, tests/test_distributed.py,
docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from divjax.config import HParams, SimConfig, default_hparams
from divjax.engine.sim import make_run
from divjax.engine.xla_options import copy_tags, jit

AXIS = "nodes"

# Node axis of each SimState field (field path -> axis); other per-node leaves (optimizer and
# algorithm state) put the node axis first.
_NODE_AXIS = {
    "params": 0,
    "inbox.total": 1, "inbox.count": 1, "inbox.pending_total": 0, "inbox.pending_count": 0,
    "counters.ring_sent": 1, "counters.ring_dropped": 1, "counters.ring_delivered": 1,
    "counters.ring_replaced": 1,
    "counters.sent": 0, "counters.dropped": 0, "counters.delivered": 0, "counters.replaced": 0,
    "next_end": 0, "iterations": 0,
}
_REPLICATED = ("errors", "first_error_tick", "first_error_node", "t", "k_sim", "inbox.clear_slot", "inbox.clear_node")


def node_mesh(devices: list | None = None) -> Mesh:
    """A one-dimensional mesh named "nodes" over `devices` (default: all of jax.devices())."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def _path_name(path) -> str:
    parts = []
    for p in path:
        name = getattr(p, "name", None)
        if name is None:
            name = getattr(p, "key", None)
        if name is None:
            name = getattr(p, "idx", "?")
        parts.append(str(name))
    return ".".join(parts)


def state_specs(state_shapes: Any, n: int, n_devices: int) -> Any:
    """A PartitionSpec for every leaf of a SimState (concrete or from jax.eval_shape).

    A leaf is split along its node axis when that axis has length n and n is a multiple of the
    number of devices; anything else is replicated.
    """

    def spec(path, leaf):
        name = _path_name(path)
        shape = getattr(leaf, "shape", ())
        if name in _REPLICATED or n % n_devices:
            return PartitionSpec()
        axis = _NODE_AXIS.get(name)
        if axis is None:  # optimizer / algorithm state: node axis first, if any
            axis = 0
        if len(shape) <= axis or shape[axis] != n:
            return PartitionSpec()
        return PartitionSpec(*([None] * axis + [AXIS]))

    return jax.tree_util.tree_map_with_path(spec, state_shapes)


def state_shardings(engine, hp: HParams, mesh: Mesh) -> Any:
    """NamedShardings of the engine's SimState on `mesh`."""
    shapes = jax.eval_shape(engine.init, jax.random.key(0), hp)
    specs = state_specs(shapes, engine.cfg.n_nodes, mesh.size)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def make_sharded_run(cfg: SimConfig, task=None, algo=None, hp: HParams | None = None,
                     mesh: Mesh | None = None, exact_metrics: bool = True) -> Callable:
    """`make_run` with the state's node axis sharded over `mesh` (default: every device).

    Returns run(key, hp) -> (state, metrics), pure like make_run's: jit it, vmap it over seeds
    or hyperparameters (the sweep axis is replicated, the node axis stays split).

    The state (models, ring, counters) is bit-identical to a one-device run. Metrics are too
    with `exact_metrics=True`: the models are gathered onto every device once per eval interval
    and evaluated there exactly as on one device (XLA may pick other CPU kernels for a shard of
    the nodes, and sums over nodes would be reduced in another order). `exact_metrics=False`
    evaluates each node where it lives (less work per device; metrics equal to ~1e-6 relative).
    """
    hp = default_hparams(cfg) if hp is None else hp
    base = make_run(cfg, task, algo, hp)
    engine = base.engine
    mesh = node_mesh() if mesh is None else mesh
    shardings = state_shardings(engine, hp, mesh)
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), shardings)

    def constrain(state):
        return jax.lax.with_sharding_constraint(state, shardings)

    def run(key, hp):
        state = constrain(engine.init(key, hp))

        def body(s, _):
            s, metrics = engine.advance(s, hp)
            s = constrain(s)
            if exact_metrics:  # the advance's own metrics are then dead code (removed by XLA)
                metrics = engine.evaluate(jax.lax.with_sharding_constraint(s, replicated))
            return s, metrics

        return jax.lax.scan(body, state, None, length=engine.cfg.num_chunks)

    run.engine = engine
    copy_tags(run, base)   # its XLA options (divjax.jit)
    run.mesh = mesh
    run.shardings = shardings
    return run


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           cpu_collectives: str = "gloo", **kwargs) -> None:
    """`jax.distributed.initialize` for a run over several processes; call it in every process
    before anything else touches JAX (before the first jax.devices() or array).

    CPU devices need a collectives implementation to talk across processes: `cpu_collectives`
    ("gloo", or "mpi"; None leaves JAX's setting) is set first. GPU and TPU devices use their own
    (NCCL, ICI) and ignore it. Arguments left None are detected by JAX on SLURM, Open MPI and
    TPU pods. Each process then sees all processes' devices in jax.devices() and its own in
    jax.local_devices().
    """
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id, **kwargs)


def fetch(tree: Any) -> Any:
    """Host (numpy) copy of a tree of arrays, on every process.

    In a one-process run this is jax.device_get. An array that spans several processes (the
    sharded state, or any output XLA left split) is all-gathered first with
    jax.experimental.multihost_utils.process_allgather: a collective, so every process must call
    fetch on the same tree, in the same order.
    """
    from jax.experimental import multihost_utils

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:  # every process holds the whole value
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(get, tree)


def shard_state(state: Any, shardings: Any) -> Any:
    """Place a concrete state (e.g. a loaded checkpoint) with the given shardings."""
    return jax.device_put(state, shardings)


def make_sharded_advance(engine, hp: HParams, mesh: Mesh | None = None) -> Callable:
    """A jitted `engine.advance` with the state sharded in and out and donated, for the
    chunked Python driver (cf. sim.simulate)."""
    mesh = node_mesh() if mesh is None else mesh
    sh = state_shardings(engine, hp, mesh)
    rep = NamedSharding(mesh, PartitionSpec())
    return jit(engine.advance, in_shardings=(sh, rep), out_shardings=(sh, rep), donate_argnums=0)
