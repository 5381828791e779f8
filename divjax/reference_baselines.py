"""Event-driven reference simulator of the baselines (Swift, AD-PSGD, D-PSGD, Epidemic Learning,
local-only): the oracle the tests compare the vectorized engine against.

Like divjax.reference (DivShare), it runs one node and one message at a time from a heap of
events and shares with the engine only what defines a run's random draws and arithmetic: the
integer link timing (`network.link_table`; the length of a synchronous round is derived
independently, by `reference_dpsgd.sync_round_ticks`, not by the algorithm's `adjust_timing`),
the fragment layout, the per-node local training function, the receivers of each iteration end
(`swift_routes`, `adpsgd_routes`, `epidemic_routes`, drawn from the same keys) and the
Metropolis-Hastings weights. Gathering, ring buffers, masked scatters, per-tick ping rings and
the counters' tick ring are done here the plain way: each node's link is a FIFO of messages with
an explicit "free at" sub-tick; a message appended at tick t starts at max(free at, t * R).

Event order at one tick: a message leaving a link and a message arriving (phase 0), then
AD-PSGD's pongs for the pings that arrived at that tick (phase 1, in increasing order of the
pinging node), then iteration ends (phase 2). Counters count full models once per fragment.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import jax
import numpy as np

from divjax import network, reference_dpsgd
from divjax.algorithms import ALGORITHMS
from divjax.algorithms.adpsgd import adpsgd_routes, pong_lost
from divjax.algorithms.epidemic import epidemic_routes
from divjax.algorithms.swift import swift_routes
from divjax.config import HParams, SimConfig
from divjax.local import make_optimizer, make_train_one, node_batch_key
from divjax.reference import initial_models, iteration_schedule
from divjax.reference_links import DownloadLinks, download_units_of, upload_units_of
from divjax.sizing import model_layout
from divjax.state import tick_keys
from divjax.tasks import Task
from divjax.topology import adjacency, metropolis_hastings, neighbor_table

BASELINES = ("swift", "adpsgd", "dpsgd", "epidemic", "local")


@dataclass
class BaselineResult:
    params: np.ndarray      # (n, K, F) every node's model at the end
    sent: np.ndarray        # (n, K) full models fully sent, counted once per fragment
    delivered: np.ndarray   # (n,) fragments of full models that arrived, per receiver
    iterations: np.ndarray  # (n,)
    enqueued: np.ndarray    # (n,) full models ever queued (appended-queue algorithms)
    pongs: int              # AD-PSGD: pongs queued
    replaced: int           # inbox entries overwritten by a newer one (policy "latest")
    log: list = field(default_factory=list)
    lost: np.ndarray | None = None  # (n,) fragments of full models to each receiver lost
    dropped: np.ndarray | None = None  # (n,) fragments dropped from the queue going offline


def simulate(cfg: SimConfig, task: Task, hp: HParams, key: jax.Array,
             inbox_policy: str = "sum") -> BaselineResult:
    """Run cfg.algorithm (one of BASELINES) event by event for cfg.num_ticks ticks.

    inbox_policy: "sum" averages every model that arrived since the last aggregation (the
    engine); "latest" keeps only the newest model per sender (the authors' code).
    """
    assert cfg.algorithm in BASELINES, cfg.algorithm
    assert inbox_policy in ("sum", "latest")
    algo = ALGORITHMS[cfg.algorithm](cfg)
    n, s, R, T = cfg.n_nodes, cfg.fanout, cfg.link_resolution, cfg.num_ticks
    layout = model_layout(cfg, task)
    K = layout.K
    table = jax.tree.map(np.asarray, network.link_table(cfg, hp, layout.fragment_bytes))
    if algo.synchronous:   # rounds of one length, derived independently of the engine's timing
        table = table._replace(compute_ticks=np.full(
            n, reference_dpsgd.sync_round_ticks(cfg, hp, layout.fragment_bytes), np.int32))
    c, lat = table.compute_ticks, table.latency_units

    def pair_lat(i, r):  # sub-ticks from node i's link to node r: its latency + the regions'
        return int(lat[i]) + int(table.region_units[table.region[i], table.region[r]])
    # a full model is its K fragments back to back, at the upload in force when it is queued
    upload_units = upload_units_of(cfg, layout.fragment_bytes, table.msg_units)
    downloads = None if table.down_units is None else DownloadLinks(n, R)
    down_units_of = None if downloads is None else download_units_of(
        cfg, layout.fragment_bytes, table.down_units)
    adj = adjacency(cfg)
    nb, deg = (jax.numpy.asarray(a) for a in neighbor_table(adj))
    tx = make_optimizer(cfg, hp)
    train_one = jax.jit(make_train_one(cfg, task, layout, tx))
    init_opt = jax.jit(tx.init)
    route = {"swift": lambda k, i: swift_routes(k, i, nb, deg, s),
             "adpsgd": lambda k, i: adpsgd_routes(k, i, nb, deg, s // 2),
             "epidemic": lambda k, i: epidemic_routes(k, i, nb, deg, s)}.get(cfg.algorithm)
    route = jax.jit(route) if route is not None else None

    params, k_sim = initial_models(cfg, task, layout, key)
    end_of, offline = iteration_schedule(cfg, c, k_sim)
    if algo.synchronous:   # rounds of one length, never paused by churn (see the branch below)
        end_of = lambda i, k: (k + 1) * int(c[i])  # noqa: E731
    opt = [init_opt(p) for p in params]
    latest = [p.copy() for p in params]            # AD-PSGD snapshots

    sent = np.zeros((n, K), np.int64)
    delivered = np.zeros(n, np.int64)
    iterations = np.zeros(n, np.int64)
    enqueued = np.zeros(n, np.int64)
    lost_at = np.zeros(n, np.int64)                # fragments to node r lost on the way
    free_at = np.zeros(n, np.int64)                # sub-tick at which each link is idle
    dropped = np.zeros(n, np.int64)                # fragments dropped when a node goes offline
    on_link = [set() for _ in range(n)]            # ids of the models queued, not yet left
    msg_id = itertools.count()
    inbox_sum: list[list] = [[] for _ in range(n)]
    inbox_latest: list[dict] = [{} for _ in range(n)]
    pings_now: list[list] = [[] for _ in range(n)]  # senders of pings arriving this tick
    counts = {"pongs": 0, "replaced": 0}
    log: list = []
    events: list = []
    seq = itertools.count()

    def at(tick, phase, kind, *data):
        heapq.heappush(events, (int(tick), phase, next(seq), kind, data))

    def enqueue(i, t, receiver, payload, kind, lost=False):
        """Append one full model to node i's link at tick t; it leaves after the ones before
        (and is lost on the way if `lost`)."""
        start = max(int(free_at[i]), t * R)
        free_at[i] = start + int(upload_units(i, t).sum())
        enqueued[i] += 1
        m = next(msg_id)
        on_link[i].add(m)
        at(-(-int(free_at[i]) // R), 0, "leave", i, int(free_at[i]), receiver, payload, kind,
           lost, m)

    def offline_at(r, t):
        return any(s_j <= t < e_j for s_j, e_j in offline[r].items())

    def receive(i, r, payload):
        delivered[r] += K
        if inbox_policy == "sum":
            inbox_sum[r].append((i, payload))
        else:
            counts["replaced"] += i in inbox_latest[r]
            inbox_latest[r][i] = payload

    def average_inbox(i, trained):
        got = (inbox_sum[i] if inbox_policy == "sum" else list(inbox_latest[i].items()))
        total = trained.copy()
        for _, payload in got:
            total += payload
        inbox_sum[i], inbox_latest[i] = [], {}
        return total / np.float32(1 + len(got))

    def train(i, t):
        keys = tick_keys(k_sim, t)
        p, o = train_one(params[i], opt[i], node_batch_key(keys.batch, i), i)
        return np.asarray(p, np.float32), o, keys

    def finish(i, t, new, o):
        params[i] = new
        opt[i] = init_opt(params[i]) if cfg.reset_optimizer else o
        iterations[i] += 1
        at(end_of(i, iterations[i]), 2, "end", i)

    for i in range(n):
        at(end_of(i, 0), 2, "end", i)
        for s_j in offline[i]:   # churn: going offline drops the queue (phase 1; no end then)
            at(s_j, 1, "offline", i)

    while events and events[0][0] < T:
        t, _, _, kind, data = heapq.heappop(events)
        if kind == "leave":
            i, end, r, payload, what, is_lost, m = data
            if m not in on_link[i]:
                continue   # dropped when its sender went offline
            on_link[i].discard(m)
            sent[i] += 1
            reach = end + pair_lat(i, r)   # the sub-tick it reaches its receiver
            if is_lost:   # sent, and lost on the way: it never arrives (counted then)
                at(-(-reach // R), 0, "lost", r)
            elif downloads is None:  # it arrives at the first tick at or after reaching r
                at(-(-reach // R), 0, "arrive", i, r, payload, what)
            elif offline_at(r, -(-reach // R)):   # an offline receiver never takes it
                at(-(-reach // R), 0, "lost", r)
            else:   # it waits for r's download link (Swift), which must take it all before
                # its sender goes offline (plus the latency) and before r goes offline
                stop = min([s_j for s_j in offline[i] if s_j * R >= end] + [T])
                deadline = stop * R + pair_lat(i, r)
                later = [s_j for s_j in offline[r] if s_j > -(-reach // R)]
                if later:
                    deadline = min(deadline, (min(later) - 1) * R)
                downloads.reach(r, reach, i, down_units_of(r, None), deadline,
                                (i, r, payload, what))
                at(-(-reach // R), 0.5, "download", r)
            log.append((t, "sent", (i, r, what)))
        elif kind == "offline":   # the queue and the model on the wire are dropped
            (i,) = data
            dropped[i] += K * len(on_link[i])
            on_link[i].clear()
            free_at[i] = min(int(free_at[i]), t * R)   # the link is empty from now on
        elif kind == "download":   # serve, first come first served, what reached r by now
            for tick, taken, message in downloads.serve(data[0], t):
                at(tick, 0, *(("arrive", *message) if taken else ("lost", data[0])))
        elif kind == "lost":   # on the way, or on a download link at its deadline
            lost_at[data[0]] += K
        elif kind == "arrive":
            i, r, payload, what = data
            if offline_at(r, t):   # churn: it reaches an offline node, and is lost
                lost_at[r] += K
                continue
            receive(i, r, payload)
            log.append((t, "arrive", (i, r, what)))
            if what == "ping":
                if not pings_now[r]:
                    at(t, 1, "pong", r)
                pings_now[r].append(i)
        elif kind == "pong":
            (r,) = data
            spare = tick_keys(k_sim, t).spare
            # every ping that arrived is answered, with r's latest snapshot
            for m, j in enumerate(sorted(pings_now[r])):
                lost = pong_lost(cfg, spare, jax.numpy.array([r]), m, jax.numpy.array([j]))
                enqueue(r, t, j, latest[r].copy(), "pong", lost is not None and bool(lost[0]))
                counts["pongs"] += 1
            pings_now[r] = []
        elif cfg.algorithm in ("swift", "adpsgd", "local"):
            (i,) = data
            trained, o, keys = train(i, t)
            if cfg.algorithm == "swift" and s > 0:
                peers = np.asarray(route(keys.route, i))
                lost = network.message_lost(cfg, keys.spare, jax.numpy.array([i]), (s,),
                                            jax.numpy.asarray(peers)[None])
                lost = np.zeros(s, bool) if lost is None else np.asarray(lost[0])
                for j, r in enumerate(peers):
                    enqueue(i, t, int(r), trained.copy(), "model", bool(lost[j]))
            if cfg.algorithm == "adpsgd":
                latest[i] = trained.copy()
                if s // 2 > 0:
                    peers = np.asarray(route(keys.route, i))
                    lost = network.message_lost(cfg, keys.spare, jax.numpy.array([i]), (s // 2,),
                                                jax.numpy.asarray(peers)[None])
                    lost = np.zeros(s // 2, bool) if lost is None else np.asarray(lost[0])
                    for j, r in enumerate(peers):
                        enqueue(i, t, int(r), trained.copy(), "ping", bool(lost[j]))
            new = trained if cfg.algorithm == "local" else average_inbox(i, trained)
            finish(i, t, new, o)
        else:  # synchronous round end: every node ends now (same round length)
            (i,) = data
            assert np.all(c == c[0]), "synchronous rounds give every node the same length"
            # the other nodes' end events of this tick are handled here, all at once
            ends = [i] + [e[4][0] for e in events if e[0] == t and e[3] == "end"]
            events[:] = [e for e in events if not (e[0] == t and e[3] == "end")]
            heapq.heapify(events)
            for j in ends:   # the next round ends c later, also for a node that skips this one
                at(t + int(c[j]), 2, "end", j)
            # churn: a node offline now skips the round (no training, sending or mixing)
            ends = sorted(j for j in ends if not offline_at(j, t))
            trained, opts, keys = {}, {}, tick_keys(k_sim, t)
            for j in ends:
                trained[j], opts[j], _ = train(j, t)
            def lost_of(j, peers):   # which of j's models to `peers` this round are lost
                lost = network.message_lost(cfg, keys.spare, jax.numpy.array([j]), peers.shape,
                                            jax.numpy.asarray(peers)[None])
                lost = np.zeros(peers.shape, bool) if lost is None else np.asarray(lost[0])
                # a model that reaches an offline node is lost too (sent, never mixed)
                return lost | np.array([offline_at(int(r), t) for r in peers], bool)
            if cfg.algorithm == "dpsgd":
                W = metropolis_hastings(adj)
                got = {r: {r} for r in ends}     # the models r mixes (its own always)
                for j in ends:  # every node sends its model to each neighbour, one at a time
                    lost = lost_of(j, np.arange(n))   # drawn per receiver id
                    for r in np.flatnonzero(adj[j]):
                        sent[j] += 1
                        if lost[r]:   # r mixes its own model in its place
                            lost_at[r] += K
                        else:
                            delivered[r] += K
                            got[r].add(j)
                new = {r: sum(np.float32(W[r, j]) * trained[j if j in got[r] else r]
                              for j in range(n)) for r in ends}
            else:  # epidemic
                for j in ends:
                    peers = np.asarray(route(keys.route, j))
                    lost = lost_of(j, peers)
                    for q, r in enumerate(peers):
                        sent[j] += 1
                        if lost[q]:
                            lost_at[int(r)] += K
                        else:
                            receive(j, int(r), trained[j])
                new = {r: average_inbox(r, trained[r]) for r in ends}
            for j in ends:   # as `finish`, but the next round is already scheduled
                params[j] = new[j].astype(np.float32)
                opt[j] = init_opt(params[j]) if cfg.reset_optimizer else opts[j]
                iterations[j] += 1

    return BaselineResult(np.stack(params), sent, delivered, iterations, enqueued,
                          counts["pongs"], counts["replaced"], log, lost_at, dropped)
