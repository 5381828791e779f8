"""The Omega ablation on CIFAR-10 (part `cifar-omega`, issue 31): DivShare on the `cifar` part's
setting at Omega in CIFAR_OMEGAS and in the straggler-bound map regime r0.1-s7 (the `cifar-map`
part's config) at CIFAR_OMEGA_MAP_K, all at one commit: its groups (the analysis and the document's
section are `doc_cifar_omega`)."""

from __future__ import annotations

from divjax.config_checks import ConfigError
from divjax.reproduction.configs import OMEGA_MAP_K, OMEGAS, Group, cifar_config, model_params

CIFAR_OMEGAS = OMEGAS            # the main setting: (1, 2, 4, 8, 16, 64)
CIFAR_OMEGA_MAP = "r0.1-s7"      # the cifar-map regime: compute 0.1x the fast send time, 7 strag.
CIFAR_OMEGA_MAP_K = OMEGA_MAP_K  # (1, 8, 64)
SEEDS = (0, 1, 2)
# Run order (the CPU is the constraint): the two gains first (Omega 1 and 8, both settings),
# then the ends of the Omega axis, then its middle; seed-major within each step, so a stopped
# run leaves complete paired seeds.
PRIORITY = (("main", (1, 8)), (CIFAR_OMEGA_MAP, (1, 8)), ("main", (64,)),
            (CIFAR_OMEGA_MAP, (64,)), ("main", (2,)), ("main", (16,)), ("main", (4,)))


def omega_regime(setting: str, k: int) -> str:
    """The cell folder of DivShare at Omega k: "omega<k>" (main) or "<regime>-omega<k>"."""
    return f"omega{k}" if setting == "main" else f"{setting}-omega{k}"


def check_omegas(cfg, omegas, setting: str) -> None:
    """Refuse an Omega above the model's parameter count (the engine would, after compiling)."""
    D = model_params(cfg)
    if max(omegas) > D:
        raise ConfigError(f"cifar-omega ({setting}): Omega {max(omegas)} exceeds the model's "
                          f"{D} parameters: keep CIFAR_OMEGAS / CIFAR_OMEGA_MAP_K <= {D}")


def cifar_omega_groups(scale: str, data_dir: str, seeds: tuple,
                       map_groups: list[Group]) -> list[Group]:
    """DivShare at each Omega on the `cifar` part's setting (regimes "omega<K>") and, from
    `map_groups` (the cifar-map part's groups), on its r0.1-s7 config (regimes
    "r0.1-s7-omega<K>"); one seed per group, in PRIORITY order. Tiny scale: Omega 1 and 2 on the
    main setting only (the cifar-map part has no tiny groups)."""
    settings = {"main": (cifar_config(scale, data_dir), CIFAR_OMEGAS if scale != "tiny"
                         else (1, 2))}
    for g in map_groups:
        if g.algo == "divshare" and g.regimes == (CIFAR_OMEGA_MAP,):
            settings[CIFAR_OMEGA_MAP] = (g.cfg, CIFAR_OMEGA_MAP_K)
    if scale != "tiny" and CIFAR_OMEGA_MAP not in settings:
        raise ConfigError(f"cifar-omega: the cifar-map part has no DivShare group for "
                          f"{CIFAR_OMEGA_MAP}: add it to configs.CIFAR_MAP")
    if scale != "tiny":
        for name, (cfg, ks) in settings.items():
            check_omegas(cfg, ks, name)
    priority = PRIORITY if scale != "tiny" else (("main", (1, 2)),)
    out = []
    for name, ks in priority:
        cfg, allowed = settings[name]
        out += [Group("cifar10", "cifar-omega", "divshare",
                      cfg.replace(algorithm="divshare", n_fragments=k),
                      (omega_regime(name, k),), ({},), (s,), 1)
                for s in seeds for k in ks if k in allowed]
    return out

