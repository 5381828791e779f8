"""Helpers shared by the benchmark scripts (run as scripts: this folder is on sys.path)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    """The short commit of the checkout the benchmark runs from ("unknown" outside git)."""
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       cwd=Path(__file__).parent,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def write_result(path: Path, out: dict) -> Path:
    """Write a benchmark's JSON (folders made as needed) and say where."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {path}")
    return path


def run_meta(script: str, argv, **extra) -> dict:
    """A benchmark JSON's "meta": date, JAX version, commit, device, platform, the command."""
    import datetime
    import platform

    import jax

    args = " ".join(argv if argv is not None else [])
    return {"date": datetime.date.today().isoformat(), "jax": jax.__version__,
            "commit": git_commit(), "device": jax.devices()[0].device_kind,
            "platform": platform.platform(), **extra,
            "command": f"python benchmarks/{script} {args}".strip()}
