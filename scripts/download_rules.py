"""How the engine's download rule differs from fair sharing, on the testbed's network (issue 18).

divjax serves every download link first come, first served by arrival time (`divjax/network/downloads.py`):
one message at a time, the others wait. Real links carrying several TCP flows share the
bandwidth between the messages in transfer instead (processor sharing: m messages present each
get 1/m of it). Both rules see the same messages: the script takes the engine's own schedule of
every DivShare message of a run (`divshare.download_messages`: receiver, arrival at the
download link, deadline = the sender's next iteration end plus the latency, download time),
serves it with the engine's FIFO (`downloads.fifo_deliveries`) and with an event-driven
processor-sharing simulation written here, and compares the messages lost at their deadline and
the delays from arrival at the link to delivery (rounded to ticks, as the engine delivers),
separately for normal nodes and stragglers. Message timing only: no training (the schedule does
not depend on the models).

    python scripts/download_rules.py [--preset movielens-testbed] [--duration-s 20] [--seed 0]

Prints a table and writes docs/results/download-rules.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from divjax.algorithms.divshare import download_messages
from divjax.config import default_hparams, straggler_mask
from divjax.network.downloads import decode, fifo_deliveries
from divjax.frontends.presets import get_preset
from divjax.engine.sim import context, make_engine

ROOT = Path(__file__).resolve().parents[1]


def processor_sharing(avail: np.ndarray, deadline: np.ndarray, units: np.ndarray) -> tuple:
    """One link, messages sorted by arrival: every message present gets an equal share of the
    link; one not received by its deadline leaves unfinished (lost). Returns (finish sub-tick
    (float, nan if lost), lost bool), per message."""
    N = len(avail)
    finish = np.full(N, np.nan)
    lost = np.zeros(N, bool)
    active: list[int] = []
    remaining = units.astype(float).copy()
    now, nxt = 0.0, 0
    while nxt < N or active:
        if not active:
            now = max(now, float(avail[nxt]))
        m = len(active)
        dt = np.inf
        if nxt < N:
            dt = float(avail[nxt]) - now
        if m:
            rem = remaining[active]
            dt = min(dt, float(rem.min()) * m, float(deadline[active].min()) - now)
        dt = max(dt, 0.0)
        if m:
            remaining[active] -= dt / m
        now += dt
        keep = []
        for i in active:
            if remaining[i] <= 1e-9:
                finish[i] = now
            elif now >= deadline[i]:
                lost[i] = True
            else:
                keep.append(i)
        active = keep
        while nxt < N and avail[nxt] <= now:
            if units[nxt] == 0:
                finish[nxt] = float(avail[nxt])
            else:
                active.append(nxt)
            nxt += 1
    return finish, lost


def summary(delay_ms: np.ndarray, lost: np.ndarray) -> dict:
    d = delay_ms[~lost]
    return {"messages": int(lost.size), "lost_pct": float(100 * lost.mean()) if lost.size else 0.0,
            "delay_mean_ms": float(d.mean()) if d.size else None,
            "delay_p95_ms": float(np.percentile(d, 95)) if d.size else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="movielens-testbed")
    ap.add_argument("--duration-s", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "download-rules.json")
    args = ap.parse_args(argv)
    cfg = get_preset(args.preset).replace(duration_s=args.duration_s,
                                          eval_every_s=args.duration_s, data_dir=args.data_dir)
    engine = make_engine(cfg)
    cfg, spec = engine.cfg, engine.init.args[0]
    hp = default_hparams(cfg)
    _, k_sim = jax.random.split(jax.random.key(args.seed))     # as the engine splits its key
    t0 = time.perf_counter()
    recv, avail, deadline, units, enters, _ = (np.asarray(x) for x in jax.jit(
        lambda h, k: download_messages(context(spec, h, k), k))(hp, k_sim))
    n, R = cfg.n_nodes, cfg.link_resolution
    sender = np.broadcast_to(np.arange(n)[:, None, None, None], recv.shape)
    flat = lambda x: x.ravel()[enters.ravel()]  # noqa: E731
    r, a, dl, u, snd = (flat(x) for x in (recv, avail, deadline, units, sender))
    tick, lost_f = (np.asarray(x) for x in decode(fifo_deliveries(
        *(jax.numpy.asarray(x, jax.numpy.int32) for x in (r, a, dl, u, snd)), R, n)))
    fifo_delay = (tick * R - a) * cfg.tick_s / R * 1e3
    ps_delay = np.full(r.size, np.nan)
    lost_p = np.zeros(r.size, bool)
    for j in range(n):                       # one link at a time, arrival order (ties: sender)
        idx = np.flatnonzero(r == j)
        idx = idx[np.lexsort((snd[idx], a[idx]))]
        fin, lost = processor_sharing(a[idx], dl[idx], u[idx])
        lost_p[idx] = lost
        ps_delay[idx] = (np.ceil(fin / R) * R - a[idx]) * cfg.tick_s / R * 1e3
    slow = straggler_mask(cfg)[r]
    res = {"preset": args.preset, "duration_s": args.duration_s, "seed": args.seed,
           "n_nodes": n, "download_mbps": cfg.download_mbps,
           "straggler_download_mbps": list(cfg.straggler_download_mbps),
           "wall_s": time.perf_counter() - t0, "rules": {}}
    print(f"| rule | receivers | messages | lost % | delay mean ms | delay p95 ms |")
    print("|---|---|---|---|---|---|")
    for rule, delay, lost in (("fifo (divjax)", fifo_delay, lost_f),
                              ("processor sharing", ps_delay, lost_p)):
        res["rules"][rule] = {}
        for who, mask in (("all", np.ones_like(slow)), ("normal", ~slow), ("stragglers", slow)):
            s = summary(delay[mask], lost[mask])
            res["rules"][rule][who] = s
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            print(f"| {rule} | {who} | {s['messages']} | {s['lost_pct']:.2f} | "
                  f"{fmt(s['delay_mean_ms'])} | {fmt(s['delay_p95_ms'])} |")
    res["same_fate_pct"] = float(100 * np.mean(lost_f == lost_p))
    print(f"same fate (delivered or lost) under both rules: {res['same_fate_pct']:.2f}% of "
          f"messages")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")
    return res


if __name__ == "__main__":
    main()
