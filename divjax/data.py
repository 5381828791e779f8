"""Real data: CIFAR-10 and MovieLens, loaded once, partitioned as the DivShare authors do.

Loading has two paths that give the same arrays (`task.info["source"]` says which one ran):
- a **local copy** read with numpy alone (`SimConfig.data_dir` = a file or a folder):
  CIFAR-10 as an .npz with x_train, y_train, x_test, y_test (HWC uint8), the binary archive
  (`cifar-10-batches-bin/`, 3073-byte records, or `cifar-10-binary.tar.gz`), or the python pickle
  batches (`cifar-10-batches-py/` or `cifar-10-python.tar.gz`); MovieLens latest-small
  `ratings.csv` (in `ml-latest-small/` or directly) or ml-100k `u.data`;
- **TensorFlow Datasets** (`data_dir = "tfds"` or `"tfds:<tfds data dir>"`): `cifar10`,
  `movielens/latest-small-ratings`, `movielens/100k-ratings`, read with `tfds.data_source`, which
  needs no TensorFlow once the data set is prepared (preparing it does need TensorFlow).
  `tensorflow_datasets` is imported only on this path.
With `data_dir = ""`, MovieLens latest-small uses the copy embedded in the package
(`divjax/assets/movielens_small.npz`, licence in `assets/MOVIELENS_LICENSE.txt`); CIFAR-10 has
no embedded copy and says how to get one. A missing or corrupt file is a `ConfigError` that names
the path, what was expected and how to get it; there is never a silent fallback.

Partitions (numpy, once, `np.random.default_rng(cfg.data_seed)`):
- CIFAR-10 `kshard` (the authors' config, shards = 5): sort the training set by label (stable),
  cut it into n * shards contiguous shards of (almost) equal size, deal each node `shards` random
  shards. Every training image is in exactly one node. The authors' KShardDataPartitioner also
  takes contiguous runs of the label-sorted data at random positions, but its integer rounding
  leaves a few dozen images unused; here all are used. Also `iid` and `dirichlet` (per class,
  node shares ~ Dirichlet(alpha), redrawn until every node has at least one image).
- MovieLens: per user, a random 70% of that user's ratings (round(0.7 m), as pandas'
  `sample(frac=0.7)`) for training and the rest for testing; users dealt to nodes in contiguous
  blocks of 610 // n, the first 610 % n nodes taking one more (the authors' `_split_data`).
  Item ids are renumbered densely in the order of their raw ids (as the authors do).

On device, every node's training data is a padded index table `node_idx (n, m_max) int32` with
`node_size (n,)`; `sample_batch(key, node)` draws `batch_size` indices with replacement inside
jit (the authors' DataLoader shuffles without replacement; the difference is documented here).

Evaluation (`evaluate(params, node)`), in fixed-size chunks so memory per call is bounded:
- CIFAR-10: node >= 0 evaluates on a fixed, class-balanced subset of the test set (default 1000
  images; every node the same subset, as the authors test every node on the global test set);
  node = -1 (the average model) on `eval_global` images (default all 10,000). Metrics `acc`
  (fraction correct, primary) and `loss` (mean cross-entropy).
- MovieLens: node >= 0 on the test ratings of the node's own users; node = -1 on every test
  rating. `loss` = test MSE over the ratings of the view, `rmse` = sqrt(loss) (primary: the
  paper reports the square root of the mean batch MSE, which equals this when batches are equal).
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from divjax import models
from divjax.config import PAPER_STRAGGLER_MBPS, ConfigError, SimConfig
from divjax.presets import register_preset
from divjax.tasks import Task, register_task

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
MOVIELENS_URL = "https://grouplens.org/datasets/movielens/"
CIFAR_RECORD = 3073  # 1 label byte + 3 * 32 * 32 pixel bytes (CHW)
ASSET_NAME = "movielens_small.npz"


# ============================================================================ loading

class CifarArrays(NamedTuple):
    x_train: np.ndarray   # (N, 32, 32, 3) uint8, HWC RGB
    y_train: np.ndarray   # (N,) int32, 0..9
    x_test: np.ndarray    # (T, 32, 32, 3) uint8
    y_test: np.ndarray    # (T,) int32


class Ratings(NamedTuple):
    user: np.ndarray      # (R,) int64: raw user id
    item: np.ndarray      # (R,) int64: raw item (movie) id
    rating: np.ndarray    # (R,) float32: stars


def _cifar_help(path) -> str:
    return (f"expected CIFAR-10 at {path}: an .npz with x_train, y_train, x_test, y_test "
            f"(uint8, images (N, 32, 32, 3)), cifar-10-batches-bin/ or cifar-10-binary.tar.gz "
            f"(3073-byte records), or cifar-10-batches-py/ or cifar-10-python.tar.gz (pickles); "
            f"get it from {CIFAR_URL}, or use --data-dir tfds (needs `pip install divjax[data]`)")


def _movielens_help(path, variant) -> str:
    want = ("ml-latest-small/ratings.csv (userId,movieId,rating,timestamp)"
            if variant == "latest-small" else "ml-100k/u.data (user, item, rating, timestamp; tabs)")
    return (f"expected MovieLens {variant} at {path}: {want}; get it from {MOVIELENS_URL}, "
            f"or use --data-dir tfds (needs `pip install divjax[data]`)"
            + ("; or leave --data-dir empty for the embedded copy" if variant == "latest-small"
               else ""))


def _check_labels(y: np.ndarray, where) -> np.ndarray:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if y.size and (y.min() < 0 or y.max() >= models.NUM_CLASSES):
        raise ConfigError(f"{where}: labels must be in 0..9, found {y.min()}..{y.max()}; "
                          f"the file is corrupt or not CIFAR-10")
    return y.astype(np.int32)


def read_cifar_binary(raw: bytes, where) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of 1 label byte + 3072 CHW pixel bytes -> (HWC uint8, labels)."""
    if len(raw) == 0 or len(raw) % CIFAR_RECORD:
        raise ConfigError(f"{where}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte "
                          f"CIFAR-10 records (truncated or corrupt); {_cifar_help(where)}")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR_RECORD)
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), _check_labels(rec[:, 0], where)


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
                          f"{e}); the file is truncated or corrupt; {_cifar_help(where)}") from e
    y = _check_labels(labels, where)
    if len(y) != len(x):
        raise ConfigError(f"{where}: {len(x)} images but {len(y)} labels (corrupt file)")
    return np.ascontiguousarray(x), y


def read_cifar_npz(path: Path) -> CifarArrays:
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(d.files)
            if missing:
                raise ConfigError(f"{path}: missing arrays {sorted(missing)}; {_cifar_help(path)}")
            arrays = {k: d[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (zip/zlib/format errors all mean a bad file)
        raise ConfigError(f"{path}: cannot read the .npz ({type(e).__name__}: {e}); the file is "
                          f"truncated or corrupt; {_cifar_help(path)}") from e
    for k in ("x_train", "x_test"):
        a = arrays[k]
        if a.ndim != 4 or a.shape[1:] != (32, 32, 3) or a.dtype != np.uint8:
            raise ConfigError(f"{path}: {k} has shape {a.shape} and dtype {a.dtype}; expected "
                              f"(N, 32, 32, 3) uint8 (HWC)")
    out = CifarArrays(arrays["x_train"], _check_labels(arrays["y_train"], path),
                      arrays["x_test"], _check_labels(arrays["y_test"], path))
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
            raise ConfigError(f"{where}: {name + suffix} is missing; {_cifar_help(where)}")
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
                          f"truncated or corrupt; {_cifar_help(path)}") from e


def load_cifar10_local(data_dir: str) -> tuple[CifarArrays, str]:
    """Read a local copy (see the module docstring for the forms); returns (arrays, source)."""
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise ConfigError(f"data_dir={data_dir!r} does not exist; {_cifar_help(path)}")
    if path.is_file():
        if path.suffix == ".npz":
            return read_cifar_npz(path), f"local npz {path}"
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return read_cifar_tar(path), f"local archive {path}"
        raise ConfigError(f"{path}: unknown file type; {_cifar_help(path)}")
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
                      f"{_cifar_help(path)}")


def parse_ratings_csv(raw: bytes, where) -> Ratings:
    """MovieLens latest `ratings.csv`: header userId,movieId,rating,timestamp (CRLF or LF)."""
    text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
    _check_complete(text, where, "latest-small")
    lines = text.splitlines()
    if not lines or lines[0].strip().lower().replace(" ", "") != "userid,movieid,rating,timestamp":
        raise ConfigError(f"{where}: first line is {lines[0][:60] if lines else ''!r}, expected "
                          f"the header userId,movieId,rating,timestamp; "
                          f"{_movielens_help(where, 'latest-small')}")
    return _parse_columns(lines[1:], ",", where, "latest-small")


def parse_u_data(raw: bytes, where) -> Ratings:
    """MovieLens 100k `u.data`: user<TAB>item<TAB>rating<TAB>timestamp, no header."""
    text = raw.decode("utf-8")
    _check_complete(text, where, "100k")
    return _parse_columns(text.splitlines(), "\t", where, "100k")


def _check_complete(text: str, where, variant: str) -> None:
    """The released files end every line, the last included, with a newline."""
    if text and not text.endswith("\n"):
        raise ConfigError(f"{where}: the last line {text.splitlines()[-1][:60]!r} has no newline: "
                          f"the file is truncated; {_movielens_help(where, variant)}")


def _parse_columns(lines: list[str], sep: str, where, variant: str) -> Ratings:
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise ConfigError(f"{where}: no ratings; {_movielens_help(where, variant)}")
    try:
        cols = np.array([ln.split(sep) for ln in lines])
        if cols.ndim != 2 or cols.shape[1] != 4:
            raise ValueError("every line must have 4 fields")
        user = cols[:, 0].astype(np.int64)
        item = cols[:, 1].astype(np.int64)
        rating = cols[:, 2].astype(np.float64)
        cols[:, 3].astype(np.int64)
    except ValueError as e:
        bad = next((i for i, ln in enumerate(lines) if len(ln.split(sep)) != 4), None)
        at = f" (line {bad + 2 if variant == 'latest-small' else bad + 1}: {lines[bad][:60]!r})" \
            if bad is not None else ""
        raise ConfigError(f"{where}: malformed ratings{at}: {e}; the file is truncated or "
                          f"corrupt; {_movielens_help(where, variant)}") from e
    if rating.min() < 0.5 or rating.max() > 5.0 or np.any(rating * 2 != np.round(rating * 2)):
        raise ConfigError(f"{where}: ratings must be half stars in 0.5..5, found "
                          f"{rating.min()}..{rating.max()} (corrupt file)")
    return Ratings(user, item, rating.astype(np.float32))


# The GroupLens releases by their first ratings (user, movie, stars) and their rating count: a
# copy cut at a line boundary parses cleanly, so its size is the only sign of the cut.
KNOWN_RELEASES = {
    "latest-small": {((1, 1, 4.0), (1, 3, 4.0), (1, 6, 4.0)): ("ml-latest-small (2018)", 100_836)},
    "100k": {((196, 242, 3.0), (186, 302, 3.0), (22, 377, 1.0)): ("ml-100k", 100_000)},
}


def expected_ratings(path: Path, ratings: Ratings, variant: str) -> tuple[int, str] | None:
    """(rating count the copy at `path` should have, where that number comes from), or None:
    the release's own README.txt (latest) or u.info (100k) next to the file if there is one,
    else the known size of a release recognised by its first ratings."""
    import re

    folder = Path(path).parent
    readme, pattern = ((folder / "README.txt", r"contains\s+([\d,]+)\s+ratings")
                       if variant == "latest-small" else (folder / "u.info", r"([\d,]+)\s+ratings"))
    if readme.is_file():
        m = re.search(pattern, readme.read_text(errors="replace"))
        if m:
            return int(m.group(1).replace(",", "")), f"says {readme.name} next to it"
    head = tuple((int(u), int(i), float(r)) for u, i, r in
                 zip(ratings.user[:3], ratings.item[:3], ratings.rating[:3], strict=True))
    known = KNOWN_RELEASES.get(variant, {}).get(head)
    if known is not None:
        return known[1], f"the {known[0]} release, recognised by its first ratings"
    return None


def check_release_size(ratings: Ratings, path: Path, variant: str) -> None:
    """ConfigError if a local MovieLens copy holds fewer (or more) ratings than its release."""
    want = expected_ratings(path, ratings, variant)
    if want is not None and want[0] != len(ratings.rating):
        raise ConfigError(f"{path}: {len(ratings.rating):,} ratings where {want[0]:,} are expected "
                          f"({want[1]}): the file is truncated (cut at a line boundary) or "
                          f"altered; {_movielens_help(path, variant)}")


def load_embedded_movielens() -> tuple[Ratings, str]:
    """The MovieLens latest-small copy shipped in `divjax/assets` (scripts/build_movielens_asset.py)."""
    ref = resources.files("divjax").joinpath("assets", ASSET_NAME)
    try:
        with ref.open("rb") as f, np.load(io.BytesIO(f.read()), allow_pickle=False) as d:
            ratings = ratings_from_asset(d)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ConfigError(f"the embedded MovieLens copy divjax/assets/{ASSET_NAME} is missing or "
                          f"corrupt ({e}); reinstall divjax, rebuild it with "
                          f"scripts/build_movielens_asset.py, or pass --data-dir") from e
    return ratings, f"embedded MovieLens latest-small (divjax/assets/{ASSET_NAME})"


def ratings_to_asset(r: Ratings) -> dict:
    """Compact form: uint16 user ids, uint16 dense item index, uint32 raw movie ids, half stars."""
    movie_ids, item = np.unique(r.item, return_inverse=True)
    if r.user.max() >= 2**16 or movie_ids.size >= 2**16:
        raise ValueError("too many users or items for the uint16 asset")
    return {"user": r.user.astype(np.uint16), "item": item.astype(np.uint16),
            "movie_ids": movie_ids.astype(np.uint32),
            "half_stars": np.round(r.rating * 2).astype(np.uint8)}


def ratings_from_asset(d) -> Ratings:
    return Ratings(d["user"].astype(np.int64),
                   d["movie_ids"].astype(np.int64)[d["item"].astype(np.int64)],
                   d["half_stars"].astype(np.float32) / 2)


def load_movielens_local(data_dir: str, variant: str) -> tuple[Ratings, str]:
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise ConfigError(f"data_dir={data_dir!r} does not exist; {_movielens_help(path, variant)}")
    name = "ratings.csv" if variant == "latest-small" else "u.data"
    parse = parse_ratings_csv if variant == "latest-small" else parse_u_data
    folder = "ml-latest-small" if variant == "latest-small" else "ml-100k"
    if path.is_file():
        if path.suffix == ".npz" and variant == "latest-small":
            try:
                with np.load(path, allow_pickle=False) as d:
                    return ratings_from_asset(d), f"local npz {path}"
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"{path}: not a readable MovieLens .npz ({e}); "
                                  f"{_movielens_help(path, variant)}") from e
        if path.name != name:
            raise ConfigError(f"{path}: expected a file named {name}; "
                              f"{_movielens_help(path, variant)}")
        cands = [path]
    else:
        cands = [path / folder / name, path / name]
    for cand in cands:
        if cand.is_file():
            ratings = parse(cand.read_bytes(), cand)
            check_release_size(ratings, cand, variant)
            return ratings, f"local {folder}/{name} {cand}"
    raise ConfigError(f"no MovieLens {variant} copy found (looked for "
                      f"{', '.join(map(str, cands))}); {_movielens_help(path, variant)}")


# ----------------------------------------------------------------------------- TFDS path

TFDS_NAMES = {"cifar10": "cifar10", "latest-small": "movielens/latest-small-ratings",
              "100k": "movielens/100k-ratings"}


def _tfds_dir(data_dir: str) -> str | None:
    rest = data_dir[len("tfds"):].lstrip(":")
    return rest or None


def _tfds_source(name: str, split: str, data_dir: str | None):
    """tfds.data_source(name), imported lazily; prepares the set if it is not there yet."""
    try:
        import tensorflow_datasets as tfds
        if name.startswith("movielens"):
            import tensorflow_datasets.structured  # noqa: F401  (registers movielens without TF)
    except ImportError as e:
        raise ConfigError(f"--data-dir tfds needs tensorflow-datasets: pip install 'divjax[data]' "
                          f"(or give --data-dir a local copy) ({e})") from e
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=True)
    except Exception as e:  # noqa: BLE001  (download/prepare failures: say what and how)
        raise ConfigError(
            f"tensorflow-datasets could not provide {name!r} split {split!r} (data_dir="
            f"{data_dir or 'default'}): {type(e).__name__}: {e}. Preparing a TFDS data set needs "
            f"TensorFlow and the network; reading a prepared one does not. Prepare it once "
            f"elsewhere, or give --data-dir a local copy") from e


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
        out += [x, _check_labels(y, f"tfds cifar10/{split}")]
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


def load_cifar10(data_dir: str) -> tuple[CifarArrays, str]:
    if data_dir.startswith("tfds"):
        return load_cifar10_tfds(data_dir)
    if not data_dir:
        raise ConfigError("task cifar10 needs --data-dir (no copy is embedded); "
                          + _cifar_help("<data_dir>"))
    return load_cifar10_local(data_dir)


def load_movielens(data_dir: str, variant: str = "latest-small") -> tuple[Ratings, str]:
    if data_dir.startswith("tfds"):
        return load_movielens_tfds(data_dir, variant)
    if not data_dir:
        if variant != "latest-small":
            raise ConfigError(f"MovieLens {variant} is not embedded (its licence forbids "
                              f"redistribution): pass --data-dir; "
                              + _movielens_help("<data_dir>", variant))
        return load_embedded_movielens()
    return load_movielens_local(data_dir, variant)


# ============================================================================ partitions

def partition_iid(n_samples: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n_samples), n)


def partition_kshard(labels: np.ndarray, n: int, shards: int,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Label-sorted data cut into n * shards contiguous shards; node i gets `shards` random ones."""
    if n * shards > len(labels):
        raise ConfigError(f"kshard: n_nodes * shards = {n * shards} exceeds the "
                          f"{len(labels)} training samples; use fewer nodes or shards")
    order = np.argsort(labels, kind="stable")
    pieces = np.array_split(order, n * shards)
    deal = rng.permutation(n * shards).reshape(n, shards)
    return [np.sort(np.concatenate([pieces[j] for j in row])) for row in deal]


def partition_dirichlet(labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator,
                        tries: int = 100) -> list[np.ndarray]:
    """Per class, node shares ~ Dirichlet(alpha * 1_n); redrawn until no node is empty."""
    if not alpha > 0:
        raise ConfigError(f"dirichlet alpha={alpha} is invalid: use alpha > 0")
    classes = np.unique(labels)
    for _ in range(tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= 1:
            return out
    raise ConfigError(f"dirichlet alpha={alpha}: some node got no data in {tries} draws; "
                      f"raise alpha or use fewer nodes")


def partition_labels(labels: np.ndarray, n: int, scheme: str, seed: int, shards: int = 5,
                     alpha: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return partition_iid(len(labels), n, rng)
    if scheme == "kshard":
        return partition_kshard(labels, n, shards, rng)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, n, alpha, rng)
    raise ConfigError(f"partition={scheme!r} is unknown: use 'kshard', 'iid' or 'dirichlet'")


def padded_table(parts: list[np.ndarray], multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(n, m_max) int32 index table (padded with 0, m_max rounded up to `multiple`), (n,) sizes."""
    size = np.array([len(p) for p in parts], np.int32)
    m = max(1, int(size.max()))
    m = -(-m // multiple) * multiple
    table = np.zeros((len(parts), m), np.int32)
    for i, p in enumerate(parts):
        table[i, :len(p)] = p
    return table, size


class MovieLensSplit(NamedTuple):
    """Ratings with dense 0-based ids, split per user 70/30, and each node's users."""

    user: np.ndarray         # (R,) int32 dense user index (users sorted by raw id)
    item: np.ndarray         # (R,) int32 dense item index (items sorted by raw id)
    rating: np.ndarray       # (R,) float32
    train: np.ndarray        # (R,) bool: in the training split
    node_users: np.ndarray   # (n + 1,) int64: node i owns users [node_users[i], node_users[i+1])
    n_users: int
    n_items: int


def split_movielens(r: Ratings, n: int, seed: int, train_frac: float = 0.7) -> MovieLensSplit:
    """Per-user random train/test split (round(0.7 m) training ratings) and user blocks."""
    users, user = np.unique(r.user, return_inverse=True)
    items, item = np.unique(r.item, return_inverse=True)
    U = users.size
    if n > U:
        raise ConfigError(f"n_nodes={n} exceeds the {U} MovieLens users: every node needs at "
                          f"least one user; use --n-nodes {U} or fewer")
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(user.size), user))     # by user, random within a user
    counts = np.bincount(user, minlength=U)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(user.size, np.int64)
    rank[order] = np.arange(user.size) - np.repeat(starts, counts)
    n_train = np.array([round(train_frac * c) for c in counts])   # pandas sample(frac=) count
    train = rank < n_train[user]
    per, extra = divmod(U, n)
    sizes = np.full(n, per) + (np.arange(n) < extra)
    node_users = np.concatenate([[0], np.cumsum(sizes)])
    return MovieLensSplit(user.astype(np.int32), item.astype(np.int32), r.rating, train,
                          node_users, U, int(items.size))


# ============================================================================ evaluation helper

def chunked_sums(sums: Callable, view_idx: jax.Array, view_size: jax.Array, row: jax.Array,
                 chunk: int, init: dict) -> dict:
    """Sum `sums(idx (chunk,), mask (chunk,))` over the first view_size[row] entries of a view.

    view_idx: (V, m) int32 with m a multiple of `chunk`; the loop runs ceil(size / chunk) times
    (a while loop; under vmap it runs the longest view's count, masking the others).
    """
    size = view_size[row]
    n_chunks = (size + chunk - 1) // chunk

    def body(c, acc):
        start = c * chunk
        idx = jax.lax.dynamic_slice(view_idx, (row, start), (1, chunk))[0]
        mask = start + jnp.arange(chunk) < size
        return jax.tree.map(jnp.add, acc, sums(idx, mask))

    return jax.lax.fori_loop(0, n_chunks, body, init)


# ============================================================================ tasks

def summarize(counts: np.ndarray, what: str) -> str:
    return (f"{what} per node: min {counts.min()}, median {int(np.median(counts))}, "
            f"max {counts.max()}")


def make_cifar10_task(cfg: SimConfig, partition: str = "kshard", shards: int = 5,
                      alpha: float = 0.5, eval_node: int = 1000, eval_global: int = 10000,
                      eval_batch: int = 100, name: str = "cifar10") -> Task:
    """CIFAR-10 with GN-LeNet; `partition` in kshard (paper, shards=5) / iid / dirichlet(alpha).

    eval_node: test images each node's model is evaluated on (a fixed class-balanced subset);
    eval_global: test images of the average model (node = -1); eval_batch: images per evaluation
    step (bounds memory: the engine vmaps `cfg.eval_chunk` nodes, so peak activations are about
    eval_chunk * eval_batch * 128 KiB).
    """
    arrays, source = load_cifar10(cfg.data_dir)
    n = cfg.n_nodes
    parts = partition_labels(arrays.y_train, n, partition, cfg.data_seed, shards, alpha)
    node_idx, node_size = padded_table(parts)
    hist = np.stack([np.bincount(arrays.y_train[p], minlength=models.NUM_CLASSES) for p in parts])
    # fixed, class-balanced test order: rank within class (random), then class
    rng = np.random.default_rng(np.random.SeedSequence([cfg.data_seed, 1]))
    y_test = arrays.y_test
    rank = np.empty(len(y_test), np.int64)
    for c in np.unique(y_test):
        where = np.flatnonzero(y_test == c)
        rank[where] = rng.permutation(where.size)
    test_order = np.lexsort((y_test, rank)).astype(np.int32)
    T = len(y_test)
    eval_node, eval_global = min(eval_node, T), min(eval_global, T)
    views, view_size = padded_table([test_order[:eval_node], test_order[:eval_global]],
                                    multiple=eval_batch)

    x_train, y_train = jnp.asarray(arrays.x_train), jnp.asarray(arrays.y_train)
    x_test, y_test_d = jnp.asarray(arrays.x_test), jnp.asarray(y_test)
    node_idx_d, node_size_d = jnp.asarray(node_idx), jnp.asarray(node_size)
    views_d, view_size_d = jnp.asarray(views), jnp.asarray(view_size)
    init, logits = models.cnn_functions()
    B = cfg.batch_size

    def normalize(x):                         # uint8 HWC -> float32 in [-1, 1] (authors' 0.5/0.5)
        return (x.astype(jnp.float32) / 255.0 - 0.5) / 0.5

    def loss(params, batch):
        return jnp.mean(models.cross_entropy(logits(params, normalize(batch["x"])), batch["y"]))

    def sample_batch(key, node):
        j = jax.random.randint(key, (B,), 0, node_size_d[node])
        idx = node_idx_d[node, j]
        return {"x": x_train[idx], "y": y_train[idx]}

    def evaluate(params, node):
        row = jnp.where(node < 0, 1, 0)

        def sums(idx, mask):
            out = logits(params, normalize(x_test[idx]))
            y = y_test_d[idx]
            correct = (jnp.argmax(out, -1) == y) & mask
            ce = jnp.where(mask, models.cross_entropy(out, y), 0.0)
            return {"correct": jnp.sum(correct.astype(jnp.float32)), "ce": jnp.sum(ce)}

        tot = chunked_sums(sums, views_d, view_size_d, row, eval_batch,
                           {"correct": jnp.float32(0), "ce": jnp.float32(0)})
        count = view_size_d[row].astype(jnp.float32)
        return {"acc": tot["correct"] / count, "loss": tot["ce"] / count}

    classes = (hist > 0).sum(1)
    info = {
        "kind": "CIFAR-10 image classification, GN-LeNet", "source": source,
        "partition": partition, "shards": shards if partition == "kshard" else None,
        "alpha": alpha if partition == "dirichlet" else None,
        "params": models.GNLENET_PARAMS, "n_train": int(len(arrays.y_train)),
        "n_test": int(T), "eval_node_images": int(eval_node), "eval_global_images": int(eval_global),
        "samples_per_node": node_size.tolist(), "classes_per_node": classes.tolist(),
        "class_histogram": hist.tolist(),
        "summary": f"{summarize(node_size, 'samples')}; {summarize(classes, 'classes')}",
    }
    return Task(name=name, init=init, loss=loss, sample_batch=sample_batch, evaluate=evaluate,
                metric_names=("acc", "loss"), primary="acc", higher_is_better=True, info=info)


def synthetic_ratings(n_users: int, n_params: int = 206_680, rank: int = 5,
                      per_user: int = 40, seed: int = 0) -> Ratings:
    """MovieLens-shaped ratings from a planted low-rank model, for scaling runs past 610 users.

    n_items is chosen so that the 20-factor model has `n_params` parameters (MovieLens
    latest-small's 206,680 by default): n_items = n_params / 20 - n_users. Each user rates
    `per_user` distinct random items and every item is rated at least once; a rating is
    3.5 + <u, v> + noise, rounded to half stars in [0.5, 5].
    """
    n_items = n_params // models.MF_FACTORS - n_users
    if n_items < per_user:
        raise ConfigError(f"{n_users} users leave {n_items} items in a {n_params}-parameter "
                          f"model: use fewer nodes (at most "
                          f"{n_params // models.MF_FACTORS - per_user})")
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_users, rank))
    v = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_items, rank))
    item = np.stack([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    user = np.repeat(np.arange(n_users), per_user)
    item = item.reshape(-1)
    unrated = np.setdiff1d(np.arange(n_items), item)    # every item is rated at least once
    user = np.concatenate([user, rng.integers(0, n_users, unrated.size)])
    item = np.concatenate([item, unrated])
    raw = 3.5 + np.sum(u[user] * v[item], axis=1) + rng.normal(0.0, 0.3, user.size)
    stars = np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
    return Ratings(user.astype(np.int64), item.astype(np.int64), stars)


def make_movielens_task(cfg: SimConfig, variant: str = "latest-small", eval_batch: int = 1024,
                        name: str = "movielens") -> Task:
    """MovieLens with matrix factorisation (20 factors), users dealt to nodes in blocks.

    variant "synthetic": `synthetic_ratings` with one user per node (at least 610), a model of
    MovieLens latest-small's size; for scaling to thousands of nodes.
    """
    if variant == "synthetic":
        ratings = synthetic_ratings(max(cfg.n_nodes, 610), seed=cfg.data_seed)
        source = (f"synthetic ratings, planted rank 5 ({len(ratings.rating)} ratings, "
                  f"seed {cfg.data_seed})")
    else:
        ratings, source = load_movielens(cfg.data_dir, variant)
    sp = split_movielens(ratings, cfg.n_nodes, cfg.data_seed)
    n = cfg.n_nodes
    tr, te = np.flatnonzero(sp.train), np.flatnonzero(~sp.train)
    node_of_user = np.searchsorted(sp.node_users, np.arange(sp.n_users), side="right") - 1
    train_parts = [tr[node_of_user[sp.user[tr]] == i] for i in range(n)]
    test_parts = [te[node_of_user[sp.user[te]] == i] for i in range(n)] + [te]
    node_idx, node_size = padded_table(train_parts)
    # test views back to back (row n = the global test set): a padded (n + 1, m) table would
    # be as wide as the global set, n * |test| entries
    view_size = np.array([len(p) for p in test_parts], np.int32)
    view_start = np.concatenate([[0], np.cumsum(view_size)[:-1]]).astype(np.int32)
    flat_views = np.concatenate(test_parts + [np.zeros(eval_batch, np.int64)]).astype(np.int32)

    user_d, item_d = jnp.asarray(sp.user), jnp.asarray(sp.item)
    rating_d = jnp.asarray(sp.rating, jnp.float32)
    node_idx_d, node_size_d = jnp.asarray(node_idx), jnp.asarray(node_size)
    flat_views_d = jnp.asarray(flat_views)
    view_start_d, view_size_d = jnp.asarray(view_start), jnp.asarray(view_size)
    init, predict = models.mf_functions(sp.n_users, sp.n_items)
    B = cfg.batch_size

    def loss(params, batch):
        return jnp.mean((predict(params, batch["user"], batch["item"]) - batch["rating"]) ** 2)

    def sample_batch(key, node):
        j = jax.random.randint(key, (B,), 0, node_size_d[node])
        idx = node_idx_d[node, j]
        return {"user": user_d[idx], "item": item_d[idx], "rating": rating_d[idx]}

    def make_evaluate(predict_fn):
        """evaluate(params, node) from predict_fn(params, user (B,), item (B,)) -> (B,)."""

        def evaluate(params, node):
            row = jnp.where(node < 0, n, node)
            size = view_size_d[row]

            def body(c, se):
                start = c * eval_batch
                idx = jax.lax.dynamic_slice(flat_views_d, (view_start_d[row] + start,),
                                            (eval_batch,))
                mask = start + jnp.arange(eval_batch) < size
                err = predict_fn(params, user_d[idx], item_d[idx]) - rating_d[idx]
                return se + jnp.sum(jnp.where(mask, err**2, 0.0))

            se = jax.lax.fori_loop(0, (size + eval_batch - 1) // eval_batch, body,
                                   jnp.float32(0))
            mse = se / jnp.maximum(size, 1).astype(jnp.float32)
            return {"rmse": jnp.sqrt(mse), "loss": mse}

        return evaluate

    evaluate = make_evaluate(predict)

    def row_positions(layout):
        """(n_users, f), (n_items, f): where each factor of each row sits in the (K, F) array."""
        template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                jax.eval_shape(init, jax.random.key(0)))
        return models.mf_row_positions(layout, template, sp.n_users, sp.n_items)

    def make_local_train(cfg_, layout, tx):
        if cfg_.momentum_buffer:   # stateful optimizer: the generic dense update (documented)
            from divjax.local import make_train_one
            return make_train_one(cfg_, dense_task, layout, tx)
        upos, ipos = row_positions(layout)
        return models.make_mf_sparse_train(cfg_, layout, tx, sample_batch, upos, ipos)

    def make_flat_evaluate(layout):
        # the rows a test rating needs, read straight from the (K, F) fragment array: no
        # unflatten (a gather of the whole model) per node and evaluation
        upos, ipos = (jnp.asarray(x) for x in row_positions(layout))

        def predict_flat(params, user, item):
            q = params.reshape(-1)
            return models.mf_predict_rows(q[upos[user]], q[ipos[item]])

        return make_evaluate(predict_flat)

    users_per_node = np.diff(sp.node_users)
    info = {
        "kind": f"MovieLens {variant} rating prediction, matrix factorisation "
                f"({models.MF_FACTORS} factors)", "source": source,
        "n_ratings": int(len(sp.rating)), "n_users": sp.n_users, "n_items": sp.n_items,
        "n_train": int(tr.size), "n_test": int(te.size),
        "params": models.mf_param_count(sp.n_users, sp.n_items),
        "users_per_node": users_per_node.tolist(), "samples_per_node": node_size.tolist(),
        "test_per_node": view_size[:n].tolist(),
        "local_update": "dense (momentum buffer)" if cfg.momentum_buffer else "sparse rows",
        "summary": f"{summarize(users_per_node, 'users')}; {summarize(node_size, 'train ratings')}",
    }
    dense_task = Task(name=name, init=init, loss=loss, sample_batch=sample_batch,
                      evaluate=evaluate, metric_names=("rmse", "loss"), primary="rmse",
                      higher_is_better=False, info=info)
    return dense_task._replace(make_local_train=make_local_train,
                               make_flat_evaluate=make_flat_evaluate)


# ============================================================================ registration

register_task("cifar10", make_cifar10_task)
register_task("cifar10-iid", partial(make_cifar10_task, partition="iid", name="cifar10-iid"))
for _alpha in (0.1, 0.5, 1.0):
    register_task(f"cifar10-dirichlet{_alpha:g}",
                  partial(make_cifar10_task, partition="dirichlet", alpha=_alpha,
                          name=f"cifar10-dirichlet{_alpha:g}"))
# CPU-sized evaluation: 200 test images per node model, 2000 for the average model
register_task("cifar10-quick", partial(make_cifar10_task, eval_node=200, eval_global=2000,
                                       name="cifar10-quick"))
register_task("movielens", make_movielens_task)
register_task("movielens-100k", partial(make_movielens_task, variant="100k",
                                        name="movielens-100k"))
register_task("movielens-synthetic", partial(make_movielens_task, variant="synthetic",
                                             name="movielens-synthetic"))


# ============================================================================ presets
#
# Network: the authors' Kollaps topology (paper.md): 60 nodes, 60 Mbit/s links, the last 7 nodes
# stragglers at 12, 12, 12, 13, 10, 13, 11 Mbit/s, 1 ms latency; degree (fanout) 6.
# Compute time per iteration is NOT known: the paper runs 128 local steps per iteration on CPU
# containers (2 threads each) and does not report its duration. The values below are our
# estimates, stated here so nobody mistakes them for measurements:
#   - CIFAR-10, 128 steps of batch 8 through GN-LeNet (~25 MFLOP forward per image, ~75 MFLOP
#     forward + backward): ~77 GFLOP per iteration; at ~15 GFLOP/s on 2 CPU threads, ~5 s.
#   - MovieLens, 128 steps of batch 8 of matrix factorisation: microseconds of arithmetic, in
#     practice dominated by per-step Python overhead of PyTorch (~1 ms/step): ~0.15 s.
# Swap them with --compute-s. MovieLens optimizer settings are not in paper.md either; we use the
# CIFAR-10 ones (SGD, lr 0.05, batch 8, 128 local steps) and say so.

def _paper_setting(**task_specific) -> SimConfig:
    """The paper's network and training (paper.md): 60 nodes, 7 stragglers, degree 6, 1 ms."""
    return SimConfig(algorithm="divshare", n_nodes=60, n_fragments=8, fanout=6, n_stragglers=7,
                     straggler_mbps=PAPER_STRAGGLER_MBPS, fast_mbps=60.0, latency_ms=1.0,
                     tick_s=0.01, local_steps=128, batch_size=8, lr=0.05, **task_specific)


def movielens_paper() -> SimConfig:
    """MovieLens latest-small, DivShare, the paper's 60 nodes / 7 stragglers / degree 6 (needs data_dir or embedded)."""
    return _paper_setting(task="movielens", compute_s=0.15, duration_s=60.0, eval_every_s=2.0,
                          eval_chunk=64)


def movielens_default() -> SimConfig:
    """DivShare on embedded MovieLens: 60 nodes, 7 paper stragglers; under 2 min on 2 CPU cores."""
    return movielens_paper().replace(data_dir="", duration_s=20.0, eval_every_s=1.0,
                                     tick_s=0.05, compute_s=0.15)


def movielens_small() -> SimConfig:
    """MovieLens, 16 nodes (3 stragglers), short run for quick checks (seconds on a CPU)."""
    return movielens_paper().replace(n_nodes=16, n_stragglers=3, duration_s=10.0,
                                     eval_every_s=1.0, tick_s=0.05)


def cifar10_paper() -> SimConfig:
    """CIFAR-10 kshard(5), GN-LeNet, DivShare, the paper's 60 nodes / 7 stragglers (needs --data-dir; GPU-sized)."""
    return _paper_setting(task="cifar10", compute_s=5.0, duration_s=800.0, eval_every_s=20.0,
                          eval_chunk=8)


def cifar10_small() -> SimConfig:
    """CIFAR-10 kshard(5), 8 nodes (1 straggler), 16 local steps, CPU-sized evaluation (needs --data-dir)."""
    return cifar10_paper().replace(task="cifar10-quick", n_nodes=8, n_stragglers=1,
                                   local_steps=16, compute_s=0.625, fanout=3, tick_s=0.125,
                                   duration_s=15.0, eval_every_s=3.0, eval_chunk=8,
                                   train_chunk=1)  # per-node convs: ~2x faster than vmap on CPU


register_preset("movielens-paper", movielens_paper)
register_preset("movielens-default", movielens_default)
register_preset("movielens-small", movielens_small)
register_preset("cifar10-paper", cifar10_paper)
register_preset("cifar10-small", cifar10_small)

__all__ = [
    "CifarArrays", "MovieLensSplit", "Ratings", "chunked_sums", "load_cifar10", "load_movielens",
    "make_cifar10_task", "make_movielens_task", "padded_table", "partition_labels",
    "split_movielens",
]
