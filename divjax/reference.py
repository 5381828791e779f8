"""A slow, obviously-correct, event-driven reference simulator (the oracle of the tests).

One node at a time, one message at a time, with a heap of events, written to be read against
../shared/paper.md rather than to be fast. It shares with the engine only what defines a run's
random draws and arithmetic: the integer link timing (`network.link_table`), the fragment
layout, the per-node local training function, and the receivers and queue order of each
iteration end (`divshare_routes`, drawn from the same keys). Everything that makes the engine
fast and could be wrong -- gathering finishing nodes, the ring buffer, the masked scatters, the
counters' tick ring, the schedule arithmetic -- is done here the plain way.

Event order at one tick: a link finishing a message and a message arriving (phase 0) come before
iteration ends (phase 1).

Download limits (`divjax.downloads`): a message that has left its sender's link waits at its
receiver's download link; at every tick (phase 0.5, after the links of that tick) each receiver
serves the messages that have reached it by then, in the order they reached it (ties: smaller
sender first), one after another, and one not received in full by its deadline (the sender's
next iteration end plus the latency) is lost.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

import jax
import numpy as np

from divjax import network
from divjax.algorithms.divshare import divshare_routes
from divjax.compute_schedule import host_end_ticks, host_offline
from divjax.config import HParams, SimConfig
from divjax.local import make_optimizer, make_train_one, node_batch_key
from divjax.reference_links import DownloadLinks, download_units_of, upload_units_of
from divjax.sizing import model_layout
from divjax.state import tick_keys
from divjax.tasks import Task
from divjax.topology import adjacency, neighbor_table


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
    """`iteration_schedule` of a trace (divjax/traces.py), walked tick by tick from the file's
    rows in seconds, apart from the engine's table (`traces.end_table`): an iteration starts at
    the first online tick at or after the previous end, needs the compute ticks in force then,
    counts only online ticks, and ends at the first online tick after its last one."""
    from divjax.traces import read_trace

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
    n, K, s, R = cfg.n_nodes, cfg.n_fragments, cfg.fanout, cfg.link_resolution
    layout = model_layout(cfg, task)
    table = jax.tree.map(np.asarray, network.link_table(cfg, hp, layout.fragment_bytes))
    c, lat, units = table.compute_ticks, table.latency_units, table.msg_units
    down = table.down_units            # None: downloads are not modelled
    downloads = DownloadLinks(n, R)
    down_units_of = None if down is None else download_units_of(cfg, layout.fragment_bytes, down)

    def pair_lat(i, r):  # sub-ticks from node i's link to node r: its latency + the regions'
        return int(lat[i]) + int(table.region_units[table.region[i], table.region[r]])
    nb, deg = (jax.numpy.asarray(a) for a in neighbor_table(adjacency(cfg)))
    tx = make_optimizer(cfg, hp)
    train_one = jax.jit(make_train_one(cfg, task, layout, tx))
    init_opt = jax.jit(tx.init)
    routes = jax.jit(lambda k, i: divshare_routes(k, i, nb, deg, K, s))

    params, k_sim = initial_models(cfg, task, layout, key)
    end_of, offline = iteration_schedule(cfg, c, k_sim)
    opt = [init_opt(p) for p in params]

    sent = np.zeros((n, K), np.int64)
    dropped = np.zeros(n, np.int64)
    delivered = np.zeros(n, np.int64)
    iterations = np.zeros(n, np.int64)
    lost_at = np.zeros(n, np.int64)                      # messages to node r lost on the way
    replaced = 0
    inbox_sum: list[list] = [[] for _ in range(n)]       # (sender, k, values)
    inbox_latest: list[dict] = [{} for _ in range(n)]    # (sender, k) -> values
    links = [_Link() for _ in range(n)]
    log: list = []
    events: list = []
    seq = itertools.count()

    def offline_at(r, tick):
        return any(s_j <= tick < e_j for s_j, e_j in offline[r].items())

    def at(tick, phase, kind, *data):
        heapq.heappush(events, (int(tick), phase, next(seq), kind, data))

    queue_units = upload_units_of(cfg, layout.fragment_bytes, units)   # (i, t) -> (K,)

    def start_next(i, start_subtick):
        link = links[i]
        if not link.queue:
            link.busy = None
            return
        msg = link.queue.popleft()
        end = start_subtick + int(msg[6][msg[1]])   # the queue's units (upload when formed)
        token = next(link.tokens)
        link.busy = (token, end, msg)
        at(-(-end // R), 0, "leave", i, token)

    for i in range(n):
        at(end_of(i, 0), 1, "end", i)
        for s_j in offline[i]:   # churn: going offline drops the queue (phase 1, no end then)
            at(s_j, 1, "offline", i)

    T = cfg.num_ticks
    while events and events[0][0] < T:
        t, _, _, kind, data = heapq.heappop(events)
        if kind == "leave":
            i, token = data
            link = links[i]
            if link.busy is None or link.busy[0] != token:
                continue  # this transmission was cancelled by a queue replacement
            _, end, (r, k, payload, is_lost, stop, _, _) = link.busy
            sent[i, k] += 1
            reach = end + pair_lat(i, r)   # sub-tick it reaches the receiver
            if is_lost:   # sent, and lost on the way: it never arrives (counted then)
                at(-(-reach // R), 0, "lost", r)
            elif down is None:  # it arrives at the first tick at or after reaching the receiver
                at(-(-reach // R), 0, "arrive", i, r, k, payload)
            elif offline_at(r, -(-reach // R)):   # an offline receiver never takes it
                at(-(-reach // R), 0, "lost", r)
            else:   # it waits for the receiver's download link, which must take it all by the
                # sender's stop plus the latency, and before the receiver goes offline
                deadline = stop * R + pair_lat(i, r)
                later = [s_j for s_j in offline[r] if s_j > -(-reach // R)]
                if later:
                    deadline = min(deadline, (min(later) - 1) * R)
                downloads.reach(r, reach, i, down_units_of(r, k), deadline, (i, r, k, payload))
                at(-(-reach // R), 0.5, "download", r)
            if keep_log:
                log.append((t, "sent", (i, r, k)))
            start_next(i, end)
        elif kind == "offline":   # the queue and the message on the wire are dropped
            (i,) = data
            link = links[i]
            dropped[i] += len(link.queue) + (link.busy is not None)
            link.queue.clear()
            link.busy = None
        elif kind == "download":   # serve, first come first served, what reached r by now
            for tick, taken, message in downloads.serve(data[0], t):
                at(tick, 0, *(("arrive", *message) if taken else ("lost", data[0])))
        elif kind == "lost":
            lost_at[data[0]] += 1
        elif kind == "arrive":
            i, r, k, payload = data
            if offline_at(r, t):
                lost_at[r] += 1   # churn: it reaches an offline node
                continue
            delivered[r] += 1
            if keep_log:
                log.append((t, "arrive", (i, r, k)))
            if inbox_policy == "sum":
                inbox_sum[r].append((i, k, payload))
            else:
                replaced += (i, k) in inbox_latest[r]
                inbox_latest[r][(i, k)] = payload
        else:  # iteration end of node i at tick t
            (i,) = data
            keys = tick_keys(k_sim, t)
            p, o = train_one(params[i], opt[i], node_batch_key(keys.batch, i), i)
            trained = np.asarray(p, np.float32)
            # (2) replace the queue: the rest of the old queue and the message on the wire are lost
            link = links[i]
            lost = len(link.queue) + (link.busy is not None)
            dropped[i] += lost
            if keep_log and lost:
                log.append((t, "drop", (i, lost)))
            link.queue.clear()
            link.busy = None
            # (3) enqueue K*s (fragment, receiver) messages in random order, post-training values
            if s > 0:
                receivers, queue = routes(keys.route, i)
                receivers, queue = np.asarray(receivers), np.asarray(queue)
                lost = network.message_lost(cfg, keys.spare, jax.numpy.array([i]), (s, K),
                                            jax.numpy.asarray(receivers)[None])
                lost = np.zeros((s, K), bool) if lost is None else np.asarray(lost[0])
                # the link stops on this queue at the next iteration end, or going offline
                stop = min([end_of(i, iterations[i] + 1)]
                           + [s_j for s_j in offline[i] if s_j > t])
                units_now = queue_units(i, t)
                for m in queue:
                    j, k = divmod(int(m), K)
                    link.queue.append((int(receivers[j, k]), k, trained[k].copy(),
                                       bool(lost[j, k]), stop, None, units_now))
                start_next(i, t * R)
            # (4) average every coordinate with what has arrived, then empty the inbox
            total = trained.astype(np.float32).copy()
            count = np.ones(K, np.float32)
            got = (inbox_sum[i] if inbox_policy == "sum"
                   else [(a, b, v) for (a, b), v in inbox_latest[i].items()])
            for _, k, values in got:
                total[k] += values
                count[k] += 1
            inbox_sum[i], inbox_latest[i] = [], {}
            params[i] = total / count[:, None]
            opt[i] = init_opt(params[i]) if cfg.reset_optimizer else o
            iterations[i] += 1
            at(end_of(i, iterations[i]), 1, "end", i)

    return ReferenceResult(np.stack(params), sent, dropped, delivered, iterations, replaced, log,
                           lost_at)
