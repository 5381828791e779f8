"""Where the raw arrays come from: a local copy, the embedded MovieLens, or TensorFlow Datasets.

Loading has two paths that give the same arrays (`task.info["source"]` says which one ran):
- a **local copy** read with numpy alone (`SimConfig.data_dir` = a file or a folder): the forms
  are listed in `divjax.data.cifar10_files` and `divjax.data.movielens_files`;
- **TensorFlow Datasets** (`data_dir = "tfds"` or `"tfds:<tfds data dir>"`): `cifar10`,
  `movielens/latest-small-ratings`, `movielens/100k-ratings`, read with `tfds.data_source`, which
  needs no TensorFlow once the data set is prepared (preparing it does need TensorFlow).
  `tensorflow_datasets` is imported only on this path, and only in this module.
With `data_dir = ""`, MovieLens latest-small uses the copy embedded in the package; CIFAR-10 has
no embedded copy and says how to get one. There is never a silent fallback between the paths.
"""

from __future__ import annotations

import numpy as np

from divjax.config import ConfigError
from divjax.data.cifar10_files import CifarArrays, check_labels, cifar_help, load_cifar10_local
from divjax.data.movielens_files import (
    Ratings,
    load_embedded_movielens,
    load_movielens_local,
    movielens_help,
)


def load_cifar10(data_dir: str) -> tuple[CifarArrays, str]:
    if is_tfds(data_dir):
        return load_cifar10_tfds(data_dir)
    if not data_dir:
        raise ConfigError("task cifar10 needs --data-dir (no copy is embedded); "
                          + cifar_help("<data_dir>"))
    return load_cifar10_local(data_dir)


def load_movielens(data_dir: str, variant: str = "latest-small") -> tuple[Ratings, str]:
    if is_tfds(data_dir):
        return load_movielens_tfds(data_dir, variant)
    if not data_dir:
        if variant != "latest-small":
            raise ConfigError(f"MovieLens {variant} is not embedded (its licence forbids "
                              f"redistribution): pass --data-dir; "
                              + movielens_help("<data_dir>", variant))
        return load_embedded_movielens()
    return load_movielens_local(data_dir, variant)


# ----------------------------------------------------------------------------- TFDS path

TFDS_NAMES = {"cifar10": "cifar10", "latest-small": "movielens/latest-small-ratings",
              "100k": "movielens/100k-ratings"}


def is_tfds(data_dir: str) -> bool:
    """`data_dir` names the TFDS path: "tfds" or "tfds:<dir>" (a local folder such as
    "tfds_data/" is a local copy, not TFDS with the data dir "_data/")."""
    return data_dir == "tfds" or data_dir.startswith("tfds:")


def _tfds_dir(data_dir: str) -> str | None:
    rest = data_dir[len("tfds:"):] if data_dir.startswith("tfds:") else ""
    return rest or None


def _tfds_source(name: str, split: str, data_dir: str | None):
    """tfds.data_source(name), imported lazily; prepares the set if it is not there yet and
    this machine can (TensorFlow installed, the download host reachable); else a ConfigError
    at once."""
    try:
        import tensorflow_datasets as tfds
        if name.startswith("movielens"):
            import tensorflow_datasets.structured  # noqa: F401  (registers movielens without TF)
    except ImportError as e:
        raise ConfigError(f"--data-dir tfds needs tensorflow-datasets: pip install 'divjax[data]' "
                          f"(or give --data-dir a local copy) ({e})") from e
    try:   # a prepared set (or tfds.testing.mock_data): no download, no network
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception:  # noqa: BLE001  (not prepared here: see whether it can be)
        pass
    why = _cannot_prepare(name)
    if why:   # fail now: tfds would retry the download offline for minutes, deaf to SIGTERM
        raise ConfigError(
            f"tensorflow-datasets has no prepared {name!r} (data_dir={data_dir or 'default'}) "
            f"and cannot prepare it here: {why}. Prepare it once where TensorFlow and the "
            f"network are available (python -c \"import tensorflow_datasets as tfds; "
            f"tfds.data_source('{name}', split='{split}', download=True)\"), then point "
            f"--data-dir tfds:<its data dir> at it; or give --data-dir a local copy")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=True)
    except Exception as e:  # noqa: BLE001  (download/prepare failures: say what and how)
        raise ConfigError(
            f"tensorflow-datasets could not provide {name!r} split {split!r} (data_dir="
            f"{data_dir or 'default'}): {type(e).__name__}: {e}. Preparing a TFDS data set needs "
            f"TensorFlow and the network; reading a prepared one does not. Prepare it once "
            f"elsewhere, or give --data-dir a local copy") from e


# Where tfds downloads each set from (its builders' URLs): probed before a download starts.
TFDS_HOSTS = {"cifar10": "www.cs.toronto.edu", "movielens/latest-small-ratings":
              "files.grouplens.org", "movielens/100k-ratings": "files.grouplens.org"}


def _cannot_prepare(name: str, timeout_s: float = 3.0) -> str | None:
    """Why tfds cannot prepare `name` on this machine (no TensorFlow, or its download host
    is unreachable within `timeout_s`), or None when it can try."""
    import importlib.util
    import socket

    if importlib.util.find_spec("tensorflow") is None:
        return "preparing a TFDS data set needs TensorFlow, which is not installed"
    host = TFDS_HOSTS.get(name)
    if host is None:
        return None
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        return f"its download host {host} is unreachable ({e.strerror or e})"
    return None


def _records(source) -> list:
    n = len(source)
    try:   # batched random access of ArrayRecord sources; some mocks implement only [i]
        return list(source.__getitems__(list(range(n))))
    except (AttributeError, TypeError):
        return [source[i] for i in range(n)]


def load_cifar10_tfds(data_dir: str) -> tuple[CifarArrays, str]:
    tdir = _tfds_dir(data_dir)
    out = []
    for split in ("train", "test"):
        recs = _records(_tfds_source("cifar10", split, tdir))
        if not recs:
            raise ConfigError(f"tfds cifar10 split {split!r} is empty")
        x = np.stack([np.asarray(r["image"], np.uint8) for r in recs])
        y = np.array([int(r["label"]) for r in recs])
        out += [x, check_labels(y, f"tfds cifar10/{split}")]
    return CifarArrays(*out), f"tensorflow-datasets cifar10 (data_source, {tdir or 'default dir'})"


def load_movielens_tfds(data_dir: str, variant: str) -> tuple[Ratings, str]:
    tdir = _tfds_dir(data_dir)
    name = TFDS_NAMES[variant]
    recs = _records(_tfds_source(name, "train", tdir))

    def as_int(v):
        return int(v.decode() if isinstance(v, bytes) else v)

    user = np.array([as_int(r["user_id"]) for r in recs], np.int64)
    item = np.array([as_int(r["movie_id"]) for r in recs], np.int64)
    rating = np.array([float(r["user_rating"]) for r in recs], np.float32)
    return Ratings(user, item, rating), f"tensorflow-datasets {name} (data_source, " \
                                        f"{tdir or 'default dir'})"
