"""MovieLens local copies, read with numpy alone, and the copy embedded in the package.

Accepted forms of `SimConfig.data_dir`: latest-small `ratings.csv` (in `ml-latest-small/` or
directly), ml-100k `u.data`, or an .npz in the embedded copy's compact form. With
`data_dir = ""`, MovieLens latest-small is the copy embedded in the package
(`divjax/assets/movielens_small.npz`, licence in `assets/MOVIELENS_LICENSE.txt`). A copy cut at
a line boundary is caught by its rating count (`check_release_size`). Errors are `ConfigError`s
that name the path, what was expected and how to get it. The TFDS path and the choice between
the paths are in `divjax.data.sources`.
"""

from __future__ import annotations

import io
import re
import zipfile
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from divjax.config import ConfigError

MOVIELENS_URL = "https://grouplens.org/datasets/movielens/"
ASSET_NAME = "movielens_small.npz"


class Ratings(NamedTuple):
    user: np.ndarray      # (R,) int64: raw user id
    item: np.ndarray      # (R,) int64: raw item (movie) id
    rating: np.ndarray    # (R,) float32: stars



def movielens_help(path, variant) -> str:
    want = ("ml-latest-small/ratings.csv (userId,movieId,rating,timestamp)"
            if variant == "latest-small" else "ml-100k/u.data (user, item, rating, timestamp; tabs)")
    return (f"expected MovieLens {variant} at {path}: {want}; get it from {MOVIELENS_URL}, "
            f"or use --data-dir tfds (needs `pip install divjax[data]`)"
            + ("; or leave --data-dir empty for the embedded copy" if variant == "latest-small"
               else ""))



def parse_ratings_csv(raw: bytes, where) -> Ratings:
    """MovieLens latest `ratings.csv`: header userId,movieId,rating,timestamp (CRLF or LF)."""
    text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
    _check_complete(text, where, "latest-small")
    lines = text.splitlines()
    if not lines or lines[0].strip().lower().replace(" ", "") != "userid,movieid,rating,timestamp":
        raise ConfigError(f"{where}: first line is {lines[0][:60] if lines else ''!r}, expected "
                          f"the header userId,movieId,rating,timestamp; "
                          f"{movielens_help(where, 'latest-small')}")
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
                          f"the file is truncated; {movielens_help(where, variant)}")


def _parse_columns(lines: list[str], sep: str, where, variant: str) -> Ratings:
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise ConfigError(f"{where}: no ratings; {movielens_help(where, variant)}")
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
                          f"corrupt; {movielens_help(where, variant)}") from e
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
                          f"altered; {movielens_help(path, variant)}")


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
        raise ConfigError(f"data_dir={data_dir!r} does not exist; {movielens_help(path, variant)}")
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
                                  f"{movielens_help(path, variant)}") from e
        if path.name != name:
            raise ConfigError(f"{path}: expected a file named {name}; "
                              f"{movielens_help(path, variant)}")
        cands = [path]
    else:
        cands = [path / folder / name, path / name]
    for cand in cands:
        if cand.is_file():
            ratings = parse(cand.read_bytes(), cand)
            check_release_size(ratings, cand, variant)
            return ratings, f"local {folder}/{name} {cand}"
    raise ConfigError(f"no MovieLens {variant} copy found (looked for "
                      f"{', '.join(map(str, cands))}); {movielens_help(path, variant)}")

