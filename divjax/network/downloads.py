"""Download links: the messages reaching a node queue on its download link (issue 18).

The model (`--download-mbps`, `--straggler-download-mbps`; `SimConfig.download_mbps`,
`HParams.download_bps`). Node j's download link receives one message at a time, first come
first served in the order the messages reach it -- their *upload arrival*: the link sub-tick at
which the message has fully left its sender's link plus the pair's latency (ties: the smaller
sender id first) -- and takes `LinkTable.down_units[j, k]` link sub-ticks to receive fragment k
(bytes / download bandwidth, rounded up to a sub-tick; 0 where the bandwidth is unlimited). A
message is delivered (it joins the inbox) at the first tick at or after the sub-tick it has been
received in full. This is a FIFO by arrival time, on the link's sub-tick clock: no rounding to
ticks happens before the delivery.

Senders are not slowed by a busy receiver (no backpressure): a sender's link pushes at its
upload rate and the receiver's side buffers what it cannot take yet, as with one shaped queue per
direction (the authors' Kollaps testbed shapes both).

DivShare's queue replacement. At every iteration end the authors' code closes its connections
with linger = 0, so a message still on the wire is lost (../shared/paper.md). With download
limits a message is on the wire until its receiver has all of it, so a message not received in
full by its *deadline* -- the sender's next iteration end plus the pair's latency, the last
moment at which bytes it sent before closing can still reach the receiver -- is lost: counted in
`lost` of its receiver, never delivered. The download link was busy with it until the deadline
if it had started receiving it, and not at all otherwise.

Churn (or a trace's offline rows): a receiver that is offline when a message reaches it never
takes it (lost, as without download limits); one that goes offline at tick s must have received
it by the end of tick s - 1, its connections closing then; a sender going offline closes its
connections as at an iteration end (the deadline uses the sooner of the two).

Why this is exact and computable before training. Upload timing does not depend on downloads
(no backpressure), and the routes, queue orders, losses and iteration ends of every message of
the run are drawn from the run's key (`divjax.network.compute_schedule`, `state.tick_keys`), never from
the models. So every message's upload arrival, deadline and receiver are known at init, and the
FIFO of every download link is a pure function of them (`fifo_deliveries`), computed once per
run (`divshare.download_table`, `swift.download_table`), as the compute-jitter table is. The
engine then reads each message's delivery tick from that table when it sends the message --
also the look-ahead of the "latest" inbox rule, which needs the delivery of a sender's later
messages. AD-PSGD's pongs are queued when a ping is received, so there upload timing does
depend on downloads; it is still a function of the key alone, so its table is a replay of the
whole ping-pong network at init, tick by tick (`adpsgd_network.replay`). D-PSGD's synchronous
round lasts until its last model is received (`queues.sync_download_ticks`).

Which algorithms: all but Epidemic Learning (its random fan-in changes every round while its
rounds have one length).

How this differs from flows sharing a link (processor sharing, which TCP flows approximate):
measured on the same messages by `scripts/download_rules.py` (README, "Downloads"): under
DivShare's deadlines, in one 20-s run of the testbed's setting, FIFO delivered more (one
message at a time gets through where sharing makes all of them late) and 88% of messages had
the same fate.

With every download unlimited (or fast enough that each message rounds to 0 sub-ticks) a message
is delivered at its upload arrival tick, so the run equals the run without download limits bit
for bit (`tests/test_downloads.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from divjax.network.compute_schedule import has_offline, is_offline, next_offline_start
from divjax.network.links import pair_latency_units


def fifo_deliveries(receiver: jax.Array, avail: jax.Array, deadline: jax.Array,
                    units: jax.Array, sender: jax.Array, resolution: int, n: int,
                    row_start: jax.Array | None = None) -> jax.Array:
    """Serve every download link first come, first served; return each message's fate.

    Args (all (N,) int32; link sub-ticks are absolute):
      receiver: the message's receiver, or n for an entry that is not a message;
      avail: its upload arrival (sub-tick it reaches the receiver's download link);
      deadline: the last sub-tick by which it must be received in full, else it is lost;
      units: sub-ticks the receiver's download link needs for it (>= 0); with `row_start`,
        (N, P): the sub-ticks at each of the receiver's trace rows;
      sender: ties in `avail` at one receiver are served smaller sender first;
      row_start: optional (n, P) int32, the sub-tick each of a link's trace rows starts (a
        trace whose download changes; `row_start_subticks`): a message is received at the
        bandwidth in force when its reception starts (the last row starting at or before).
    Returns (N,) int32: the delivery tick (>= 0) of a delivered message, -(t + 1) for a message
      lost at tick t (its deadline's tick), 0 for entries that are not messages.

    The links run in parallel, one message of each per round: round j serves the j-th message
    (in arrival order) of every link, so the loop runs as many rounds as the busiest link has
    messages, not N.
    """
    N = receiver.shape[0]
    order = jnp.lexsort((sender, avail, receiver))         # by receiver, then arrival, then id
    counts = jnp.bincount(receiver, length=n + 1)[:n]       # messages per link
    first = jnp.cumsum(counts) - counts                     # each link's first entry in `order`
    R = resolution

    def serve(j, carry):
        free, out = carry                                   # (n,) sub-tick each link is free
        active = j < counts
        idx = order[jnp.minimum(first + j, N - 1)]
        a, dl = avail[idx], deadline[idx]
        start = jnp.maximum(a, free)
        if row_start is None:
            u = units[idx]
        else:   # the row in force at `start` on every link (lane j of the round = link j)
            row = jnp.maximum(jnp.sum(row_start <= start[:, None], axis=1) - 1, 0)
            u = units[idx, row]
        busy_until, code = take_one(start, u, dl, free, R)
        out = out.at[jnp.where(active, idx, N)].set(code.astype(jnp.int32), mode="drop")
        return jnp.where(active, busy_until, free), out

    _, out = jax.lax.fori_loop(0, jnp.max(counts, initial=0), serve,
                               (jnp.zeros((n,), jnp.int32), jnp.zeros((N,), jnp.int32)))
    return out


def take_one(start: jax.Array, units: jax.Array, deadline: jax.Array, free: jax.Array,
             resolution: int) -> tuple[jax.Array, jax.Array]:
    """One message taken by a download link (any shapes): reception from sub-tick `start`
    for `units` sub-ticks, by `deadline`. Returns (the sub-tick the link is free again, the
    message's code: its delivery tick, or -(tick lost) - 1 when it cannot be received in full
    by its deadline; the link was then busy until the deadline if it had started, else never,
    and stays at `free`)."""
    R = resolution
    done = start + units
    ok = done <= deadline
    busy_until = jnp.where(ok, done, jnp.where(start < deadline, deadline, free))
    code = jnp.where(ok, (done + R - 1) // R, -((deadline + R - 1) // R) - 1)
    return busy_until, code


def reach_download_link(cfg, table, sender: jax.Array, recv: jax.Array, sched,
                        lost: jax.Array | None, stop: jax.Array | None):
    """For full-model messages (C, J) of an appended queue (`sched`: (C, J, 1) fields; Swift,
    AD-PSGD): (entered, reach, deadline, upload arrival tick), each (C, J): whether it
    reaches its receiver's download link (sent, not lost on the way, receiver online then),
    the sub-tick it does, and the sub-tick by which it must be received in full (its sender
    going offline at `stop` (C,), or the run's end, plus the latency; a receiver going offline
    at tick s must have it by (s - 1) R)."""
    T, R = cfg.num_ticks, cfg.link_resolution
    sent, arrival = sched.sent[..., 0], sched.arrival[..., 0]
    entered = sent if lost is None else sent & ~lost
    lat = pair_latency_units(table, sender[:, None], recv)
    end = jnp.full(sender.shape, T, jnp.int32) if stop is None else jnp.minimum(stop, T)
    deadline = end[:, None] * R + lat
    if has_offline(cfg):
        entered = entered & ~is_offline(table, recv, arrival)
        s_off = next_offline_start(table, recv, arrival)
        deadline = jnp.where(s_off <= T, jnp.minimum(deadline, (s_off - 1) * R), deadline)
    return entered, sched.arrival_sub[..., 0], deadline, arrival


def row_start_subticks(table, resolution: int) -> jax.Array | None:
    """(n, P) int32: the sub-tick at which each of every node's trace rows starts (padding:
    never), when a trace's download changes; None otherwise (`LinkTable.down_seg_units`)."""
    if table.down_seg_units is None:
        return None
    tick = table.seg_tick
    return jnp.where(tick > (2**31 - 1) // resolution, jnp.iinfo(jnp.int32).max,
                     tick * resolution)


def message_units(table, receiver: jax.Array, fragment) -> jax.Array:
    """Download sub-ticks of messages to `receiver` (any shape), each fragment `fragment`
    (broadcastable; None: a full model, all K fragments): receiver.shape, or receiver.shape +
    (P,) (one per trace row) when a trace's download changes."""
    if table.down_seg_units is None:
        per = table.down_units[receiver]                               # (..., K)
        return jnp.sum(per, -1) if fragment is None else jnp.take_along_axis(
            per, jnp.broadcast_to(fragment, receiver.shape)[..., None], -1)[..., 0]
    per = table.down_seg_units[receiver]                               # (..., P, K)
    if fragment is None:
        return jnp.sum(per, -1)
    k = jnp.broadcast_to(fragment, receiver.shape)[..., None, None]
    return jnp.take_along_axis(per, jnp.broadcast_to(k, per.shape[:-1] + (1,)), -1)[..., 0]


def decode(code: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(tick, lost) from `fifo_deliveries` codes: the delivery tick, or the tick it was lost."""
    lost = code < 0
    return jnp.where(lost, -code - 1, code), lost
