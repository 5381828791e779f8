"""Output folders that never lose anything: a claim, a manifest and atomic writes.

    OUT/.divjax-lock            the claim of the folder by one running command (pid, host,
                                start): an exclusive flock, taken atomically and dropped by the
                                kernel when the process ends; the file is removed when the
                                command ends; a second run into OUT is refused while the first
                                is alive
    OUT/.divjax-manifest.json   every name divjax wrote into OUT (written atomically, and before
                                the file it names): `--overwrite` removes those names and nothing
                                else, and a file divjax would write that the manifest does not list
                                (a user's `config.json`, `summary.md`, `checkpoints/`) is never
                                replaced or removed, with or without --overwrite

Every result file is written to a temporary name in OUT and moved into place with os.replace,
so a reader (or a run killed mid-write) sees the old file or the new one, never half of one.
Host-side only; nothing here is traced.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from divjax.config import ConfigError

LOCK = ".divjax-lock"
MANIFEST = ".divjax-manifest.json"

# What each command may write into its folder (top-level names: files or folders).
RUN_OUTPUTS = ("config.json", "metrics.json", "metrics.csv", "plot.png", "summary.md",
               "run.json", "checkpoints", "tensorboard")
SWEEP_OUTPUTS = ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "summary.md",
                 "plot.png", "points")
COMPARE_OUTPUTS = ("compare.md", "compare.json", "compare.png")
KNOWN = frozenset(RUN_OUTPUTS + SWEEP_OUTPUTS + COMPARE_OUTPUTS)

_HELD: dict[Path, int] = {}     # folders this process has claimed -> their lock's descriptor
_HELD_LOCK = threading.Lock()


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; on success it replaces `path` (os.replace), on
    an exception it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file, then os.replace)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# ----------------------------------------------------------------------------- manifest


def recorded(out: Path) -> set[str]:
    """The names the manifest of `out` lists (only names divjax writes; empty without one)."""
    try:
        data = json.loads((Path(out) / MANIFEST).read_text())
        names = data.get("written", []) if isinstance(data, dict) else []
    except FileNotFoundError:
        return set()
    except (OSError, ValueError) as e:
        raise ConfigError(f"{Path(out) / MANIFEST} is unreadable ({e}): divjax cannot tell its "
                          f"own files from yours there; choose another --out") from e
    return {n for n in names if isinstance(n, str) and n in KNOWN}


def record(out: Path, *names: str) -> None:
    """Add `names` to the manifest of `out` (call it before writing them)."""
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ValueError(f"not an output name of divjax: {unknown}")
    have = recorded(out)
    if set(names) <= have and (Path(out) / MANIFEST).exists():
        return
    write_text(Path(out) / MANIFEST, json.dumps(
        {"written": sorted(have | set(names)),
         "note": "names divjax wrote here; --overwrite removes these and nothing else"},
        indent=1) + "\n")


def write_output(out: Path, name: str, text: str) -> None:
    """Record `name` in the manifest of `out`, then write it atomically."""
    record(out, name)
    write_text(Path(out) / name, text)


# ----------------------------------------------------------------------------- the claim


def _take_lock(out: Path) -> int:
    """Lock OUT/.divjax-lock (flock, exclusive, non-blocking) and return its descriptor; a
    ConfigError naming the holder if a live process holds it.

    The kernel drops the lock when its process ends, however it ends, so a lock file left by a
    killed run is simply taken over (no pid guessing); descriptors of one process conflict too,
    so two threads cannot both claim a folder. After locking, the file must still be the one at
    the path (a holder that released it in between unlinked it): otherwise try again."""
    path = out / LOCK
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode()
    for _ in range(5):
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"--out {out} is in use by another divjax run ({_holder(path)}): "
                              f"wait for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, body)
            return fd
        os.close(fd)
    raise ConfigError(f"--out {out}: could not lock {path} (it keeps being replaced): choose "
                      f"another --out")


def _holder(path: Path, tries: int = 50) -> str:
    """Who holds the lock, from its file; the holder writes it right after locking, so an empty
    or partial file is read again a few times (up to ~0.5 s) before giving up."""
    for _ in range(tries):
        try:
            d = json.loads(path.read_text())
            return f"pid {d['pid']} on {d['host']}, started {d['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return "its lock file is being written"


def release(out: Path) -> None:
    """Remove this process's claim on `out` (no-op if it holds none): unlink the lock file
    while still holding it, then unlock."""
    out = Path(out)
    with _HELD_LOCK:
        fd = _HELD.pop(out.resolve(), None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        (out / LOCK).unlink()
    os.close(fd)


def release_all() -> None:
    """Release every claim of this process (the end of a command; also at exit)."""
    for p in claims():
        release(p)


atexit.register(release_all)


def claims() -> set[Path]:
    """The folders this process holds now (a snapshot)."""
    with _HELD_LOCK:
        return set(_HELD)


def release_since(before: set[Path]) -> None:
    """Release the claims made since `claims()` returned `before` (the end of a command)."""
    for p in claims() - before:
        release(p)


def adopt_legacy(out: Path, names: Iterable[str]) -> None:
    """Record the existing `names` of a folder that an older divjax wrote without a manifest
    (only where there is no manifest at all: a run directory resumed by its run.json)."""
    out = Path(out)
    if not (out / MANIFEST).exists():
        record(out, *[n for n in names if (out / n).exists()])


def holds(out: Path) -> bool:
    """True if this process has claimed `out`."""
    with _HELD_LOCK:
        return Path(out).resolve() in _HELD


# ----------------------------------------------------------------------------- claiming


def claim(out: Path, writes: Iterable[str] = tuple(sorted(KNOWN)), overwrite: bool = False,
          resume: bool = False, adopt: bool = False) -> Path:
    """Claim the folder `out` for a command that writes the names `writes`.

    Refused (ConfigError) if another live run holds it, if it holds a file of `writes` that
    divjax did not record writing (never replaced, whatever the flags), or, unless
    `overwrite` or `resume`, if it holds results divjax recorded there; `overwrite` removes
    exactly the recorded names first. `adopt`: first record the `writes` present in a folder
    that has no manifest at all (a run directory an older divjax wrote). Returns `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    fd = _take_lock(out)
    with _HELD_LOCK:
        _HELD[out.resolve()] = fd
    try:
        if adopt:
            adopt_legacy(out, writes)
        _check_and_clear(out, tuple(writes), overwrite, resume)
    except BaseException:
        release(out)
        raise
    return out


def _check_and_clear(out: Path, writes: tuple, overwrite: bool, resume: bool) -> None:
    mine = recorded(out)
    foreign = [n for n in writes if (out / n).exists() and n not in mine]
    if foreign:
        raise ConfigError(
            f"--out {out} holds {', '.join(foreign)}, which divjax did not write there (not in "
            f"its {MANIFEST}): divjax never replaces or removes such files, with or without "
            f"--overwrite; move {'them' if len(foreign) > 1 else 'it'} away or choose another "
            f"--out")
    held = sorted(n for n in mine if (out / n).exists())
    if held and not (overwrite or resume):
        how = (f", or `divjax run --resume {out}` to continue it" if "run.json" in held else
               f", or `divjax sweep --resume {out}` to finish it" if "points" in held else "")
        raise ConfigError(f"--out {out} already holds results ({', '.join(held)}): choose a "
                          f"new --out, or add --overwrite to replace them{how}")
    if overwrite and not resume:
        for name in held:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        write_text(out / MANIFEST, json.dumps({"written": []}) + "\n")
    probe = out / f".divjax-write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
