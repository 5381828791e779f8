"""Host-side sizing and checks of a run, before anything is allocated or compiled.

`resolve` checks the network of an HParams, sizes the delay rings (`network.ring_slots_needed`
and the algorithm's `longest_delay`), the training capacity and the algorithm's own fields, and
refuses a state that does not fit the device (`memory_model`, derived from the engine's own
state under `jax.eval_shape`), with the fixes that apply (`memory_advice`). `model_layout` is the
fixed fragment partition of a task's model.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from divjax import network
from divjax.algorithms import Algorithm
from divjax.compute_schedule import has_table, longest_ticks, slots_needed
from divjax.config import ConfigError, HParams, SimConfig
from divjax.config_checks import check_link_clock
from divjax.flat import FragmentLayout, make_layout
from divjax.memory import available_memory_bytes, compiled_memory, memory_model
from divjax.tasks import Task


def model_layout(cfg: SimConfig, task: Task) -> FragmentLayout:
    """The fixed fragment partition of the task's model (shapes only; no training)."""
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return make_layout(template, cfg.n_fragments, cfg.fragment_seed)


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
    check_link_clock(cfg, hp, layout.fragment_bytes)   # names the flags, before compiling
    table = network.concrete_link_table(cfg, hp, layout.fragment_bytes)
    if algo is not None and algo.adjust_timing is not None:
        table = algo.adjust_timing(cfg, table)
    longest = longest_ticks(cfg, np.asarray(table.compute_ticks))
    if np.max(longest) * cfg.link_resolution >= 2**30:
        raise ConfigError(
            f"compute_s / tick_s * link_resolution is too large for the int32 link clock: "
            f"raise tick_s={cfg.tick_s} or lower link_resolution={cfg.link_resolution}")
    if np.max(table.msg_units) >= 2**30 // max(1, cfg.messages_per_iteration):
        raise ConfigError("a message takes too long on the slowest link for the int32 link clock: "
                          "raise the bandwidth or tick_s, or lower link_resolution")
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
    from divjax.compute_schedule import check_churn_clock  # also on every build
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


def auto_iteration_chunk(capacity: int, mean_finishers: float) -> int:
    """`iteration_chunk` for -1 (auto): 0 (every finishing node at once, in a gather padded to
    `capacity`) when nodes finish together, as with equal compute times; else the smallest
    power of two >= the mean number of nodes finishing at a tick, so that a tick trains about
    the nodes that finish instead of `capacity` padded rows (compute spread or jitter: nodes
    finish at many different ticks). Counters, iterations and the schedule do not depend on
    it; parameters only to float rounding (the inbox sums are added in another order)."""
    if capacity <= 2 or 2 * mean_finishers > capacity:
        return 0
    return 1 << max(0, math.ceil(math.log2(max(1.0, mean_finishers))))


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
