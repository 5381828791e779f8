"""CIFAR-10 local copies, read with numpy alone.

Accepted forms of `SimConfig.data_dir` (a file or a folder): an .npz with x_train, y_train,
x_test, y_test (HWC uint8), the binary archive (`cifar-10-batches-bin/`, 3073-byte records, or
`cifar-10-binary.tar.gz`), or the python pickle batches (`cifar-10-batches-py/` or
`cifar-10-python.tar.gz`). A missing or corrupt file is a `ConfigError` that names the path, what
was expected and how to get it; there is never a silent fallback. The TFDS path and the choice
between the paths are in `divjax.data.sources`.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from divjax.tasks import models
from divjax.config import ConfigError

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR_RECORD = 3073  # 1 label byte + 3 * 32 * 32 pixel bytes (CHW)


class CifarArrays(NamedTuple):
    x_train: np.ndarray   # (N, 32, 32, 3) uint8, HWC RGB
    y_train: np.ndarray   # (N,) int32, 0..9
    x_test: np.ndarray    # (T, 32, 32, 3) uint8
    y_test: np.ndarray    # (T,) int32



def cifar_help(path) -> str:
    return (f"expected CIFAR-10 at {path}: an .npz with x_train, y_train, x_test, y_test "
            f"(uint8, images (N, 32, 32, 3)), cifar-10-batches-bin/ or cifar-10-binary.tar.gz "
            f"(3073-byte records), or cifar-10-batches-py/ or cifar-10-python.tar.gz (pickles); "
            f"get it from {CIFAR_URL}, or use --data-dir tfds (needs `pip install divjax[data]`)")



def check_labels(y: np.ndarray, where) -> np.ndarray:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if y.size and (y.min() < 0 or y.max() >= models.NUM_CLASSES):
        raise ConfigError(f"{where}: labels must be in 0..9, found {y.min()}..{y.max()}; "
                          f"the file is corrupt or not CIFAR-10")
    return y.astype(np.int32)


def read_cifar_binary(raw: bytes, where) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of 1 label byte + 3072 CHW pixel bytes -> (HWC uint8, labels)."""
    if len(raw) == 0 or len(raw) % CIFAR_RECORD:
        raise ConfigError(f"{where}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte "
                          f"CIFAR-10 records (truncated or corrupt); {cifar_help(where)}")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR_RECORD)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), check_labels(rec[:, 0], where)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches: dicts, lists and numpy arrays, nothing else."""

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):   # bytes in protocol-2 pickles of Python 3
            return super().find_class(module, name)
        if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype",
                                                         "scalar", "_frombuffer"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_cifar_pickle(raw: bytes, where) -> tuple[np.ndarray, np.ndarray]:
    """One python batch: {b'data': (N, 3072) uint8 CHW rows, b'labels': list} -> (HWC, labels)."""
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(d[b"data"], np.uint8)
        labels = d[b"labels"] if b"labels" in d else d[b"fine_labels"]
        x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:  # noqa: BLE001  (any unpickling failure means a bad file)
        raise ConfigError(f"{where}: not a readable CIFAR-10 python batch ({type(e).__name__}: "
                          f"{e}); the file is truncated or corrupt; {cifar_help(where)}") from e
    y = check_labels(labels, where)
    if len(y) != len(x):
        raise ConfigError(f"{where}: {len(x)} images but {len(y)} labels (corrupt file)")
    return np.ascontiguousarray(x), y


def read_cifar_npz(path: Path) -> CifarArrays:
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(d.files)
            if missing:
                raise ConfigError(f"{path}: missing arrays {sorted(missing)}; {cifar_help(path)}")
            arrays = {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (zip/zlib/format errors all mean a bad file)
        raise ConfigError(f"{path}: cannot read the .npz ({type(e).__name__}: {e}); the file is "
                          f"truncated or corrupt; {cifar_help(path)}") from e
    for k in ("x_train", "x_test"):
        a = arrays[k]
        if a.ndim != 4 or a.shape[1:] != (32, 32, 3) or a.dtype != np.uint8:
            raise ConfigError(f"{path}: {k} has shape {a.shape} and dtype {a.dtype}; expected "
                              f"(N, 32, 32, 3) uint8 (HWC)")
    out = CifarArrays(arrays["x_train"], check_labels(arrays["y_train"], path),
                      arrays["x_test"], check_labels(arrays["y_test"], path))
    if len(out.x_train) != len(out.y_train) or len(out.x_test) != len(out.y_test):
        raise ConfigError(f"{path}: images and labels differ in number (corrupt file)")
    return out


TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _cifar_from_members(read: Callable[[str], bytes | None], suffix: str, reader: Callable,
                        where) -> CifarArrays:
    """Assemble the five training batches and the test batch; `read(name)` returns bytes."""
    parts = {}
    for name in (*TRAIN_BATCHES, "test_batch"):
        raw = read(name + suffix)
        if raw is None:
            raise ConfigError(f"{where}: {name + suffix} is missing; {cifar_help(where)}")
        parts[name] = reader(raw, f"{where}/{name + suffix}")
    xs, ys = zip(*(parts[b] for b in TRAIN_BATCHES), strict=True)
    return CifarArrays(np.concatenate(xs), np.concatenate(ys), *parts["test_batch"])


def _read_file(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def read_cifar_tar(path: Path) -> CifarArrays:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            binary = "data_batch_1.bin" in members

            def read(name):
                m = members.get(name)
                return None if m is None else tar.extractfile(m).read()

            return _cifar_from_members(read, ".bin" if binary else "",
                                       read_cifar_binary if binary else read_cifar_pickle, path)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (tarfile/gzip/EOF errors all mean a bad archive)
        raise ConfigError(f"{path}: cannot read the archive ({type(e).__name__}: {e}); it is "
                          f"truncated or corrupt; {cifar_help(path)}") from e


def load_cifar10_local(data_dir: str) -> tuple[CifarArrays, str]:
    """Read a local copy (see the module docstring for the forms); returns (arrays, source)."""
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise ConfigError(f"data_dir={data_dir!r} does not exist; {cifar_help(path)}")
    if path.is_file():
        if path.suffix == ".npz":
            return read_cifar_npz(path), f"local npz {path}"
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return read_cifar_tar(path), f"local archive {path}"
        raise ConfigError(f"{path}: unknown file type; {cifar_help(path)}")
    tried = []
    for form in ("npz", "bin", "py", "bin.tar", "py.tar", "here.bin", "here.py"):
        if form == "npz":
            cand = path / "cifar10.npz"
            if cand.is_file():
                return read_cifar_npz(cand), f"local npz {cand}"
        elif form in ("bin", "py"):
            cand = path / f"cifar-10-batches-{form}"
            if cand.is_dir():
                suffix, reader = (".bin", read_cifar_binary) if form == "bin" else \
                    ("", read_cifar_pickle)
                arrays = _cifar_from_members(lambda n, c=cand: _read_file(c / n), suffix, reader,
                                             cand)
                return arrays, f"local {'binary' if form == 'bin' else 'python'} batches {cand}"
        elif form.endswith(".tar"):
            name = "cifar-10-binary.tar.gz" if form == "bin.tar" else "cifar-10-python.tar.gz"
            cand = path / name
            if cand.is_file():
                return read_cifar_tar(cand), f"local archive {cand}"
        else:
            binary = form == "here.bin"
            cand = path / ("data_batch_1.bin" if binary else "data_batch_1")
            if cand.is_file():
                arrays = _cifar_from_members(lambda n: _read_file(path / n),
                                             ".bin" if binary else "",
                                             read_cifar_binary if binary else read_cifar_pickle,
                                             path)
                return arrays, f"local {'binary' if binary else 'python'} batches {path}"
        tried.append(str(cand))
    raise ConfigError(f"no CIFAR-10 copy found in {path} (looked for {', '.join(tried)}); "
                      f"{cifar_help(path)}")

