"""The grid's parts as groups of cells: a group runs as one compiled, vmapped program (one
config x regime points that only change HParams x seeds)."""

from __future__ import annotations

from divjax.reproduction.configs import (
    ALL_PARTS,
    APPENDED,
    CIFAR_ALGOS,
    CIFAR_MAP,
    CIFAR_MAP_ITERS,
    DOWNLOAD_ALGOS,
    LONG_ALGOS,
    MAP_ALGOS,
    MAP_RATIOS,
    MAP_STRAGGLERS,
    ML_ALGOS,
    OMEGA_MAP,
    OMEGA_MAP_K,
    OMEGAS,
    Group,
    cifar_config,
    fine_clock,
    main_config,
    model_params,
    movielens_base,
    paper_stragglers,
    send_time_s,
)
from divjax.reproduction.cifar_omega import cifar_omega_groups
from divjax.reproduction.tuning import pilot_groups, tune_groups, tuned_groups
from divjax.reproduction.tuning import tuned_long_groups


def map_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """MovieLens regime map: compute time = ratio x the fast send time; a fixed number of
    iterations per cell (so the training work is the same in every cell)."""
    base = movielens_base(scale, data_dir)
    if scale == "tiny":
        ratios, strag, iters, per_eval = (1.0,), (0, 1), 6, 2
    else:
        ratios, strag, iters, per_eval = MAP_RATIOS, MAP_STRAGGLERS, (30 if scale == "cpu"
                                                                     else 150), 3
    t_send = send_time_s(model_params(base)) if scale != "tiny" else 0.1
    out = []
    for r in ratios:
        compute = float(f"{r * t_send:.3g}")
        tick = compute / (10 if scale == "cpu" else 20)
        cfg = fine_clock(base.replace(compute_s=compute, tick_s=tick,
                                      duration_s=iters * compute,
                                      eval_every_s=per_eval * compute))
        regimes, points = [], []
        for k in strag:
            k = min(k, cfg.n_nodes)
            regimes.append(f"r{r:g}-s{k}")
            points.append({"n_stragglers": k, "straggler_mbps": paper_stragglers(k)
                           if scale != "tiny" else (0.5,)})
        for a in MAP_ALGOS:
            if a == "adpsgd":   # ~12 GB per point on saturated links: one point per call
                out += [Group("movielens", "map", a, cfg.replace(algorithm=a), (reg,), (pt,),
                              seeds, 1) for reg, pt in zip(regimes, points, strict=True)]
            else:
                out.append(Group("movielens", "map", a, cfg.replace(algorithm=a),
                                 tuple(regimes), tuple(points), seeds,
                                 1 if a in APPENDED else 0))
    # Order (CPU time is the constraint; AD-PSGD cells cost the most):
    # DivShare and Swift everywhere first (the gain map), ends and middle of the compute axis
    # first; then AD-PSGD, the paper's 7 stragglers first, at 1x, 0.1x, 10x, 0.316x, 3.16x.
    rank = {1.0: 0, 0.1: 1, 10.0: 2, 0.316: 3, 3.16: 4}

    def order(g):
        r, k = g.regimes[0][1:].split("-s")
        return (g.algo == "adpsgd", g.algo == "adpsgd" and int(k) != 7, rank.get(float(r), 9))

    return sorted(out, key=order)


def main_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """MovieLens main comparison: every algorithm, one regime."""
    cfg = main_config(scale, data_dir)
    algos = ML_ALGOS if scale != "tiny" else ("divshare", "adpsgd", "swift")
    # appended queues: a ring of ~45 slots of 50 MB per run, ~12 GB compiled: one
    # seed per call
    return [Group("movielens", "main", a, cfg.replace(algorithm=a), ("main",), ({},),
                  seeds, 1 if a in APPENDED else 0) for a in algos]


def long_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """How long until the best algorithm stops improving: DivShare (the best in the main
    comparison) and local-only, whose rings stay small, 1,000 iterations (300 were not enough:
    DivShare still improved 4.6% over their last 20%)."""
    cfg = main_config(scale, data_dir)
    iters = 1000 if scale != "tiny" else 40
    cfg = cfg.replace(duration_s=iters * cfg.compute_s,
                      eval_every_s=(10 if scale != "tiny" else 4) * cfg.compute_s)
    return [Group("movielens", "long", a, cfg.replace(algorithm=a), ("long",),
                  ({},), seeds, 0) for a in LONG_ALGOS]


def downloads_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """The main comparison with the testbed's download limits too (Kollaps shaped both
    directions: every node's download = its upload); DivShare, AD-PSGD and Swift."""
    cfg = main_config(scale, data_dir)
    cfg = cfg.replace(algorithm="divshare", download_mbps=cfg.fast_mbps,
                      straggler_download_mbps=cfg.straggler_mbps)
    return [Group("movielens", "downloads", a, cfg.replace(algorithm=a),
                  ("downloads",), ({},), seeds, 1 if a in APPENDED else 0)
            for a in DOWNLOAD_ALGOS]


def cifar_downloads_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """The CIFAR-10 setting with the testbed's download limits."""
    cfg = cifar_config(scale, data_dir)
    cfg = cfg.replace(algorithm="divshare", download_mbps=cfg.fast_mbps,
                      straggler_download_mbps=cfg.straggler_mbps)
    return [Group("cifar10", "downloads", a, cfg.replace(algorithm=a),
                  ("downloads",), ({},), (s,), 1)
            for s in seeds for a in DOWNLOAD_ALGOS]


def cifar_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """CIFAR-10 at 60 nodes, shortened; seed-major order: a stopped run still leaves complete
    paired seeds."""
    cfg = cifar_config(scale, data_dir)
    algos = CIFAR_ALGOS if scale != "tiny" else ("divshare", "adpsgd")
    return [Group("cifar10", "cifar", a, cfg.replace(algorithm=a), ("main",), ({},),
                  (s,), 1) for s in seeds for a in algos]


def build_groups(parts: list[str], scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """The groups of `parts`, in the order given."""
    builders = {"main": main_groups, "long": long_groups, "map": map_groups,
                "cifar": cifar_groups, "downloads": downloads_groups,
                "cifar-downloads": cifar_downloads_groups, "omega": omega_groups,
                "omega-map": omega_map_groups, "cifar-map": cifar_map_groups,
                "tune": tune_groups, "pilot": pilot_groups, "tuned": tuned_groups,
                "tuned-long": tuned_long_groups,
                "cifar-omega": lambda *a: cifar_omega_groups(*a, cifar_map_groups(*a))}
    groups = []
    for part in parts:
        if part not in builders:
            raise SystemExit(f"unknown part {part!r}: use {', '.join(ALL_PARTS)}")
        groups += builders[part](scale, data_dir, seeds)
    return groups


def omega_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """The Omega ablation on the MovieLens main setting, all at one commit: DivShare with
    Omega in OMEGAS (regime "omega<K>"; Omega = 1 sends whole models, so DivShare there is Swift
    with a replaced queue) and Swift beside it (regime "omega1", appended queue): Omega 1 against
    Swift isolates queue replacement, Omega > 1 against Omega 1 fragmentation."""
    cfg = main_config(scale, data_dir)
    omegas = OMEGAS if scale != "tiny" else (1, 2)
    out = [Group("movielens", "omega", "divshare", cfg.replace(algorithm="divshare",
                                                               n_fragments=k),
                 (f"omega{k}",), ({},), seeds, 0) for k in omegas]
    out.append(Group("movielens", "omega", "swift", cfg.replace(algorithm="swift"),
                     ("omega1",), ({},), seeds, 1))
    return out


def omega_map_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """The Omega ablation in a saturated (compute 0.1x the fast send time) and an unsaturated
    (10x) regime of the map, with the paper's 7 stragglers: DivShare at OMEGA_MAP_K and Swift,
    all at one commit (regimes "r<ratio>-s7-omega<K>"; Swift's as "r<ratio>-s7-omega1")."""
    if scale == "tiny":
        return []
    out = []
    for g in map_groups(scale, data_dir, seeds):
        if g.algo not in ("divshare", "swift"):
            continue
        for i, reg in enumerate(g.regimes):
            r, k = reg[1:].split("-s")
            if (float(r), int(k)) not in OMEGA_MAP:
                continue
            for K in (OMEGA_MAP_K if g.algo == "divshare" else (1,)):
                out.append(Group("movielens", "omega-map", g.algo,
                                 g.cfg.replace(n_fragments=K), (f"{reg}-omega{K}",),
                                 (g.points[i],), seeds, g.chunk))
    return out


def cifar_map_groups(scale: str, data_dir: str, seeds: tuple) -> list[Group]:
    """CIFAR-10 regime map (issue 31): compute time per iteration = ratio x the fast send time
    of the GN-LeNet (6 models at 60 Mbit/s) x stragglers (0 and the paper's 7 of 60), DivShare,
    AD-PSGD and Swift, 3 seeds; the `cifar` part's shortened training (8 local steps, 24
    iterations per cell, so the training work is the same in every cell: the simulated compute
    time is a free parameter). Regimes "r<ratio>-s<k>" in the cifar10 folder; seed-major order
    within a regime, so a stopped run leaves complete paired seeds."""
    if scale == "tiny":
        return []
    base = cifar_config(scale, data_dir)
    t_send = send_time_s(model_params(base))
    iters = CIFAR_MAP_ITERS if scale == "cpu" else 160
    out = []
    for r, k in CIFAR_MAP:
        compute = float(f"{r * t_send:.3g}")
        cfg = fine_clock(base.replace(compute_s=compute, tick_s=compute / 10,
                                      duration_s=iters * compute, eval_every_s=4 * compute,
                                      n_stragglers=k, straggler_mbps=paper_stragglers(k)))
        out += [Group("cifar10", "cifar-map", a, cfg.replace(algorithm=a), (f"r{r:g}-s{k}",),
                      ({},), (s,), 1) for s in seeds for a in MAP_ALGOS]
    return out


def with_plugins(groups: list[Group], plugins: dict[str, str]) -> list[Group]:
    """`groups` plus, for each plug-in (cell name -> `MODULE:ATTR` / `PATH.py:ATTR` of an
    algorithm factory, `divjax.plugins`), a copy of every DivShare group running it instead:
    the same task, regimes, points, seeds and network, so its cells pair by seed with the
    paper's algorithms' (`<regime>/<name>-seed<k>.json`)."""
    return groups + [g._replace(algo=name, cfg=g.cfg.replace(algorithm=spec))
                     for name, spec in plugins.items() for g in groups
                     if g.algo == "divshare"]


def expected_cells(parts, scale, data_dir, seeds) -> list[tuple]:
    groups = build_groups(parts, scale, data_dir, seeds)
    return [(g.task, r, g.algo, s) for g in groups for r in g.regimes for s in g.seeds]
