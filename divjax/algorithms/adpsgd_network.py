"""AD-PSGD's network alone: its random draws, its sizes, and with download limits (issue 18,
`divjax.network.downloads`) a pre-pass that replays every ping and pong of the run at init.

Why a pre-pass. A node answers each ping with a pong at the tick the ping is *received*, so with
download limits a pong's enqueue tick depends on the receiver's download FIFO, which holds pongs
too: upload timing and downloads are coupled, and no message's delivery can be computed when it
is pushed. Everything is still a function of the run's key only (routes, losses, iteration
ends, churn), never of the models, so `download_table` replays the network tick by tick, as the
engine would, before training: at tick t
  1. every download link serves, first come first served by the sub-tick they reach it (ties:
     smaller sender, then the message sent first), the messages that reach it in tick t
     (ceil(reach / R) == t; every message queued at t leaves its link after t R, so all of
     them are known by then), one after another from the sub-tick the link is free, each
     taking `down_units[r].sum()` sub-ticks; a message received in full by sub-tick `done` is
     delivered at tick ceil(done / R), one not received by its deadline is lost at the
     deadline's tick (`downloads.fifo_deliveries`' rule; deadlines as Swift's: the sender's
     going offline, or the end of the run, plus the latency, and a receiver going offline at s
     must have it by (s - 1) R);
  2. the pings delivered at t are answered: each responder appends one pong per ping, in
     increasing order of the pinging node (m-th pong: position m, `pong_lost` draw m), as the
     engine's `on_tick` does;
  3. the nodes ending an iteration at t append fanout // 2 pings (`adpsgd_routes`,
     `message_lost` from the tick's keys), as the engine's `iteration_end` does.
Links are served in parallel, one message per link per round; the pongs likewise, one per
responder per round. Each message carries its sender's queue index (`queue.enqueued` before
its append plus its position), and the result is every message's `downloads` code stored
sender-major: message q of node i at `codes[start[i] + q]` (`delivery_of`). A message that
never reaches a download link (not sent, lost on the way, reaching an offline node) holds its
upload arrival tick; one still queued at the end of the run holds T (never read within it).
Memory: 2 n S p entries (S = iteration_slots, p = fanout // 2), as many pongs as pings at most.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax.algorithms.queues import (
    appended_link_free,
    model_units,
    queue_stop,
    schedule_appended_queue,
)
from divjax.network.compute_schedule import (
    end_tick,
    longest_ticks,
    shortest_ticks,
)
from divjax.config import SimConfig, download_limited
from divjax.network.downloads import decode, reach_download_link, take_one
from divjax.network.links import message_lost
from divjax.engine.state import tick_keys

PONG_STREAM = 2**31 - 1   # fold_in constant of the pongs' loss draws (the spare key's stream)


def pong_lost(cfg: SimConfig, k_spare: jax.Array, responder: jax.Array, m: jax.Array,
              target: jax.Array) -> jax.Array | None:
    """(B,) bool: whether the m-th pong each of B `responder`s queues at a tick (to `target`
    (B,)) is lost, from the tick's spare key (a stream apart from the pings': fold_in
    PONG_STREAM, then m, then the responder). None without loss."""
    return message_lost(cfg, jax.random.fold_in(jax.random.fold_in(k_spare, PONG_STREAM), m),
                        responder, (), target)


def adpsgd_routes(key: jax.Array, node: jax.Array, neighbors: jax.Array, degree: jax.Array,
                  p: int) -> jax.Array:
    """(p,) int32 neighbours of `node` drawn uniformly WITH replacement, in queue order."""
    idx = jax.random.randint(jax.random.fold_in(key, node), (p,), 0, degree[node])
    return neighbors[node][idx]


def history_depth(cfg: SimConfig, table) -> int:
    """Snapshots per node that the "latest" rule needs (host side, numpy table).

    Two models of one sender in one inbox window of receiver r arrive less than c_r ticks apart;
    on a FIFO link the models queued between them leave in that time, so at most
    c_r R / (p U) iterations (p pings of U sub-ticks each) separate their snapshots; and their
    enqueue times are less than c_r + the longest delay apart. Both bounds, the smaller per
    sender, plus the snapshot being written. With download limits a download queue may bunch
    deliveries (the link's spacing is lost): only the second bound holds.
    """
    p = max(1, cfg.fanout // 2)
    n = cfg.n_nodes
    c0 = np.asarray(table.compute_ticks, np.int64)   # with compute jitter: the bounds
    c = np.asarray(shortest_ticks(cfg, c0), np.int64).reshape(-1, n)
    U = np.asarray(model_units(table), np.int64).reshape(-1, n)
    c_max = np.asarray(longest_ticks(cfg, c0), np.int64).reshape(-1, n).max(1, keepdims=True)
    fifo = c_max * cfg.link_resolution // (p * U) + 2
    timed = -(-(c_max + cfg.delay_ticks) // c) + 1
    bound = timed if download_limited(cfg) else np.minimum(fifo, timed)
    return int(np.clip(np.max(bound) + 1, 2, 64))


def ping_slots_needed(cfg: SimConfig, table) -> int:
    """Entries of each node's ping table (host side, numpy table): `fanout // 2` pings per
    iteration end, and an entry matters until its ping arrives (with download limits: is
    delivered, or taken as T), at most `delay_ticks` after its iteration end; with the "latest"
    rule until the receiver of its pong, queued when the ping arrives, has aggregated it: at
    most 2 delay_ticks + the longest iteration after. So the pings of at most window // c_min + 1
    iteration ends matter at once, and never more than the run has (T - 1) // c_min: a table
    of every ping of the run is never written over."""
    p = max(1, cfg.fanout // 2)
    c0 = np.asarray(table.compute_ticks)
    c_min = int(np.min(shortest_ticks(cfg, c0)))
    window = cfg.delay_ticks
    if cfg.inbox == "latest":
        window = 2 * cfg.delay_ticks + int(np.max(longest_ticks(cfg, c0)))
    return p * max(1, min(window // c_min + 1, (cfg.num_ticks - 1) // c_min))


class Messages(NamedTuple):
    """The run's pings and pongs, in the order they are queued (leaves (M,) int32 / bool)."""

    receiver: jax.Array   # its receiver (n: no message in this entry)
    sender: jax.Array
    q: jax.Array          # its index in its sender's queue
    reach: jax.Array      # sub-tick it reaches the receiver's download link
    deadline: jax.Array   # sub-tick by which it must be received in full
    code: jax.Array       # `downloads` code (pending entries: T)
    ping: jax.Array       # bool: a ping (answered when delivered), not a pong
    entered: jax.Array    # bool: it reaches a download link
    pending: jax.Array    # bool: entered, not yet served


def append(msgs: Messages, ptr: jax.Array, has: jax.Array, sender, recv, q, ping: bool,
           entered, reach, deadline, arrival, T: int) -> tuple[Messages, jax.Array]:
    """Append the messages (C, J) of the rows `has` (C,) at `ptr`, row after row."""
    C, J = recv.shape
    M = msgs.receiver.shape[0]
    row = jnp.cumsum(has) - has
    at = jnp.where(has[:, None], ptr + row[:, None] * J + jnp.arange(J)[None, :], M)
    put = lambda x, v: x.at[at].set(jnp.broadcast_to(v, (C, J)).astype(x.dtype),  # noqa: E731
                                    mode="drop")
    msgs = Messages(put(msgs.receiver, recv), put(msgs.sender, sender[:, None]), put(msgs.q, q),
                    put(msgs.reach, reach), put(msgs.deadline, deadline),
                    put(msgs.code, jnp.where(entered, T, arrival)), put(msgs.ping, ping),
                    put(msgs.entered, entered), put(msgs.pending, entered))
    return msgs, ptr + J * jnp.sum(has).astype(jnp.int32)


def per_link_first(mask: jax.Array, group: jax.Array, keys: tuple, n: int) -> jax.Array:
    """(n,) int32: for each group (receiver or responder), the index of its entry with `mask`
    that is smallest by `keys` (lexicographic, last: the entry index); M if none."""
    M = mask.shape[0]
    seg = jnp.where(mask, group, n)
    for key in keys:
        low = jax.ops.segment_min(jnp.where(mask, key, 2**31 - 1), seg, num_segments=n + 1)
        mask = mask & (key == low[seg])
    first = jax.ops.segment_min(jnp.where(mask, jnp.arange(M), M), seg, num_segments=n + 1)
    return first[:n]


def download_table(ctx, k_sim: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(codes (M,) int32, start (n,) int32, full () bool): every ping's and pong's `downloads`
    code, node i's q-th queued message at codes[start[i] + q] (see the module docstring);
    `full`: the run queued more than M messages (HParams with shorter iterations than the
    engine was sized for: the caller raises ERR_SCHEDULE, never a wrong result)."""
    msgs, enq, full = replay(ctx, k_sim)
    M, n = msgs.code.shape[0], ctx.cfg.n_nodes
    start = jnp.cumsum(enq) - enq
    at = jnp.where(msgs.receiver < n, start[jnp.minimum(msgs.sender, n - 1)] + msgs.q, M)
    codes = jnp.zeros((M,), jnp.int32).at[at].set(msgs.code, mode="drop")
    return codes, start.astype(jnp.int32), full


def replay(ctx, k_sim: jax.Array) -> tuple[Messages, jax.Array, jax.Array]:
    """(every message of the run in the order queued, (n,) int32 messages each node queued,
    () bool more messages than the M entries hold)."""
    cfg, table = ctx.cfg, ctx.table
    n, S, T, R, p = (cfg.n_nodes, cfg.iteration_slots, cfg.num_ticks, cfg.link_resolution,
                     cfg.fanout // 2)
    if S < 1:
        raise ValueError("iteration_slots must be resolved before init: build the engine with "
                         "make_engine / make_run")
    M = 2 * n * S * p
    nodes = jnp.arange(n, dtype=jnp.int32)
    down = jnp.sum(table.down_units, axis=-1)                      # a full model, per receiver
    zi, zb = jnp.zeros((M,), jnp.int32), jnp.zeros((M,), bool)
    msgs = Messages(zi + n, zi, zi, zi, zi, zi + T, zb, zb, zb)

    def serve(t, msgs, down_free):
        """Step 1: the download links take what reaches them in tick t, one per round."""
        def body(c):
            msgs, down_free, cand = c
            first = per_link_first(cand, msgs.receiver, (msgs.reach, msgs.sender), n)
            has = first < M
            j = jnp.minimum(first, M - 1)
            start = jnp.maximum(msgs.reach[j], down_free)
            busy, code = take_one(start, down, msgs.deadline[j], down_free, R)
            at = jnp.where(has, first, M)
            msgs = msgs._replace(code=msgs.code.at[at].set(code, mode="drop"),
                                 pending=msgs.pending.at[at].set(False, mode="drop"))
            return msgs, jnp.where(has, busy, down_free), cand.at[at].set(False, mode="drop")

        cand = msgs.pending & ((msgs.reach + R - 1) // R == t)
        msgs, down_free, _ = jax.lax.while_loop(lambda c: jnp.any(c[2]), body,
                                                (msgs, down_free, cand))
        return msgs, down_free

    def pongs(t, keys, msgs, ptr, link_free, enq):
        """Step 2: every ping delivered at t is answered, in increasing order of the pinger."""
        due = msgs.ping & msgs.entered & ~msgs.pending & (msgs.code == t)
        stop = queue_stop(cfg, table, nodes, t)
        stop = None if stop is None else jnp.broadcast_to(stop, (n,))

        def body(c):
            m, left, msgs, ptr = c
            first = per_link_first(left, msgs.receiver, (msgs.sender,), n)
            has = first < M
            target = jnp.where(has, msgs.sender[jnp.minimum(first, M - 1)], 0)
            sched = schedule_appended_queue(cfg, table, link_free, nodes, has[:, None],
                                            jnp.full((n, 1), m, jnp.int32), t, 1,
                                            target[:, None], stop)
            lost = pong_lost(cfg, keys.spare, nodes, m, target)
            entered, reach, deadline, arrival = reach_download_link(
                cfg, table, nodes, target[:, None], sched,
                None if lost is None else lost[:, None], stop)
            msgs, ptr = append(msgs, ptr, has, nodes, target[:, None], (enq + m)[:, None],
                               False, entered, reach, deadline, arrival, T)
            return m + 1, left.at[jnp.where(has, first, M)].set(False, mode="drop"), msgs, ptr

        _, _, msgs, ptr = jax.lax.while_loop(lambda c: jnp.any(c[1]), body,
                                             (jnp.int32(0), due, msgs, ptr))
        total = jax.ops.segment_sum(due.astype(jnp.int32), jnp.where(due, msgs.receiver, n),
                                    num_segments=n + 1)[:n]
        link_free = appended_link_free(cfg, table, link_free, nodes, total > 0, total, t, stop)
        return msgs, ptr, link_free, enq + total

    def pings(t, keys, msgs, ptr, link_free, enq, k):
        """Step 3: the nodes ending an iteration at t append their pings."""
        done = end_tick(table, nodes, k) == t
        recv = jax.vmap(lambda i: adpsgd_routes(keys.route, i, ctx.neighbors, ctx.degree,
                                                p))(nodes)                         # (n, p)
        stop = queue_stop(cfg, table, nodes, t)
        stop = None if stop is None else jnp.broadcast_to(stop, (n,))
        sched = schedule_appended_queue(cfg, table, link_free, nodes,
                                        jnp.broadcast_to(done[:, None], (n, p)),
                                        jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (n, p)),
                                        t, 1, recv, stop)
        lost = message_lost(cfg, keys.spare, nodes, (p,), recv)
        entered, reach, deadline, arrival = reach_download_link(cfg, table, nodes, recv, sched,
                                                                lost, stop)
        msgs, ptr = append(msgs, ptr, done, nodes, recv, enq[:, None] + jnp.arange(p), True,
                           entered, reach, deadline, arrival, T)
        link_free = appended_link_free(cfg, table, link_free, nodes, done,
                                       jnp.full((n,), p, jnp.int32), t, stop)
        return msgs, ptr, link_free, enq + p * done, k + done

    def tick(t, c):
        msgs, ptr, link_free, down_free, enq, k = c
        keys = tick_keys(k_sim, t)
        msgs, down_free = serve(t, msgs, down_free)
        msgs, ptr, link_free, enq = pongs(t, keys, msgs, ptr, link_free, enq)
        msgs, ptr, link_free, enq, k = pings(t, keys, msgs, ptr, link_free, enq, k)
        return msgs, ptr, link_free, down_free, enq, k

    z = jnp.zeros((n,), jnp.int32)
    msgs, ptr, _, _, enq, _ = jax.lax.fori_loop(0, T, tick, (msgs, jnp.int32(0), z, z, z, z))
    return msgs, enq, ptr > M


def delivery_of(cfg: SimConfig, downloads: tuple, sched, lost: jax.Array | None,
                node: jax.Array, q: jax.Array):
    """With download limits: the Schedule (C, J, K) of messages q (C, J) of the nodes `node`
    (C,) with their arrival replaced by their delivery (a tick at or after T taken as T), and
    `lost` (C, J) with those lost on a download link added. Without them: unchanged."""
    if not downloads:
        return sched, lost
    codes, start, _ = downloads
    safe = jnp.minimum(node, cfg.n_nodes - 1)
    code = codes[jnp.minimum(start[safe][:, None] + q, codes.shape[0] - 1)]
    tick, down_lost = decode(code)
    tick = jnp.minimum(tick, cfg.num_ticks)
    sched = sched._replace(arrival=jnp.broadcast_to(tick[..., None], sched.arrival.shape))
    down_lost = down_lost & sched.sent[..., 0]
    return sched, down_lost if lost is None else lost | down_lost
