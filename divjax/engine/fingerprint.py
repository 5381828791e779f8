"""What a checkpoint belongs to: a run's fingerprint, and how two fingerprints differ.

`divjax.engine.checkpoint` stores `fingerprint(...)` with every checkpoint and compares it on restore
and save (`fingerprint_mismatch`), so a run never continues from (or overwrites) another run's
checkpoints, nor resumes with other float rounding. The config holds the paths of its input
files; the fingerprint also holds their contents' sha256 (`input_digests`), so a file rewritten
at the same path (a regenerated trace) is another run, never a resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import numpy as np

from divjax.config import HParams, SimConfig
from divjax.engine.flat import LAYOUT_VERSION
from divjax.network.pair_files import file_digest

INPUT_FIELDS = ("trace_file", "latency_file", "loss_file")   # SimConfig fields naming a file


def input_files(cfg: SimConfig) -> dict:
    """{name: path} of every input file the config names: its file fields, the edge list of
    topology "file:PATH" (as "topology"), and the source file of a plug-in algorithm or task
    (`divjax.plugins`: a changed plug-in is another run). A data directory is not hashed."""
    from divjax.plugins import plugin_record

    files = {name: getattr(cfg, name) for name in INPUT_FIELDS if getattr(cfg, name)}
    if cfg.topology.startswith("file:"):
        files["topology"] = cfg.topology[len("file:"):]
    for what, rec in plugin_record(cfg).items():
        if rec["file"]:
            files[f"{what} plug-in"] = rec["file"]
    return files


def input_digests(cfg: SimConfig) -> dict:
    """{name: sha256 of the file's contents} of `input_files` ("missing" for a file that cannot
    be read: then it differs from any that could)."""
    out = {}
    for name, path in input_files(cfg).items():
        try:
            out[name] = file_digest(path)
        except OSError:
            out[name] = "missing"
    return out


def fingerprint(cfg: SimConfig, hp: HParams, key: jax.Array | None = None,
                options: dict | None = None) -> dict:
    """What a checkpoint belongs to: the resolved config, a digest of every HParams leaf and,
    when given, the run's key data and the XLA options it compiles with (they decide its float
    rounding), and the sha256 of every input file it names (`input_digests`). Stored in every
    checkpoint and checked on restore and save, so a run never continues from (or overwrites)
    another run's checkpoints, nor resumes other bits."""
    digests = {f.name: hashlib.sha256(np.ascontiguousarray(
        np.asarray(getattr(hp, f.name), np.float32)).tobytes()).hexdigest()[:16]
        for f in dataclasses.fields(HParams)}
    fp = {"config": json.loads(json.dumps(dataclasses.asdict(cfg))), "hparams": digests,
          "layout": LAYOUT_VERSION, "inputs": input_digests(cfg)}
    if key is not None:
        fp["key"] = np.asarray(jax.random.key_data(key)).ravel().tolist()
    if options is not None:
        fp["xla"] = options
    return fp


def fingerprint_mismatch(saved: dict, current: dict) -> str | None:
    """None if `saved` (a checkpoint's) and `current` agree, else what differs in words."""
    diffs = []
    a, b = saved.get("config", {}), current["config"]
    for k in b:
        if k in a and a[k] != b[k]:
            diffs.append(f"{k}={a[k]!r} there, {b[k]!r} here")
    hp = [k for k, v in current["hparams"].items() if saved.get("hparams", {}).get(k, v) != v]
    if hp:
        diffs.append(f"HParams differ in {', '.join(hp)}")
    diffs += _input_diffs(saved, current)
    if "key" in saved and "key" in current and saved["key"] != current["key"]:
        diffs.append("the seed (key) differs")
    if "xla" in saved and "xla" in current and saved["xla"] != current["xla"]:
        diffs.append(f"it was compiled with the XLA options {saved['xla']}, here {current['xla']}"
                     " (DIVJAX_XLA_DEFAULTS as when it ran, or another divjax version)")
    saved_layout = saved.get("layout", "fragments-permuted-1")   # before layouts were recorded
    if saved_layout != current.get("layout", LAYOUT_VERSION):
        diffs.append(f"the models' fragment layout is {saved_layout!r} there, "
                     f"{LAYOUT_VERSION!r} here (written by another divjax version; rerun "
                     "from the start)")
    return "; ".join(diffs) or None


def _input_diffs(saved: dict, current: dict) -> list[str]:
    """What differs in the input files' contents (same paths, other bytes)."""
    now = current.get("inputs", {})
    if now and "inputs" not in saved:
        return [f"the checkpoint does not record the contents of {', '.join(sorted(now))} "
                "(written by an older divjax version), so a resume could mix two versions of "
                "them: rerun from the start"]
    then = saved.get("inputs", {})
    return [f"{name}'s contents differ (sha256 {then[name][:12]} there, {d[:12]} here: the file "
            f"was rewritten at the same path; rerun from the start, or restore that file)"
            for name, d in sorted(now.items()) if name in then and then[name] != d]
