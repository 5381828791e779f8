"""What a trace overrides and what it must fit (`cfg.trace_file`, format in `divjax.network.traces`).

- `trace_hparams`: the HParams a trace gives (its first rows' bandwidths), with a warning for
  the config fields it overrides (`unused_fields`);
- `overridden_fields` / `refuse_overridden`: the SimConfig fields a trace replaces, so a sweep
  over one of them (the same network under several labels) is refused naming it;
- `check_trace_rows`: every row (not only the first, which HParams hold) against the int32 link
  clock, with the bounds `network.clock_fits` puts on HParams (`clock_messages`).

Host-side; imports `divjax.network.traces` and nothing that imports this module back.
"""

from __future__ import annotations

import functools

import numpy as np

from divjax.config_checks import ConfigError, clock_messages
from divjax.network.traces import (
    OFFLINE_ALGORITHMS,
    _download_limited,
    _read,
    node_trace,
    read_trace,
    trace_digest,
)


def check_trace_rows(cfg, fragment_bytes: tuple) -> None:
    """Host check of every row of `cfg.trace_file` against the int32 clock, with the bounds
    `clock_fits` puts on HParams (which hold a trace's first rows only): a row's compute time,
    and the sub-ticks its upload (and, with download limits, its download) needs for the
    largest fragment, times `clock_messages`. A later row with a near-zero bandwidth (an outage
    written as 0.001 Mbit/s) would otherwise overflow the link clock or saturate the
    float-to-int32 cast and run a wrong network; it is refused naming its line and column.
    Cached on the file's contents."""
    _check_trace_rows(cfg, fragment_bytes, trace_digest(cfg.trace_file))


@functools.lru_cache(maxsize=32)
def _check_trace_rows(cfg, fragment_bytes: tuple, digest: str) -> None:
    trace = _read(cfg.trace_file, digest)
    R, tick, limit = cfg.link_resolution, cfg.tick_s, 2.0**30
    largest, M = float(max(fragment_bytes)), clock_messages(cfg)
    fix = ("write an outage as online=0 (algorithms " + ", ".join(OFFLINE_ALGORITHMS)
           + "), or raise --tick-s or lower --link-resolution")
    checks = [("compute_s", lambda v: v / tick * R, 0.0, "an iteration")]
    slack = (cfg.num_ticks + 1.0) * R
    checks.append(("upload_mbps", lambda v: largest / (v * 1e6 / 8) / tick * R * M, slack,
                   f"{M} queued messages of {int(largest)} bytes"))
    if _download_limited(cfg):
        checks.append(("download_mbps", lambda v: largest / (v * 1e6 / 8) / tick * R * M, 0.0,
                       f"{M} received messages of {int(largest)} bytes"))
    for name, units, extra, what in checks:
        v = trace.col(name)
        if v is None:
            continue
        bad = units(v) + extra >= limit
        if bad.any():
            r = int(np.argmax(bad))
            raise ConfigError(
                f"{trace.where(r, name)}: {name}={v[r]:g} does not fit the int32 link clock of "
                f"{R} sub-ticks per tick of {tick:g} s: {what} take {units(v[r]) / R * tick:.3g}"
                f" s (at most {(limit - extra) / R * tick:.3g} s fit): {fix}")


def trace_hparams(cfg, hp):
    """`hp` with the trace's constant bandwidths where it gives them: HParams.upload_bps, and
    HParams.download_bps (read only while download limits are on, `config.download_limited`);
    `hp` itself without a trace or without those columns."""
    if not cfg.trace_file:
        return hp
    import jax.numpy as jnp

    nt = node_trace(cfg)
    if nt.download_bps is not None and not _download_limited(cfg):
        import warnings

        warnings.warn(f"{cfg.trace_file}: the trace's download_mbps column is not used: download "
                      f"limits are off (--download-mbps X, any X > 0, turns them on for "
                      f"every algorithm but epidemic; the trace's values replace X)", stacklevel=2)
    unused = unused_fields(cfg)
    if unused:
        import warnings

        warnings.warn(f"{cfg.trace_file}: the trace sets every node's "
                      f"{', '.join(sorted(set(unused.values())))}, so the config's "
                      f"{', '.join(f'{k}={getattr(cfg, k)!r}' for k in unused)} "
                      f"{'is' if len(unused) == 1 else 'are'} not used", stacklevel=2)
    for field, bps in (("upload_bps", nt.upload_bps), ("download_bps", nt.download_bps)):
        if bps is not None:
            hp = hp.replace(**{field: jnp.broadcast_to(jnp.asarray(bps, jnp.float32),
                                                       np.shape(getattr(hp, field)))})
    return hp


def overridden_fields(cfg) -> dict[str, str]:
    """{field: the trace column that replaces it} for the fields whose value `cfg.trace_file`
    overrides ({} without a trace): SimConfig fields (and the sweep alias straggler_share) and
    the HParams leaves they build. A trace sets every node's compute time (compute_s,
    straggler_compute_factor, compute_spread, compute_seed; HParams.compute_s), its
    upload_mbps column every upload (fast_mbps, straggler_mbps; HParams.upload_bps), its
    download_mbps column, with download limits on, every download (straggler_download_mbps;
    HParams.download_bps), and n_stragglers (straggler_share) once nothing it picks is left.
    Sweeping one of them runs the same network under several labels: `refuse_overridden`."""
    if not cfg.trace_file:
        return {}
    columns = read_trace(cfg.trace_file).columns
    out = dict.fromkeys(("compute_s", "straggler_compute_factor", "compute_spread",
                         "compute_seed"), "compute_s")
    up = "upload_mbps" in columns
    down = "download_mbps" in columns and _download_limited(cfg)
    if up:
        out.update(dict.fromkeys(("fast_mbps", "straggler_mbps", "upload_bps"), "upload_mbps"))
    if down:
        out.update(dict.fromkeys(("straggler_download_mbps", "download_bps"), "download_mbps"))
    if up and (down or not _download_limited(cfg)):
        out.update(dict.fromkeys(("n_stragglers", "straggler_share"), "upload_mbps"))
    return out


def refuse_overridden(cfg, names, what: str = "grid field") -> None:
    """Raise a ConfigError naming the first of `names` (a sweep's grid fields, or flags given
    explicitly) that `cfg.trace_file` overrides (`overridden_fields`). download_mbps: refused
    when the trace gives download_mbps and `names` maps it to two or more values > 0 (each
    only turns the limits on; the trace sets the bandwidths)."""
    over = overridden_fields(cfg)
    for name in names:
        col = over.get(name)
        if name == "download_mbps" and isinstance(names, dict) and cfg.trace_file and (
                "download_mbps" in read_trace(cfg.trace_file).columns
                and sum(float(v) > 0 for v in names[name]) > 1):
            col = "download_mbps"
        if col:
            raise ConfigError(
                f"{what} {name!r} is overridden by trace_file={cfg.trace_file!r}: its {col} "
                f"column sets every node's {col.split('_')[0]}, so every value of {name} would "
                f"run the same network under another label; drop {name}, or sweep "
                f"trace_file over several traces")


def unused_fields(cfg) -> dict[str, str]:
    """{SimConfig field: column} of the `overridden_fields` that the config sets to another
    value than SimConfig's default (a flag given, a preset's value): what a single run with
    this trace silently ignored before (`trace_hparams` warns)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(type(cfg))}
    return {k: col for k, col in overridden_fields(cfg).items()
            if k in defaults and getattr(cfg, k) != defaults[k]}
