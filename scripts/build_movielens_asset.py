"""Build divjax/assets/movielens_small.npz from MovieLens latest-small ratings.csv.

    python scripts/build_movielens_asset.py [path/to/ml-latest-small]   (default ../shared/data/...)

The asset keeps every rating in file order: uint16 user id, uint16 dense item index into the
sorted raw movie ids (uint32), uint8 half stars; timestamps are dropped. The data set's README
(its licence) is copied beside it as MOVIELENS_LICENSE.txt, as the licence requires.
"""

import shutil
import sys
from pathlib import Path

import numpy as np

from divjax.data.movielens_files import ASSET_NAME, parse_ratings_csv, ratings_to_asset

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else ROOT.parent / "shared" / "data" / "ml-latest-small"
    csv = src / "ratings.csv"
    ratings = parse_ratings_csv(csv.read_bytes(), csv)
    out = ROOT / "divjax" / "assets"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / ASSET_NAME, **ratings_to_asset(ratings))
    shutil.copyfile(src / "README.txt", out / "MOVIELENS_LICENSE.txt")
    size = (out / ASSET_NAME).stat().st_size
    print(f"wrote {out / ASSET_NAME} ({size:,} bytes, {len(ratings.rating):,} ratings) and "
          f"MOVIELENS_LICENSE.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
