"""An independent D-PSGD reference: round lengths derived from the bandwidths, latencies and
download limits here, node by node, message by message (tests/test_dpsgd_downloads.py).

`reference_baselines` times D-PSGD's rounds with the algorithm's own `adjust_timing`, so it
cannot catch a wrong round length. This module shares none of the engine's timing code: it
reads the HParams in seconds and bytes/s and the model's fragment sizes in bytes, converts them
with the documented rounding rules (`network.link_table`: compute to the nearest tick, at least
one; latency to the nearest link sub-tick; a fragment's upload to whole sub-ticks rounded up, at
least one; its download rounded up, 0 where unlimited), and plays one round's exchange as the
D-PSGD docstring and ../shared/paper.md describe it:

- every node sends its post-training model to each neighbour in increasing id order, one model
  after another on its upload link (a model is its K fragments back to back), all links starting
  together when the slowest node has finished computing;
- a model reaches its receiver after the sender's latency plus the latency between their
  regions, and waits on the receiver's download link, served one at a time in the order the
  models reach it (ties: the smaller sender first);
- the round lasts the slowest compute plus the later of (a) the upload rule: the slowest link's
  time to send its model to all its neighbours plus the largest latency from a node to another
  (neighbours or not, as the D-PSGD docstring's "largest latency"), and (b) the moment the
  last model is received in full; rounded up to a tick once.

Every round has that length; at each round end every online node trains (the engine's per-node
training function and batch keys: what a run's arithmetic and random draws are, shared as
`reference_baselines` shares them) and mixes with Metropolis-Hastings weights computed here; a
model lost on the way (`network.message_lost`, the run's draws) or sent to an offline node is
replaced by the receiver's own model. Plain loops over nodes and messages: tiny n only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from divjax.network import links as network
from divjax.config import HParams, SimConfig
from divjax.engine.local import make_optimizer, make_train_one, node_batch_key
from divjax.reference.divshare import initial_models, iteration_schedule
from divjax.engine.sizing import model_layout
from divjax.engine.state import tick_keys
from divjax.tasks.base import Task
from divjax.network.topology import adjacency


@dataclass
class DPSGDResult:
    params: np.ndarray       # (n, K, F) every node's model at the end
    sent: np.ndarray         # (n, K) full models sent, counted once per fragment
    delivered: np.ndarray    # (n,) fragments of full models mixed in, per receiver
    lost: np.ndarray         # (n,) fragments of full models to each receiver lost
    iterations: np.ndarray   # (n,) rounds each node took part in
    round_ticks: int         # the length of every round
    upload_subticks: int     # the upload rule's exchange time (link sub-ticks)
    download_subticks: int   # when the last model of a round is received in full (sub-ticks)


def up_units(bytes_: float, bps: float, tick_s: float, R: int) -> int:
    """Link sub-ticks one fragment of `bytes_` takes at upload `bps` bytes/s (at least one)."""
    return max(1, math.ceil(bytes_ / bps / tick_s * R - 1e-3))


def down_units(bytes_: float, bps: float, tick_s: float, R: int) -> int:
    """Link sub-ticks a download link of `bps` bytes/s takes for one fragment; 0 unlimited."""
    if math.isinf(bps):
        return 0
    return max(0, math.ceil(bytes_ / bps / tick_s * R - 1e-3))


def link_quantities(cfg: SimConfig, hp: HParams, fragment_bytes) -> dict:
    """Per node, in integer ticks and link sub-ticks, from the HParams' seconds and bytes/s."""
    R, tick = cfg.link_resolution, float(cfg.tick_s)
    n = cfg.n_nodes
    fb = [float(b) for b in np.asarray(fragment_bytes)]
    compute = [max(1, round(float(c) / tick)) for c in np.asarray(hp.compute_s, np.float64)]
    latency = [max(0, round(float(x) / tick * R)) for x in np.asarray(hp.latency_s, np.float64)]
    up = [sum(up_units(b, float(hp.upload_bps[i]), tick, R) for b in fb) for i in range(n)]
    limited = cfg.download_mbps > 0 or any(m > 0 for m in cfg.straggler_download_mbps)
    down = [sum(down_units(b, float(hp.download_bps[i]), tick, R) for b in fb)
            if limited else 0 for i in range(n)]
    region, extra_ms = network.region_latency_ms(cfg)   # the config's region assignment, in ms
    extra = [[round(float(extra_ms[a, b]) / 1e3 / tick * R) for b in range(extra_ms.shape[1])]
             for a in range(extra_ms.shape[0])]
    pair = [[latency[i] + extra[int(region[i])][int(region[r])] for r in range(n)]
            for i in range(n)]
    return {"compute": compute, "up": up, "down": down, "pair": pair}


def upload_rule_subticks(sends: list[int], q: dict) -> int:
    """Sub-ticks of the upload rule: the slowest link sending its node's `sends[i]` models one
    after another, plus the largest latency from a node to another (0 if nothing is sent; a
    node sends nothing to itself, so a latency file's diagonal plays no part, issue 30)."""
    busy = max(m * u for m, u in zip(sends, q["up"], strict=True))
    n = len(sends)
    largest = max(q["pair"][i][r] for i in range(n) for r in range(n) if r != i)
    return busy + largest if busy > 0 else 0


def exchange_subticks(adj: np.ndarray, q: dict) -> tuple[int, int]:
    """(the upload rule, the sub-tick the last model is received in full) of one D-PSGD round's
    exchange, from its start: each upload link sends to its neighbours one after another, each
    download link receives what reaches it first come, first served."""
    n = adj.shape[0]
    reaching = {r: [] for r in range(n)}          # per receiver: (reach sub-tick, sender)
    for i in range(n):
        clock = 0                                  # node i's upload link
        for r in range(n):                         # neighbours in increasing id order
            if adj[i, r]:
                clock += q["up"][i]
                reaching[r].append((clock + q["pair"][i][r], i))
    upload_rule = upload_rule_subticks([int(adj[i].sum()) for i in range(n)], q)
    last = 0
    for r in range(n):
        free = 0                                   # node r's download link
        for reach, _sender in sorted(reaching[r]):
            free = max(free, reach) + q["down"][r]
            last = max(last, free)
    return upload_rule, last


def sync_round_ticks(cfg: SimConfig, hp: HParams, fragment_bytes) -> int:
    """The length in ticks of every round of a synchronous algorithm (D-PSGD: the exchange
    above; Epidemic Learning: the upload rule with `fanout` models per node)."""
    q = link_quantities(cfg, hp, fragment_bytes)
    if cfg.algorithm == "dpsgd":
        comm = max(exchange_subticks(np.asarray(adjacency(cfg), bool), q))
    else:
        assert cfg.algorithm == "epidemic", cfg.algorithm
        comm = upload_rule_subticks([cfg.fanout] * cfg.n_nodes, q)
    return max(q["compute"]) + -(-comm // cfg.link_resolution)


def mh_weights(adj: np.ndarray) -> np.ndarray:
    """Metropolis-Hastings weights, entry by entry: W_ij = 1 / (1 + max(deg_i, deg_j)) on an
    edge, W_ii = 1 - the rest of row i."""
    n = adj.shape[0]
    deg = [int(adj[i].sum()) for i in range(n)]
    W = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j and adj[i, j]:
                W[i, j] = 1.0 / (1 + max(deg[i], deg[j]))
        W[i, i] = 1.0 - W[i].sum()
    return W


def simulate(cfg: SimConfig, task: Task, hp: HParams, key: jax.Array) -> DPSGDResult:
    """Run D-PSGD (cfg.algorithm == "dpsgd") round by round for cfg.num_ticks ticks."""
    assert cfg.algorithm == "dpsgd", cfg.algorithm
    n, T = cfg.n_nodes, cfg.num_ticks
    layout = model_layout(cfg, task)
    K = layout.K
    adj = np.asarray(adjacency(cfg), bool)
    upload_rule, last = exchange_subticks(adj, link_quantities(cfg, hp, layout.fragment_bytes))
    round_ticks = sync_round_ticks(cfg, hp, layout.fragment_bytes)
    W = mh_weights(adj)
    tx = make_optimizer(cfg, hp)
    train_one = jax.jit(make_train_one(cfg, task, layout, tx))
    init_opt = jax.jit(tx.init)
    params, k_sim = initial_models(cfg, task, layout, key)
    _, offline = iteration_schedule(cfg, np.full(n, round_ticks), k_sim)
    opt = [init_opt(p) for p in params]
    sent = np.zeros((n, K), np.int64)
    delivered, lost_at, iterations = (np.zeros(n, np.int64) for _ in range(3))

    def offline_at(i, t):
        return any(s <= t < e for s, e in offline[i].items())

    for t in range(round_ticks, T, round_ticks):   # every node's round ends at t
        keys = tick_keys(k_sim, t)
        online = [i for i in range(n) if not offline_at(i, t)]
        trained, opts = {}, {}
        for i in online:
            p, o = train_one(params[i], opt[i], node_batch_key(keys.batch, i), i)
            trained[i], opts[i] = np.asarray(p, np.float32), o
        got = {r: set() for r in online}            # the senders whose models r mixes
        for j in online:
            lost = network.message_lost(cfg, keys.spare, jax.numpy.array([j]), (n,),
                                        jax.numpy.arange(n)[None])
            lost = np.zeros(n, bool) if lost is None else np.asarray(lost[0])
            for r in range(n):
                if not adj[j, r]:
                    continue
                sent[j] += 1
                if lost[r] or r not in got:         # lost on the way, or r is offline
                    lost_at[r] += K
                else:
                    delivered[r] += K
                    got[r].add(j)
        for r in online:
            x = np.float32(W[r, r]) * trained[r]
            for j in range(n):
                if j != r and adj[r, j]:
                    x = x + np.float32(W[r, j]) * trained[j if j in got[r] else r]
            params[r] = x.astype(np.float32)
            opt[r] = init_opt(params[r]) if cfg.reset_optimizer else opts[r]
            iterations[r] += 1
    return DPSGDResult(np.stack(params), sent, delivered, lost_at, iterations, round_ticks,
                       upload_rule, last)
