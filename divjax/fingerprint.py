"""What a checkpoint belongs to: a run's fingerprint, and how two fingerprints differ.

`divjax.checkpoint` stores `fingerprint(...)` with every checkpoint and compares it on restore
and save (`fingerprint_mismatch`), so a run never continues from (or overwrites) another run's
checkpoints, nor resumes with other float rounding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import numpy as np

from divjax.config import HParams, SimConfig
from divjax.flat import LAYOUT_VERSION


def fingerprint(cfg: SimConfig, hp: HParams, key: jax.Array | None = None,
                options: dict | None = None) -> dict:
    """What a checkpoint belongs to: the resolved config, a digest of every HParams leaf and,
    when given, the run's key data and the XLA options it compiles with (they decide its float
    rounding). Stored in every checkpoint and checked on restore and save, so a run never
    continues from (or overwrites) another run's checkpoints, nor resumes other bits."""
    digests = {f.name: hashlib.sha256(np.ascontiguousarray(
        np.asarray(getattr(hp, f.name), np.float32)).tobytes()).hexdigest()[:16]
        for f in dataclasses.fields(HParams)}
    fp = {"config": json.loads(json.dumps(dataclasses.asdict(cfg))), "hparams": digests,
          "layout": LAYOUT_VERSION}
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
