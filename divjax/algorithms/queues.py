"""Link timing shared by the baselines: appended (never replaced) queues and synchronous rounds.

Appended queue (Swift, AD-PSGD). Every node keeps `link_free[i]`, the absolute link sub-tick at
which its link has sent everything queued so far. Messages queued at tick t start at
max(link_free, t * R) (R = cfg.link_resolution), one after another; nothing is ever dropped.
A full model takes `model_units[i] = sum_k msg_units[i, k]` sub-ticks on node i's link (each
fragment's time is rounded up to a sub-tick on its own, as for DivShare, so a model costs at most
K sub-ticks more than bytes / bandwidth). A message whose link time ends at or after the end of
the run (tick T = cfg.num_ticks) is never sent within the run: it is neither scattered nor
counted, and `link_free` is clamped to T * R, which changes nothing inside the run but keeps the
int32 link clock from overflowing on a link whose queue grows without bound.

A full-model message is pushed as K fragments through `messages.push`'s (C, J, K) layout, the
receiver broadcast across K: so the counters count fragments (`counters.sent[i, k]` counts the
models of node i that have fully left its link once per fragment k; bytes are exact).

Synchronous rounds (D-PSGD, Epidemic Learning): every node's round lasts as long as the slowest
node computes, plus the time the slowest link needs to send all of its node's models of the round
one after another plus the largest latency, rounded up to a tick once (`sync_round_timing`);
with download limits (D-PSGD), at least until the last model of the round is received.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.network.compute_schedule import has_offline, is_offline, shortest_ticks, stop_tick
from divjax.config import ConfigError, SimConfig
from divjax.network.downloads import fifo_deliveries
from divjax.network.messages import push
from divjax.network.links import (
    LinkTable,
    Schedule,
    arrival_tick,
    latency_bounds_units,
    pair_latency_units,
    units_at,
)
from divjax.engine.state import ERR_RING_TOO_SHORT, flag_error


class QueueState(NamedTuple):
    """Per-node appended-queue bookkeeping (leaves (n,) int32)."""

    link_free: jax.Array  # (n,) int32: absolute link sub-tick when the queue is empty (<= T*R)
    enqueued: jax.Array   # (n,) int32: full-model messages ever queued by the node


def init_queue_state(n: int) -> QueueState:
    z = jnp.zeros((n,), jnp.int32)
    return QueueState(z, z)


def queue_stop(cfg: SimConfig, table: LinkTable, node: jax.Array, t: jax.Array
               ) -> jax.Array | None:
    """(C,) int32: the tick at which nodes that queue at tick t (online then) drop their queue
    when they next go offline (churn, a trace; at most the run's end T); None when no node
    goes offline."""
    if not has_offline(cfg):
        return None
    return stop_tick(table, jnp.minimum(node, cfg.n_nodes - 1), t, jnp.int32(cfg.num_ticks))


def lost_or_offline(cfg: SimConfig, table: LinkTable, lost: jax.Array | None,
                    receiver: jax.Array, arrival: jax.Array) -> jax.Array | None:
    """`lost` (or None), and with churn (or a trace's offline rows) also the messages that
    arrive at an offline node."""
    if not has_offline(cfg):
        return lost
    offline = is_offline(table, jnp.minimum(receiver, cfg.n_nodes - 1), arrival)
    return offline if lost is None else lost | offline


def model_units(table: LinkTable) -> jax.Array:
    """(..., n) link sub-ticks a full model takes on every node's link."""
    return jnp.sum(table.msg_units, axis=-1)


def queued_model_units(table: LinkTable, sender: jax.Array, t: jax.Array) -> jax.Array:
    """(C,) link sub-ticks of a full model the C `sender`s queue at tick t (() or (C,)): at the
    upload in force then (a trace's row, `network.units_at`; `model_units` when constant)."""
    return jnp.sum(units_at(table, sender, t), axis=-1)


def slowest_model_units(table: LinkTable) -> np.ndarray:
    """(..., n) host: the most sub-ticks a full model can take on every node's link (its
    slowest trace row when a trace changes its upload): bounds for the queue sizing."""
    U = np.asarray(model_units(table), np.int64)
    if table.seg_units is not None:
        U = np.maximum(U, np.asarray(table.seg_units, np.int64).sum(-1).max(-1))
    return U


def schedule_appended_queue(cfg: SimConfig, table: LinkTable, link_free: jax.Array,
                            sender: jax.Array, active: jax.Array, position: jax.Array,
                            t: jax.Array, K: int, receiver: jax.Array,
                            stop: jax.Array | None = None) -> Schedule:
    """Timing of full-model messages appended at tick t to the queues of C senders.

    Args:
      link_free: (n,) int32, every link's current end of queue (sub-ticks).
      sender: (C,) int32; active: (C, J) bool, which messages exist;
      position: (C, J) int32, each message's place among the messages appended now (0-based);
      receiver: (C, J) int32, their receivers (for the pair's latency; padding may be n);
      stop: optional (C,) int32, the tick the sender's queue is dropped (churn: it goes
        offline; `compute_schedule.stop_tick`): a message is sent only if it has fully left the
        link by then (at or before sub-tick stop * R).
    Returns: a Schedule with (C, J, K) fields (the K fragments of one message leave together);
      drop_tick is `stop` (t without it: nothing is dropped). The new end of queue is
      `appended_link_free`.
    """
    R, T = cfg.link_resolution, cfg.num_ticks
    safe = jnp.minimum(sender, table.compute_ticks.shape[0] - 1)
    units = queued_model_units(table, safe, t)[:, None]                     # (C, 1)
    start = jnp.maximum(link_free[safe], t * R)[:, None]
    leave_sub = start + (position + 1) * units                              # (C, J)
    leave_tick = (leave_sub + R - 1) // R
    sent = active & (leave_tick < T)
    if stop is not None:
        sent = sent & (leave_sub <= jnp.minimum(stop, T)[:, None] * R)
    n = table.compute_ticks.shape[0]
    lat = pair_latency_units(table, safe[:, None], jnp.minimum(receiver, n - 1))
    arrival = arrival_tick(leave_sub, lat, R)
    wide = lambda x: jnp.broadcast_to(x[..., None], x.shape + (K,))  # noqa: E731
    enq = jnp.broadcast_to(t, safe.shape)
    return Schedule(wide(sent), wide(leave_tick), wide(arrival),
                    enq if stop is None else stop, enq, wide(leave_sub + lat))


def appended_link_free(cfg: SimConfig, table: LinkTable, link_free: jax.Array,
                       sender: jax.Array, valid: jax.Array, count: jax.Array,
                       t: jax.Array, stop: jax.Array | None = None) -> jax.Array:
    """link_free after C senders (valid) appended `count` (C,) full models at tick t; with
    `stop` (C,) (churn) the queue is dropped at that tick, so it ends by stop * R at the
    latest (the next append, after the node is back online, starts on an empty link)."""
    R, T, n = cfg.link_resolution, cfg.num_ticks, link_free.shape[0]
    safe = jnp.minimum(sender, n - 1)
    start = jnp.maximum(link_free[safe], t * R)
    end = T if stop is None else jnp.minimum(stop, T)
    new = jnp.minimum(start + count * queued_model_units(table, safe, t), end * R)
    return link_free.at[jnp.where(valid, sender, n)].set(new.astype(jnp.int32), mode="drop")


def check_link_clock(cfg: SimConfig, table: LinkTable, per_enqueue: int) -> None:
    """Host check: the absolute int32 link clock of an appended queue cannot overflow."""
    U = int(np.max(slowest_model_units(table)))
    if (cfg.num_ticks + 1) * cfg.link_resolution + max(1, per_enqueue) * U >= 2**31 - 1:
        raise ConfigError(
            f"num_ticks * link_resolution = {cfg.num_ticks} * {cfg.link_resolution} is too "
            f"large for the int32 link clock of an appended queue: lower --link-resolution "
            f"or --duration-s, or raise --tick-s")


def appended_queue_longest_delay(cfg: SimConfig, table: LinkTable, per_iteration: int) -> int:
    """Exact longest enqueue-to-arrival delay (ticks) of messages sent within the run when
    every node appends `per_iteration` full models at each of its iteration ends (Swift).

    The schedule is deterministic (fixed compute times and sizes): with S = per_iteration * U,
    (with latency regions, each sender's largest latency: then an upper bound)
    the end of queue after the m-th iteration end t_m = (m+1) c is
    free_m = (m+1) S + max_{j<=m} (t_j R - j S). Host side, numpy.
    """
    check_link_clock(cfg, table, per_iteration)
    R, T = cfg.link_resolution, cfg.num_ticks
    # with compute jitter every iteration as short as it can be: the most models queued, so
    # an upper bound (free_m - t_m R is largest when the ends are closest)
    c_all = np.asarray(shortest_ticks(cfg, np.asarray(table.compute_ticks)), np.int64)
    n = c_all.shape[-1]
    c_all = c_all.reshape(-1, n)
    lat_all = np.asarray(latency_bounds_units(table)[1], np.int64).reshape(-1, n)
    U_all = slowest_model_units(table).reshape(-1, n)   # (a slower upload: later leaves)
    worst = 1
    if per_iteration == 0:
        return worst
    for c_row, lat_row, U_row in zip(c_all, lat_all, U_all, strict=True):
        for c, lat, U in zip(c_row, lat_row, U_row, strict=True):
            ends = np.arange(c, T, c)                       # iteration end ticks within the run
            if ends.size == 0:
                continue
            m = np.arange(ends.size)
            S = per_iteration * U
            free = (m + 1) * S + np.maximum.accumulate(ends * R - m * S)
            start = free - S
            # the last message of batch m that still leaves the link before tick T
            q_last = np.minimum(per_iteration - 1, ((T - 1) * R - start) // U - 1)
            ok = q_last >= 0
            if not ok.any():
                continue
            arrive = -(-(start[ok] + (q_last[ok] + 1) * U + lat) // R)
            worst = max(worst, int(np.max(arrive - ends[ok])))
    return worst


def sync_round_timing(cfg: SimConfig, table: LinkTable, sends: np.ndarray,
                      edges: tuple[np.ndarray, np.ndarray] | None = None) -> LinkTable:
    """Give every node the same round: slowest compute + (slowest link sending `sends[i]` full
    models of node i one after another + largest latency, in link sub-ticks, rounded up to a
    tick once). With download limits and the round's `edges` ((sender, receiver) (E,), sorted
    by sender then receiver: `topology.edges`), the exchange lasts at least until the last
    model is received (`sync_download_ticks`). Works on traced and host tables (leaves may
    carry leading sweep axes)."""
    c = jnp.asarray(table.compute_ticks)
    U = model_units(table)
    comm_sub = jnp.max(jnp.asarray(sends, jnp.int32) * U, axis=-1)
    lat = jnp.max(latency_bounds_units(table)[1], axis=-1)
    comm = arrival_tick(comm_sub, jnp.where(comm_sub > 0, lat, 0), cfg.link_resolution)
    if table.down_units is not None and edges is not None:
        lead = c.ndim - 1
        if lead == 0:
            comm = jnp.maximum(comm, sync_download_ticks(cfg, table, edges))
        else:   # host tables of a sweep: one round per point
            flat = jax.tree.map(lambda x: jnp.reshape(x, (-1,) + x.shape[lead:]), table)
            down = jax.vmap(lambda tb: sync_download_ticks(cfg, tb, edges))(flat)
            comm = jnp.maximum(comm, down.reshape(c.shape[:lead]))
    round_ticks = jnp.max(c, axis=-1) + comm
    return table._replace(
        compute_ticks=jnp.broadcast_to(round_ticks[..., None], c.shape).astype(jnp.int32))


def sync_download_ticks(cfg: SimConfig, table: LinkTable,
                        edges: tuple[np.ndarray, np.ndarray]) -> jax.Array:
    """() int32 ticks from the start of a round's exchange until every download link has
    received all of the round's models (one table, no sweep axes). Node i sends its model to
    its receivers r (`edges`: (sender, receiver), sorted by sender then receiver) one after
    another in increasing r (the m-th has left its link at (m + 1) U_i sub-ticks); each
    reaches r after the pair's latency and waits on r's download link, served first come first
    served (`downloads.fifo_deliveries`, rounded up to a tick once)."""
    sender, receiver = (np.asarray(x, np.int32) for x in edges)
    if sender.size == 0:
        return jnp.int32(0)
    first = np.searchsorted(sender, sender)               # each sender's first message
    position = np.arange(sender.size, dtype=np.int32) - first.astype(np.int32)
    avail = ((position + 1) * model_units(table)[sender]
             + pair_latency_units(table, sender, receiver))
    units = jnp.sum(table.down_units, axis=-1)[receiver]
    never = jnp.full(sender.shape, jnp.iinfo(jnp.int32).max, jnp.int32)
    ticks = fifo_deliveries(jnp.asarray(receiver), avail, never, units, jnp.asarray(sender),
                            cfg.link_resolution, table.compute_ticks.shape[-1])
    return jnp.max(ticks)


def send_full_models(ctx, state, link_free: jax.Array, node: jax.Array, valid: jax.Array,
                     recv: jax.Array, payload: jax.Array, t: jax.Array,
                     replaced_fn: Callable | None = None, lost: jax.Array | None = None,
                     stop: jax.Array | None = None,
                     delivery: tuple[jax.Array, jax.Array] | None = None):
    """Append one full-model message per receiver recv[c, j] to each sender's queue, scatter
    them into the ring (as K fragments each) and time the counters.

    Args:
      ctx: the algorithm Context; state: SimState; link_free: (n,) int32;
      node, valid: (C,); recv: (C, J) int32 receivers in queue order; payload: (C, K, F);
      replaced_fn: optional, Schedule (C, J, K) -> (C, J) bool, the messages a newer one from
        the same sender replaces in the receiver's inbox (inbox "latest"; see messages.push);
      lost: optional (C, J) bool, the messages lost on the way (`network.message_lost`); with
        churn, those that arrive at an offline receiver are lost too;
      stop: optional (C,) int32, the tick each sender goes offline and drops its queue (churn):
        what has not fully left its link by then is dropped, counted in `dropped` then (per
        fragment) if that is within the run;
      delivery: optional ((C, J) int32 delivery tick, (C, J) bool lost on a download link),
        with download limits (`divjax.network.downloads`): a message that reaches its receiver's
        download link joins the inbox at that tick instead of its upload arrival (one that
        reaches an offline receiver is lost as without limits); a tick at or after the run's
        end is taken as T (never read within the run).
    Returns: (state with inbox, counters and error flags updated, the Schedule (C, J, K)).
    """
    C, J = recv.shape
    K = payload.shape[1]
    position = jnp.broadcast_to(jnp.arange(J, dtype=jnp.int32), (C, J))
    active = jnp.broadcast_to(valid[:, None], (C, J))
    sched = schedule_appended_queue(ctx.cfg, ctx.table, link_free, node, active, position, t, K,
                                    recv, stop)
    # dropped: the messages not sent when the sender goes offline within the run (without it,
    # only the run's end keeps a message unsent: not a drop)
    dropping = jnp.zeros_like(valid) if stop is None else valid & (stop < ctx.cfg.num_ticks)
    lost = lost_or_offline(ctx.cfg, ctx.table, lost, recv, sched.arrival[..., 0])
    if delivery is not None:   # the download links' FIFO: delivered later, or lost there
        tick, down_lost = delivery
        tick = jnp.minimum(tick, ctx.cfg.num_ticks)
        sched = sched._replace(arrival=jnp.broadcast_to(tick[..., None], (C, J, K)))
        down_lost = down_lost & sched.sent[..., 0]
        lost = down_lost if lost is None else lost | down_lost
    replaced = None
    if replaced_fn is not None:   # a lost message is never in an inbox to be replaced
        rep = replaced_fn(sched)
        replaced = jnp.broadcast_to((rep if lost is None else rep & ~lost)[..., None],
                                    (C, J, K))
    inbox, counters, too_late = push(
        ctx.cfg, state.inbox, state.counters, ctx.table, sched, node, dropping,
        jnp.broadcast_to(recv[..., None], (C, J, K)), payload, replaced,
        None if lost is None else jnp.broadcast_to(lost[..., None], (C, J, K)))
    state = state.replace(inbox=inbox, counters=counters)
    return flag_error(state, jnp.where(too_late, ERR_RING_TOO_SHORT, 0), t), sched
