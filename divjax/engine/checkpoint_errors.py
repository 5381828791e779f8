"""Storage failures while checkpointing (a full disk, no permission) as one clear line.

orbax and tensorstore report a failed write many times over, from several threads, with long
tracebacks; `write_errors_as_one` turns it into one `CheckpointWriteError` and silences the
repeats of that failure (and only those) for the rest of the process. Used by
`divjax.engine.checkpoint`; host-side only.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission): one line saying why."""


_WRITE_FAILURES = ("No space left", "os_error_code", "RESOURCE_EXHAUSTED", "Permission denied",
                   "PERMISSION_DENIED", "Read-only file system", "Disk quota")
_SHORT_REASONS = ("No space left on device", "Permission denied", "Read-only file system",
                  "Disk quota exceeded")


def _write_failure(e: BaseException) -> str | None:
    """Why storage failed behind `e` (its chain), in a few words; None if it is no such error."""
    for _ in range(20):
        if e is None:
            return None
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        short = [r for r in _SHORT_REASONS if r in str(e)]
        if short:
            return short[0]
        if isinstance(e, OSError) or any(w in str(e) for w in _WRITE_FAILURES):
            return (str(e).splitlines() or [type(e).__name__])[0][:300]
        e = e.__cause__ or e.__context__
    return None


def _storage_noise(text: str) -> bool:
    """A message about the storage failure already reported (or its closed event loop)."""
    return "Event loop is closed" in text or any(w in text for w in _WRITE_FAILURES)


class _StorageNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _storage_noise(record.getMessage())


def _quiet_hooks(unraisable, excepthook):
    """sys.unraisablehook and sys.excepthook (tensorstore's callbacks print through it) that
    drop storage-failure noise and pass the rest on."""
    def quiet_unraisable(u):
        if not _storage_noise(f"{u.exc_value!r}"):
            unraisable(u)

    def quiet_excepthook(kind, value, tb):
        if not _storage_noise(f"{value!r}"):
            excepthook(kind, value, tb)
    quiet_unraisable.divjax_quiet = quiet_excepthook.divjax_quiet = True
    return quiet_unraisable, quiet_excepthook


def _silence_storage_noise() -> None:
    """After a write failed (reported in one line), orbax's pool threads and tensorstore's
    callbacks report the same failure again for a while: from then on, for the rest of the
    process, those messages (and only those) are dropped."""
    absl = logging.getLogger("absl")
    if not any(isinstance(f, _StorageNoiseFilter) for f in absl.filters):
        absl.addFilter(_StorageNoiseFilter())
    if not getattr(sys.unraisablehook, "divjax_quiet", False):
        sys.unraisablehook, sys.excepthook = _quiet_hooks(sys.unraisablehook, sys.excepthook)


@contextlib.contextmanager
def write_errors_as_one(run_dir: Path, step: int, mgr, checkpoint_dir: str = "checkpoints"):
    """Within the block, orbax logs no tracebacks (absl), and a storage failure becomes one
    CheckpointWriteError once `mgr`'s writers have stopped; the half-written step directory
    is then removed (it may hold the space the metrics need)."""
    absl = logging.getLogger("absl")
    level, hooks = absl.level, (sys.unraisablehook, sys.excepthook)
    absl.setLevel(logging.CRITICAL)
    sys.unraisablehook, sys.excepthook = _quiet_hooks(*hooks)
    try:
        yield
    except CheckpointWriteError:
        raise
    except Exception as e:  # noqa: BLE001 - classified below; anything else re-raised
        why = _write_failure(e)
        if why is None:
            raise
        sys.unraisablehook, sys.excepthook = hooks
        _silence_storage_noise()
        for settle in (mgr.wait_until_finished, mgr.close):   # the other writers' failures
            with contextlib.suppress(Exception):   # the same failure, reported once below
                settle()
        where = Path(run_dir) / checkpoint_dir
        for tmp in where.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"checkpoint step {step} could not be written to {where} "
                                   f"({why})") from None
    finally:
        absl.setLevel(level)
        if not getattr(hooks[0], "divjax_quiet", False) and not silenced():
            sys.unraisablehook, sys.excepthook = hooks


def silenced() -> bool:
    return any(isinstance(f, _StorageNoiseFilter) for f in logging.getLogger("absl").filters)
