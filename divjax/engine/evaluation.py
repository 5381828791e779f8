"""What a run reports at the end of each evaluation interval (the metrics columns).

`evaluate(spec, state)`: the task's metrics of every node's own model (mean, min, max over
nodes) and of the average model, the consensus distance, and the message counters, as the
engine (`divjax.engine.sim`) computes them under jit. `spec` is the engine's `sim.EngineSpec`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from divjax.engine.flat import FragmentLayout
from divjax.engine.local import loop_over_nodes
from divjax.tasks.base import Task


def flat_evaluator(task: Task, layout: FragmentLayout) -> Callable:
    """evaluate(params (K, F), node) -> metrics dict, on the flat fragment array."""
    if task.make_flat_evaluate is not None:
        return task.make_flat_evaluate(layout)
    return lambda p, node: task.evaluate(layout.unflatten(p), node)


def evaluate(spec, state) -> dict:
    """Metrics of every node model and of their average, consensus and the counters."""
    cfg, task, layout, n = spec.cfg, spec.task, spec.layout, spec.cfg.n_nodes
    evaluate_flat = flat_evaluator(task, layout)
    real = jnp.asarray(layout.real_mask())
    params = state.params
    avg = jnp.mean(params, axis=0)

    def one_node(a):  # metrics and squared distance to the average, eval_chunk at a time
        p, node = a
        return evaluate_flat(p, node), jnp.sum(jnp.where(real, p - avg, 0.0) ** 2)

    nodes = (params, jnp.arange(n, dtype=jnp.int32))
    if loop_over_nodes(layout):  # per-node convolutions under vmap are grouped: slow on CPU
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
    frag_bytes = jnp.asarray(layout.fragment_bytes, jnp.float32)
    out["bytes_sent"] = jnp.sum(c.sent.astype(jnp.float32) * frag_bytes)
    out["msgs_sent"] = jnp.sum(c.sent).astype(jnp.float32)
    out["msgs_delivered"] = jnp.sum(c.delivered).astype(jnp.float32)
    out["msgs_dropped"] = jnp.sum(c.dropped).astype(jnp.float32)
    out["msgs_replaced"] = jnp.sum(c.replaced).astype(jnp.float32)
    out["msgs_lost"] = jnp.sum(c.lost).astype(jnp.float32)
    # the run's ERR_* flags so far (0 = none): a jitted make_run cannot raise, so check
    # this metric, or call divjax.check_state(state, cfg) on the final state
    out["errors"] = state.errors.astype(jnp.float32)
    out["iterations_mean"] = jnp.mean(state.iterations.astype(jnp.float32))
    out["node"] = {name: per_node[name] for name in task.metric_names}
    return out
