"""A slow, obviously-correct, event-driven reference simulator (the oracle of the tests).

One node at a time, one message at a time, with a heap of events, written to be read against
../shared/paper.md rather than to be fast. It shares with the engine only what defines a run's
random draws and arithmetic: the integer link timing (`network.link_table`), the fragment
layout, the per-node local training function, and the receivers and queue order of each
iteration end (`divshare_routes`, drawn from the same keys). Everything that makes the engine
fast and could be wrong -- gathering finishing nodes, the ring buffer, the masked scatters, the
counters' tick ring, the schedule arithmetic -- is done here the plain way.

Event order at one tick: a link finishing a message and a message arriving (phase 0) come before
iteration ends (phase 1). The events (`divjax.reference.events`), each handled by a method of
`_DivShare`: "leave" (a link has sent a message), "offline" (churn takes a node offline),
"download" (a download link serves what reached it), "lost", "arrive" and "end" (an iteration
ends: train, replace the queue, aggregate).

Download limits (`divjax.network.downloads`): a message that has left its sender's link waits at its
receiver's download link; at every tick (phase 0.5, after the links of that tick) each receiver
serves the messages that have reached it by then, in the order they reached it (ties: smaller
sender first), one after another, and one not received in full by its deadline (the sender's
next iteration end plus the latency) is lost.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import jax
import numpy as np

from divjax.network import links as network
from divjax.algorithms.divshare import divshare_routes
from divjax.network.compute_schedule import host_end_ticks, host_offline
from divjax.config import HParams, SimConfig
from divjax.engine.local import make_optimizer, make_train_one, node_batch_key
from divjax.reference.events import EventLoop, offline_at, pair_latency
from divjax.reference.links import DownloadLinks, download_units_of, upload_units_of
from divjax.engine.sizing import model_layout
from divjax.engine.state import tick_keys
from divjax.tasks.base import Task
from divjax.network.topology import adjacency, neighbor_table


@dataclass
class ReferenceResult:
    params: np.ndarray       # (n, K, F) every node's model at the end
    sent: np.ndarray         # (n, K) messages fully sent, per sender and fragment
    dropped: np.ndarray      # (n,) messages dropped from the sender's queue or wire
    delivered: np.ndarray    # (n,) messages that arrived, per receiver
    iterations: np.ndarray   # (n,)
    replaced: int            # inbox entries overwritten by a newer one (policy "latest")
    log: list = field(default_factory=list)  # (tick, kind, details) of every event, if asked
    lost: np.ndarray | None = None  # (n,) messages to each receiver lost on the way


@dataclass
class _Link:
    queue: deque = field(default_factory=deque)   # messages waiting: (receiver, fragment, payload)
    busy: tuple | None = None                     # (token, end_subtick, message) on the wire
    tokens: itertools.count = field(default_factory=itertools.count)


def initial_models(cfg: SimConfig, task: Task, layout, key: jax.Array):
    """Every node's initial (K, F) model as a numpy array, and the simulation key, from `key`
    exactly as the engine splits it."""
    k_init, k_sim = jax.random.split(key)
    if cfg.same_init:
        one = np.asarray(layout.flatten(task.init(k_init)), np.float32)
        return [one.copy() for _ in range(cfg.n_nodes)], k_sim
    return [np.asarray(layout.flatten(task.init(k)), np.float32)
            for k in jax.random.split(k_init, cfg.n_nodes)], k_sim


def iteration_schedule(cfg: SimConfig, c: np.ndarray, k_sim: jax.Array):
    """(end_of(i, k): the tick iteration k (0-based) of node i ends, offline: per node a dict
    {start: end} of its offline ticks [start, end) that start within the run).

    Iteration lengths: c_i, or the jitter table's (`compute_schedule`, drawn from the key).
    Churn pauses an iteration for every offline interval it meets (an end that would fall on
    an offline tick waits for the node to come back), walked here interval by interval. A
    trace: `trace_schedule`."""
    if cfg.trace_file:
        return trace_schedule(cfg)
    T = cfg.num_ticks
    jit = host_end_ticks(cfg.replace(churn_rate=0.0), c, k_sim)   # None: no jitter
    intervals = host_offline(cfg, k_sim)
    offline = [{int(s): int(e) for s, e in zip(*(x[i] for x in intervals), strict=True)
                if s < T} if intervals else {} for i in range(cfg.n_nodes)]
    cache: dict = {}

    def end_of(i, k):
        if (i, k) not in cache:
            start = 0 if k == 0 else end_of(i, k - 1)
            d = int(c[i]) if jit is None else int(np.diff(jit[i], prepend=0)[min(
                k, jit.shape[1] - 1)])
            end = start + d
            for s_j, e_j in sorted(offline[i].items()):
                if e_j > start and s_j <= end:   # offline before (or at) the end: pause
                    end += e_j - s_j
            cache[(i, k)] = end
        return cache[(i, k)]

    return end_of, offline


def trace_schedule(cfg: SimConfig):
    """`iteration_schedule` of a trace (divjax/network/traces.py), walked tick by tick from the file's
    rows in seconds, apart from the engine's table (`traces.end_table`): an iteration starts at
    the first online tick at or after the previous end, needs the compute ticks in force then,
    counts only online ticks, and ends at the first online tick after its last one."""
    from divjax.network.traces import read_trace

    trace, n, T = read_trace(cfg.trace_file), cfg.n_nodes, cfg.num_ticks
    never = 2**40                              # offline for good: no end within any run
    rows: list[list] = [[] for _ in range(n)]  # per node: (tick, compute ticks, online)
    on = trace.col("online")
    for r, (node, time_s, compute_s) in enumerate(zip(
            trace.col("node"), trace.col("time_s"), trace.col("compute_s"), strict=True)):
        rows[int(node)].append((round(time_s / cfg.tick_s),
                                max(1, round(compute_s / cfg.tick_s)),
                                True if on is None else bool(on[r] == 1)))

    def state(i, tau):                         # the last row of node i at or before tau
        return [row for row in rows[i] if row[0] <= tau][-1]

    def next_online(i, tau):
        while tau < never and not state(i, tau)[2]:
            tau = tau + 1 if tau < rows[i][-1][0] else never
        return tau

    offline = []
    for i in range(n):
        spans, tau = {}, 0
        while tau < T:
            if state(i, tau)[2]:
                tau += 1
            else:
                back = next_online(i, tau)
                spans[tau], tau = back, back
        offline.append(spans)
    cache: dict = {}

    def end_of(i, k):
        if (i, k) not in cache:
            tau = next_online(i, 0 if k == 0 else end_of(i, k - 1))
            left = state(i, tau)[1] if tau < never else 0
            while left and tau < never:        # count the iteration's online ticks
                left -= 1
                tau = next_online(i, tau + 1)
            cache[(i, k)] = tau
        return cache[(i, k)]

    return end_of, offline


def simulate(cfg: SimConfig, task: Task, hp: HParams, key: jax.Array,
             inbox_policy: str = "sum", keep_log: bool = False) -> ReferenceResult:
    """Run DivShare event by event for cfg.num_ticks ticks.

    inbox_policy: "sum" averages every fragment that arrived since the last aggregation (what the
    vectorized engine does); "latest" keeps only the newest fragment per (sender, fragment), as
    the authors' code does.
    """
    assert inbox_policy in ("sum", "latest")
    sim = _DivShare(cfg, task, hp, key, inbox_policy, keep_log)
    for i in range(cfg.n_nodes):
        sim.at(sim.end_of(i, 0), 1, "end", i)
        for s_j in sim.offline[i]:   # churn: going offline drops the queue (phase 1, no end then)
            sim.at(s_j, 1, "offline", i)
    sim.run(cfg.num_ticks)
    return ReferenceResult(np.stack(sim.params), sim.sent, sim.dropped, sim.delivered,
                           sim.iterations, sim.replaced, sim.log, sim.lost_at)


class _DivShare(EventLoop):
    """One DivShare run, node by node and message by message: its links, models, inboxes and
    counters, and a method per event."""

    def __init__(self, cfg: SimConfig, task: Task, hp: HParams, key: jax.Array,
                 inbox_policy: str, keep_log: bool):
        super().__init__()
        self.cfg, self.inbox_policy, self.keep_log = cfg, inbox_policy, keep_log
        n, K, s, R = cfg.n_nodes, cfg.n_fragments, cfg.fanout, cfg.link_resolution
        self.K, self.s, self.R = K, s, R
        layout = model_layout(cfg, task)
        table = jax.tree.map(np.asarray, network.link_table(cfg, hp, layout.fragment_bytes))
        self.table = table
        self.down = down = table.down_units            # None: downloads are not modelled
        self.downloads = DownloadLinks(n, R)
        self.down_units_of = None if down is None else download_units_of(
            cfg, layout.fragment_bytes, down)
        nb, deg = (jax.numpy.asarray(a) for a in neighbor_table(adjacency(cfg)))
        tx = make_optimizer(cfg, hp)
        self.train_one = jax.jit(make_train_one(cfg, task, layout, tx))
        self.init_opt = jax.jit(tx.init)
        self.routes = jax.jit(lambda k, i: divshare_routes(k, i, nb, deg, K, s))
        # (i, t) -> (K,): each fragment's sub-ticks at the upload in force when queued
        self.queue_units = upload_units_of(cfg, layout.fragment_bytes, table.msg_units)

        self.params, self.k_sim = initial_models(cfg, task, layout, key)
        self.end_of, self.offline = iteration_schedule(cfg, table.compute_ticks, self.k_sim)
        self.opt = [self.init_opt(p) for p in self.params]

        self.sent = np.zeros((n, K), np.int64)
        self.dropped = np.zeros(n, np.int64)
        self.delivered = np.zeros(n, np.int64)
        self.iterations = np.zeros(n, np.int64)
        self.lost_at = np.zeros(n, np.int64)                     # messages to r lost on the way
        self.replaced = 0
        self.inbox_sum: list[list] = [[] for _ in range(n)]      # (sender, k, values)
        self.inbox_latest: list[dict] = [{} for _ in range(n)]   # (sender, k) -> values
        self.links = [_Link() for _ in range(n)]
        self.log: list = []

    # ------------------------------------------------------------------ helpers of the events

    def start_next(self, i, start_subtick):
        """Node i's link starts sending the next queued message at `start_subtick` (or idles)."""
        link = self.links[i]
        if not link.queue:
            link.busy = None
            return
        msg = link.queue.popleft()
        end = start_subtick + int(msg[6][msg[1]])   # the queue's units (upload when formed)
        token = next(link.tokens)
        link.busy = (token, end, msg)
        self.at(-(-end // self.R), 0, "leave", i, token)

    def replace_queue(self, t, i, trained, keys):
        """(2)-(3) of an iteration end: the rest of node i's old queue and the message on the
        wire are dropped; K*s (fragment, receiver) messages of the trained model are queued in
        random order, and the link starts on them."""
        cfg, K, s = self.cfg, self.K, self.s
        link = self.links[i]
        lost = len(link.queue) + (link.busy is not None)
        self.dropped[i] += lost
        if self.keep_log and lost:
            self.log.append((t, "drop", (i, lost)))
        link.queue.clear()
        link.busy = None
        if s > 0:
            receivers, queue = self.routes(keys.route, i)
            receivers, queue = np.asarray(receivers), np.asarray(queue)
            lost = network.message_lost(cfg, keys.spare, jax.numpy.array([i]), (s, K),
                                        jax.numpy.asarray(receivers)[None])
            lost = np.zeros((s, K), bool) if lost is None else np.asarray(lost[0])
            # the link stops on this queue at the next iteration end, or going offline
            stop = min([self.end_of(i, self.iterations[i] + 1)]
                       + [s_j for s_j in self.offline[i] if s_j > t])
            units_now = self.queue_units(i, t)
            for m in queue:
                j, k = divmod(int(m), K)
                link.queue.append((int(receivers[j, k]), k, trained[k].copy(),
                                   bool(lost[j, k]), stop, None, units_now))
            self.start_next(i, t * self.R)

    def aggregate(self, i, trained):
        """(4) of an iteration end: each fragment of node i's trained model averaged with the
        copies of it that arrived; the inbox is emptied."""
        total = trained.astype(np.float32).copy()
        count = np.ones(self.K, np.float32)
        got = (self.inbox_sum[i] if self.inbox_policy == "sum"
               else [(a, b, v) for (a, b), v in self.inbox_latest[i].items()])
        for _, k, values in got:
            total[k] += values
            count[k] += 1
        self.inbox_sum[i], self.inbox_latest[i] = [], {}
        return total / count[:, None]

    # ------------------------------------------------------------------------------ events

    def on_leave(self, t, i, token):
        """Node i's link has sent a message (unless a queue replacement cancelled it): it is
        lost on the way, arrives, or waits at its receiver's download link; the link starts
        on its next message."""
        link, R = self.links[i], self.R
        if link.busy is None or link.busy[0] != token:
            return  # this transmission was cancelled by a queue replacement
        _, end, (r, k, payload, is_lost, stop, _, _) = link.busy
        self.sent[i, k] += 1
        reach = end + pair_latency(self.table, i, r)   # sub-tick it reaches the receiver
        if is_lost:   # sent, and lost on the way: it never arrives (counted then)
            self.at(-(-reach // R), 0, "lost", r)
        elif self.down is None:  # it arrives at the first tick at or after reaching the receiver
            self.at(-(-reach // R), 0, "arrive", i, r, k, payload)
        elif offline_at(self.offline[r], -(-reach // R)):   # an offline receiver never takes it
            self.at(-(-reach // R), 0, "lost", r)
        else:   # it waits for the receiver's download link, which must take it all by the
            # sender's stop plus the latency, and before the receiver goes offline
            deadline = stop * R + pair_latency(self.table, i, r)
            later = [s_j for s_j in self.offline[r] if s_j > -(-reach // R)]
            if later:
                deadline = min(deadline, (min(later) - 1) * R)
            self.downloads.reach(r, reach, i, self.down_units_of(r, k), deadline,
                                 (i, r, k, payload))
            self.at(-(-reach // R), 0.5, "download", r)
        if self.keep_log:
            self.log.append((t, "sent", (i, r, k)))
        self.start_next(i, end)

    def on_offline(self, t, i):
        """Node i goes offline: its queue and the message on the wire are dropped."""
        link = self.links[i]
        self.dropped[i] += len(link.queue) + (link.busy is not None)
        link.queue.clear()
        link.busy = None

    def on_download(self, t, r):
        """r's download link serves, first come first served, what reached it by now."""
        for tick, taken, message in self.downloads.serve(r, t):
            self.at(tick, 0, *(("arrive", *message) if taken else ("lost", r)))

    def on_lost(self, t, r):
        """A message to r is lost: on the way, or on a download link at its deadline."""
        self.lost_at[r] += 1

    def on_arrive(self, t, i, r, k, payload):
        """Fragment k of node i's model arrives at r: into r's inbox, unless r is offline."""
        if offline_at(self.offline[r], t):
            self.lost_at[r] += 1   # churn: it reaches an offline node
            return
        self.delivered[r] += 1
        if self.keep_log:
            self.log.append((t, "arrive", (i, r, k)))
        if self.inbox_policy == "sum":
            self.inbox_sum[r].append((i, k, payload))
        else:
            self.replaced += (i, k) in self.inbox_latest[r]
            self.inbox_latest[r][(i, k)] = payload

    def on_end(self, t, i):
        """Node i's iteration ends at tick t: (1) it trains, (2)-(3) replaces its queue with the
        trained model's fragments (`replace_queue`), (4) averages what arrived (`aggregate`)
        and schedules its next iteration end."""
        keys = tick_keys(self.k_sim, t)
        p, o = self.train_one(self.params[i], self.opt[i], node_batch_key(keys.batch, i), i)
        trained = np.asarray(p, np.float32)
        self.replace_queue(t, i, trained, keys)
        self.params[i] = self.aggregate(i, trained)
        self.opt[i] = self.init_opt(self.params[i]) if self.cfg.reset_optimizer else o
        self.iterations[i] += 1
        self.at(self.end_of(i, self.iterations[i]), 1, "end", i)
