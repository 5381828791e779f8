"""Event-driven reference simulator of the baselines (Swift, AD-PSGD, D-PSGD, Epidemic Learning,
local-only): the oracle the tests compare the vectorized engine against.

Like divjax.reference.divshare (DivShare), it runs one node and one message at a time from a heap of
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

The events (`divjax.reference.events`), each handled by a method of `_Baselines`: "leave" (a
model has left its sender's link), "offline" (churn takes a node offline), "download" (a
download link serves what reached it), "lost", "arrive", "pong" (AD-PSGD answers this tick's
pings) and "end" (an iteration ends; for D-PSGD and Epidemic Learning, a round ends).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

import jax
import numpy as np

from divjax.network import links as network
from divjax.reference import dpsgd as reference_dpsgd
from divjax.algorithms import ALGORITHMS
from divjax.algorithms.adpsgd import adpsgd_routes, pong_lost
from divjax.algorithms.epidemic import epidemic_routes
from divjax.algorithms.swift import swift_routes
from divjax.config import HParams, SimConfig
from divjax.engine.local import make_optimizer, make_train_one, node_batch_key
from divjax.reference.divshare import initial_models, iteration_schedule
from divjax.reference.events import EventLoop, offline_at, pair_latency
from divjax.reference.links import DownloadLinks, download_units_of, upload_units_of
from divjax.engine.sizing import model_layout
from divjax.engine.state import tick_keys
from divjax.tasks.base import Task
from divjax.network.topology import adjacency, metropolis_hastings, neighbor_table

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
    sim = _Baselines(cfg, task, hp, key, inbox_policy)
    for i in range(cfg.n_nodes):
        sim.at(sim.end_of(i, 0), 2, "end", i)
        for s_j in sim.offline[i]:   # churn: going offline drops the queue (phase 1; no end then)
            sim.at(s_j, 1, "offline", i)
    sim.run(cfg.num_ticks)
    return BaselineResult(np.stack(sim.params), sim.sent, sim.delivered, sim.iterations,
                          sim.enqueued, sim.pongs, sim.replaced, sim.log, sim.lost_at,
                          sim.dropped)


class _Baselines(EventLoop):
    """One baseline run, node by node and message by message: its links, models, inboxes and
    counters, and a method per event."""

    def __init__(self, cfg: SimConfig, task: Task, hp: HParams, key: jax.Array,
                 inbox_policy: str):
        super().__init__()
        self.cfg, self.inbox_policy = cfg, inbox_policy
        algo = ALGORITHMS[cfg.algorithm](cfg)
        n, s, R = cfg.n_nodes, cfg.fanout, cfg.link_resolution
        self.n, self.s, self.R, self.T = n, s, R, cfg.num_ticks
        layout = model_layout(cfg, task)
        self.K = layout.K
        table = jax.tree.map(np.asarray, network.link_table(cfg, hp, layout.fragment_bytes))
        if algo.synchronous:   # rounds of one length, derived independently of the engine's
            table = table._replace(compute_ticks=np.full(
                n, reference_dpsgd.sync_round_ticks(cfg, hp, layout.fragment_bytes), np.int32))
        self.table, self.c = table, table.compute_ticks
        # a full model is its K fragments back to back, at the upload in force when queued
        self.upload_units = upload_units_of(cfg, layout.fragment_bytes, table.msg_units)
        self.downloads = None if table.down_units is None else DownloadLinks(n, R)
        self.down_units_of = None if self.downloads is None else download_units_of(
            cfg, layout.fragment_bytes, table.down_units)
        self.adj = adjacency(cfg)
        nb, deg = (jax.numpy.asarray(a) for a in neighbor_table(self.adj))
        tx = make_optimizer(cfg, hp)
        self.train_one = jax.jit(make_train_one(cfg, task, layout, tx))
        self.init_opt = jax.jit(tx.init)
        route = {"swift": lambda k, i: swift_routes(k, i, nb, deg, s),
                 "adpsgd": lambda k, i: adpsgd_routes(k, i, nb, deg, s // 2),
                 "epidemic": lambda k, i: epidemic_routes(k, i, nb, deg, s)}.get(cfg.algorithm)
        self.route = jax.jit(route) if route is not None else None

        self.params, self.k_sim = initial_models(cfg, task, layout, key)
        self.end_of, self.offline = iteration_schedule(cfg, self.c, self.k_sim)
        if algo.synchronous:   # rounds of one length, never paused by churn (`on_round_end`)
            c = self.c
            self.end_of = lambda i, k: (k + 1) * int(c[i])  # noqa: E731
        self.opt = [self.init_opt(p) for p in self.params]
        self.latest = [p.copy() for p in self.params]            # AD-PSGD snapshots

        self.sent = np.zeros((n, self.K), np.int64)
        self.delivered = np.zeros(n, np.int64)
        self.iterations = np.zeros(n, np.int64)
        self.enqueued = np.zeros(n, np.int64)
        self.lost_at = np.zeros(n, np.int64)       # fragments to node r lost on the way
        self.free_at = np.zeros(n, np.int64)       # sub-tick at which each link is idle
        self.dropped = np.zeros(n, np.int64)       # fragments dropped when a node goes offline
        self.on_link = [set() for _ in range(n)]   # ids of the models queued, not yet left
        self.msg_id = itertools.count()
        self.inbox_sum: list[list] = [[] for _ in range(n)]
        self.inbox_latest: list[dict] = [{} for _ in range(n)]
        self.pings_now: list[list] = [[] for _ in range(n)]  # senders of pings arriving now
        self.pongs = 0
        self.replaced = 0
        self.log: list = []

    # ------------------------------------------------------------------ helpers of the events

    def enqueue(self, i, t, receiver, payload, kind, lost=False):
        """Append one full model to node i's link at tick t; it leaves after the ones before
        (and is lost on the way if `lost`)."""
        start = max(int(self.free_at[i]), t * self.R)
        self.free_at[i] = start + int(self.upload_units(i, t).sum())
        self.enqueued[i] += 1
        m = next(self.msg_id)
        self.on_link[i].add(m)
        self.at(-(-int(self.free_at[i]) // self.R), 0, "leave", i, int(self.free_at[i]),
                receiver, payload, kind, lost, m)

    def receive(self, i, r, payload):
        """Node i's model reaches r's inbox (under the inbox policy)."""
        self.delivered[r] += self.K
        if self.inbox_policy == "sum":
            self.inbox_sum[r].append((i, payload))
        else:
            self.replaced += i in self.inbox_latest[r]
            self.inbox_latest[r][i] = payload

    def average_inbox(self, i, trained):
        """Node i's new model: the mean of its trained model and its inbox, which is emptied."""
        got = (self.inbox_sum[i] if self.inbox_policy == "sum"
               else list(self.inbox_latest[i].items()))
        total = trained.copy()
        for _, payload in got:
            total += payload
        self.inbox_sum[i], self.inbox_latest[i] = [], {}
        return total / np.float32(1 + len(got))

    def train(self, i, t):
        """(trained model, optimizer state, tick t's keys) of node i's local steps at tick t."""
        keys = tick_keys(self.k_sim, t)
        p, o = self.train_one(self.params[i], self.opt[i], node_batch_key(keys.batch, i), i)
        return np.asarray(p, np.float32), o, keys

    def finish(self, i, t, new, o):
        """Node i takes model `new` (optimizer state o) and schedules its next iteration end."""
        self.params[i] = new
        self.opt[i] = self.init_opt(self.params[i]) if self.cfg.reset_optimizer else o
        self.iterations[i] += 1
        self.at(self.end_of(i, self.iterations[i]), 2, "end", i)

    def send_to_peers(self, i, t, keys, trained, m, kind):
        """Node i queues `trained` to its m routed peers of tick t (each maybe lost)."""
        peers = np.asarray(self.route(keys.route, i))
        lost = network.message_lost(self.cfg, keys.spare, jax.numpy.array([i]), (m,),
                                    jax.numpy.asarray(peers)[None])
        lost = np.zeros(m, bool) if lost is None else np.asarray(lost[0])
        for j, r in enumerate(peers):
            self.enqueue(i, t, int(r), trained.copy(), kind, bool(lost[j]))

    # ------------------------------------------------------------------------------ events

    def on_leave(self, t, i, end, r, payload, what, is_lost, m):
        """A model has left node i's link at sub-tick `end`, to r: it is lost on the way,
        arrives, or waits at r's download link."""
        if m not in self.on_link[i]:
            return   # dropped when its sender went offline
        self.on_link[i].discard(m)
        self.sent[i] += 1
        R, offline = self.R, self.offline
        reach = end + pair_latency(self.table, i, r)   # the sub-tick it reaches its receiver
        if is_lost:   # sent, and lost on the way: it never arrives (counted then)
            self.at(-(-reach // R), 0, "lost", r)
        elif self.downloads is None:  # it arrives at the first tick at or after reaching r
            self.at(-(-reach // R), 0, "arrive", i, r, payload, what)
        elif offline_at(offline[r], -(-reach // R)):   # an offline receiver never takes it
            self.at(-(-reach // R), 0, "lost", r)
        else:   # it waits for r's download link (Swift), which must take it all before
            # its sender goes offline (plus the latency) and before r goes offline
            stop = min([s_j for s_j in offline[i] if s_j * R >= end] + [self.T])
            deadline = stop * R + pair_latency(self.table, i, r)
            later = [s_j for s_j in offline[r] if s_j > -(-reach // R)]
            if later:
                deadline = min(deadline, (min(later) - 1) * R)
            self.downloads.reach(r, reach, i, self.down_units_of(r, None), deadline,
                                 (i, r, payload, what))
            self.at(-(-reach // R), 0.5, "download", r)
        self.log.append((t, "sent", (i, r, what)))

    def on_offline(self, t, i):
        """Node i goes offline: its queue and the model on the wire are dropped."""
        self.dropped[i] += self.K * len(self.on_link[i])
        self.on_link[i].clear()
        self.free_at[i] = min(int(self.free_at[i]), t * self.R)   # the link is empty from now

    def on_download(self, t, r):
        """r's download link serves, first come first served, what reached it by now."""
        for tick, taken, message in self.downloads.serve(r, t):
            self.at(tick, 0, *(("arrive", *message) if taken else ("lost", r)))

    def on_lost(self, t, r):
        """A model to r is lost: on the way, or on a download link at its deadline."""
        self.lost_at[r] += self.K

    def on_arrive(self, t, i, r, payload, what):
        """Node i's model (or AD-PSGD ping) arrives at r: into r's inbox, unless r is offline;
        a ping schedules r's pongs of this tick."""
        if offline_at(self.offline[r], t):   # churn: it reaches an offline node, and is lost
            self.lost_at[r] += self.K
            return
        self.receive(i, r, payload)
        self.log.append((t, "arrive", (i, r, what)))
        if what == "ping":
            if not self.pings_now[r]:
                self.at(t, 1, "pong", r)
            self.pings_now[r].append(i)

    def on_pong(self, t, r):
        """AD-PSGD: r answers every ping that arrived at tick t, with its latest snapshot."""
        spare = tick_keys(self.k_sim, t).spare
        for m, j in enumerate(sorted(self.pings_now[r])):
            lost = pong_lost(self.cfg, spare, jax.numpy.array([r]), m, jax.numpy.array([j]))
            self.enqueue(r, t, j, self.latest[r].copy(), "pong",
                         lost is not None and bool(lost[0]))
            self.pongs += 1
        self.pings_now[r] = []

    def on_end(self, t, i):
        """Node i's iteration ends (Swift, AD-PSGD, local) or a round ends (the others)."""
        if self.cfg.algorithm in ("swift", "adpsgd", "local"):
            self.on_iteration_end(t, i)
        else:
            self.on_round_end(t, i)

    def on_iteration_end(self, t, i):
        """Node i trains; Swift sends its model to s peers, AD-PSGD pings s // 2 peers with it
        (and keeps it as its snapshot); then it averages its inbox in (local: no exchange)."""
        cfg, s = self.cfg, self.s
        trained, o, keys = self.train(i, t)
        if cfg.algorithm == "swift" and s > 0:
            self.send_to_peers(i, t, keys, trained, s, "model")
        if cfg.algorithm == "adpsgd":
            self.latest[i] = trained.copy()
            if s // 2 > 0:
                self.send_to_peers(i, t, keys, trained, s // 2, "ping")
        new = trained if cfg.algorithm == "local" else self.average_inbox(i, trained)
        self.finish(i, t, new, o)

    def on_round_end(self, t, i):
        """A synchronous round ends, for every node at once (same round length): each online
        node trains, sends (D-PSGD: to every neighbour; Epidemic: to s routed peers) and mixes
        what it received."""
        c = self.c
        assert np.all(c == c[0]), "synchronous rounds give every node the same length"
        # the other nodes' end events of this tick are handled here, all at once
        ends = [i] + [e[4][0] for e in self.events if e[0] == t and e[3] == "end"]
        self.events[:] = [e for e in self.events if not (e[0] == t and e[3] == "end")]
        heapq.heapify(self.events)
        for j in ends:   # the next round ends c later, also for a node that skips this one
            self.at(t + int(c[j]), 2, "end", j)
        # churn: a node offline now skips the round (no training, sending or mixing)
        ends = sorted(j for j in ends if not offline_at(self.offline[j], t))
        trained, opts, keys = {}, {}, tick_keys(self.k_sim, t)
        for j in ends:
            trained[j], opts[j], _ = self.train(j, t)
        mix = self.dpsgd_mix if self.cfg.algorithm == "dpsgd" else self.epidemic_mix
        new = mix(t, keys, ends, trained)
        for j in ends:   # as `finish`, but the next round is already scheduled
            self.params[j] = new[j].astype(np.float32)
            self.opt[j] = self.init_opt(self.params[j]) if self.cfg.reset_optimizer else opts[j]
            self.iterations[j] += 1

    def round_losses(self, t, keys, j, peers):
        """Which of j's models to `peers` this round are lost (drawn, or to an offline node:
        sent, never mixed)."""
        lost = network.message_lost(self.cfg, keys.spare, jax.numpy.array([j]), peers.shape,
                                    jax.numpy.asarray(peers)[None])
        lost = np.zeros(peers.shape, bool) if lost is None else np.asarray(lost[0])
        return lost | np.array([offline_at(self.offline[int(r)], t) for r in peers], bool)

    def dpsgd_mix(self, t, keys, ends, trained):
        """D-PSGD: every node sends its model to each neighbour, one at a time; each mixes with
        the Metropolis-Hastings weights, its own model in place of a lost one."""
        n, K, adj = self.n, self.K, self.adj
        W = metropolis_hastings(adj)
        got = {r: {r} for r in ends}     # the models r mixes (its own always)
        for j in ends:
            lost = self.round_losses(t, keys, j, np.arange(n))   # drawn per receiver id
            for r in np.flatnonzero(adj[j]):
                self.sent[j] += 1
                if lost[r]:   # r mixes its own model in its place
                    self.lost_at[r] += K
                else:
                    self.delivered[r] += K
                    got[r].add(j)
        return {r: sum(np.float32(W[r, j]) * trained[j if j in got[r] else r]
                       for j in range(n)) for r in ends}

    def epidemic_mix(self, t, keys, ends, trained):
        """Epidemic Learning: every node sends its model to s routed peers; each averages its
        inbox in."""
        for j in ends:
            peers = np.asarray(self.route(keys.route, j))
            lost = self.round_losses(t, keys, j, peers)
            for q, r in enumerate(peers):
                self.sent[j] += 1
                if lost[q]:
                    self.lost_at[int(r)] += self.K
                else:
                    self.receive(j, int(r), trained[j])
        return {r: self.average_inbox(r, trained[r]) for r in ends}
