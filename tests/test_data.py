"""Real-data loaders (numpy and TFDS paths, same result), partitions, errors, embedded copy.

Tiny archives are written here in the real formats; nothing is downloaded.
"""

import io
import pickle
import tarfile
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import divjax
from divjax import data
from divjax.config import ConfigError, SimConfig
from divjax.data import cifar10_files, movielens_files

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


# ----------------------------------------------------------------------------- tiny archives

def tiny_cifar(n_per_batch=6, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (5 * n_per_batch, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(5 * n_per_batch) % 10).astype(np.int32)
    xt = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    yt = (np.arange(n_test) * 3 % 10).astype(np.int32)
    return data.CifarArrays(x, y, xt, yt)


def binary_batch(x, y) -> bytes:
    chw = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return np.concatenate([y.astype(np.uint8)[:, None], chw], axis=1).tobytes()


def pickle_batch(x, y) -> bytes:
    d = {b"batch_label": b"x", b"labels": [int(v) for v in y],
         b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"filenames": [b"a"] * len(y)}
    return pickle.dumps(d, protocol=2)


def batches(a: data.CifarArrays):
    k = len(a.x_train) // 5
    for i in range(5):
        yield f"data_batch_{i + 1}", a.x_train[i * k:(i + 1) * k], a.y_train[i * k:(i + 1) * k]
    yield "test_batch", a.x_test, a.y_test


def write_cifar_dir(root: Path, a, kind: str) -> Path:
    folder = root / f"cifar-10-batches-{kind}"
    folder.mkdir(parents=True)
    for name, x, y in batches(a):
        if kind == "bin":
            (folder / f"{name}.bin").write_bytes(binary_batch(x, y))
        else:
            (folder / name).write_bytes(pickle_batch(x, y))
    return folder


def write_cifar_tar(path: Path, a, kind: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, x, y in batches(a):
            raw = binary_batch(x, y) if kind == "bin" else pickle_batch(x, y)
            info = tarfile.TarInfo(f"cifar-10-batches-{kind}/{name}{'.bin' if kind == 'bin' else ''}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def assert_same_cifar(got: data.CifarArrays, want: data.CifarArrays):
    for g, w in zip(got, want, strict=True):
        chex.assert_trees_all_equal(np.asarray(g), np.asarray(w).astype(np.asarray(g).dtype))


RATINGS = [(1, 10, 4.0), (1, 30, 3.5), (2, 10, 5.0), (2, 20, 0.5), (3, 193609, 2.0),
           (3, 20, 4.5), (4, 30, 1.0), (4, 10, 3.0)]


def write_ratings_csv(path: Path, rows=RATINGS, crlf=True) -> Path:
    nl = "\r\n" if crlf else "\n"
    body = "userId,movieId,rating,timestamp" + nl + "".join(
        f"{u},{m},{r:g},{964982703 + i}{nl}" for i, (u, m, r) in enumerate(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body.encode())
    return path


# ----------------------------------------------------------------------------- CIFAR loaders

@pytest.mark.parametrize("kind", ["bin", "py"])
def test_cifar_loader__folders_and_archives_read_the_same(tmp_path, kind):
    a = tiny_cifar()
    write_cifar_dir(tmp_path / "dir", a, kind)
    got, source = data.load_cifar10(str(tmp_path / "dir"))
    assert_same_cifar(got, a)
    assert f"cifar-10-batches-{kind}" in source
    tar = write_cifar_tar(tmp_path / f"cifar-10-{kind}.tar.gz", a, kind)
    got, source = data.load_cifar10(str(tar))
    assert_same_cifar(got, a)
    assert "archive" in source


def test_cifar_loader__binary_record_layout_is_label_then_chw(tmp_path):
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 1, 2, :] = [7, 8, 9]                      # row 1, column 2, RGB
    raw = binary_batch(x, np.array([4]))
    assert len(raw) == 3073 and raw[0] == 4
    assert raw[1 + 0 * 1024 + 1 * 32 + 2] == 7 and raw[1 + 2 * 1024 + 1 * 32 + 2] == 9
    got, y = cifar10_files.read_cifar_binary(raw, "mem")
    chex.assert_trees_all_equal(got, x)
    assert y.tolist() == [4]


def test_cifar_loader__npz(tmp_path):
    a = tiny_cifar()
    np.savez_compressed(tmp_path / "cifar10.npz", **a._asdict())
    got, source = data.load_cifar10(str(tmp_path))
    assert_same_cifar(got, a)
    assert "npz" in source


def test_cifar_loader__missing_path_names_it_and_says_how_to_get_it(tmp_path):
    bad = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=r"nowhere.*does not exist.*cifar-10-batches-bin.*cs\.toronto"):
        data.load_cifar10(str(bad))
    with pytest.raises(ConfigError, match=r"no CIFAR-10 copy found in .*cifar10\.npz"):
        data.load_cifar10(str(tmp_path))
    with pytest.raises(ConfigError, match="needs --data-dir"):
        data.load_cifar10("")


def test_cifar_loader__truncated_binary_batch(tmp_path):
    folder = write_cifar_dir(tmp_path, tiny_cifar(), "bin")
    f = folder / "data_batch_3.bin"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"data_batch_3\.bin.*not a whole number of 3073.*truncated"):
        data.load_cifar10(str(tmp_path))


def test_cifar_loader__truncated_archives(tmp_path):
    a = tiny_cifar()
    tar = write_cifar_tar(tmp_path / "cifar-10-python.tar.gz", a, "py")
    tar.write_bytes(tar.read_bytes()[:200])
    with pytest.raises(ConfigError, match=r"cifar-10-python\.tar\.gz.*truncated or corrupt"):
        data.load_cifar10(str(tar))
    np.savez_compressed(tmp_path / "cifar10.npz", **a._asdict())
    npz = tmp_path / "cifar10.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"cifar10\.npz.*truncated or corrupt"):
        data.load_cifar10(str(npz))
    folder = write_cifar_dir(tmp_path / "p", a, "py")
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:500])
    with pytest.raises(ConfigError, match=r"test_batch.*truncated or corrupt"):
        data.load_cifar10(str(tmp_path / "p"))


def test_cifar_loader__pickle_refuses_arbitrary_objects(tmp_path):
    folder = write_cifar_dir(tmp_path, tiny_cifar(), "py")
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": [0]}))
    with pytest.raises(ConfigError, match="refusing to unpickle"):
        data.load_cifar10(str(tmp_path))


# ----------------------------------------------------------------------------- MovieLens loaders

def test_movielens_loader__ratings_csv_and_u_data(tmp_path):
    write_ratings_csv(tmp_path / "ml-latest-small" / "ratings.csv")
    r, source = data.load_movielens(str(tmp_path))
    assert "ml-latest-small/ratings.csv" in source
    assert r.user.tolist() == [u for u, _, _ in RATINGS]
    assert r.item.tolist() == [m for _, m, _ in RATINGS]
    assert r.rating.tolist() == [x for _, _, x in RATINGS]
    stars = [max(1, int(x)) for _, _, x in RATINGS]
    rows = "".join(f"{u}\t{m}\t{s}\t88125000{i}\n"
                   for i, ((u, m, _), s) in enumerate(zip(RATINGS, stars, strict=True)))
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text(rows)
    r, source = data.load_movielens(str(tmp_path), "100k")
    assert "u.data" in source and r.rating.tolist() == stars


def test_movielens_loader__errors(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist.*ml-latest-small/ratings\.csv.*grouplens"):
        data.load_movielens(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"no MovieLens latest-small copy found"):
        data.load_movielens(str(tmp_path))
    f = write_ratings_csv(tmp_path / "ratings.csv")
    full = f.read_bytes()
    f.write_bytes(full[:-9])                                    # cut inside the last timestamp
    with pytest.raises(ConfigError, match=r"ratings\.csv: the last line '4,10,3,96' .*truncated"):
        data.load_movielens(str(tmp_path))
    f.write_bytes(full.replace(b"2,20,0.5,", b"2,20,"))         # a line with 3 fields
    with pytest.raises(ConfigError, match=r"ratings\.csv: malformed ratings \(line 5: '2,20,"):
        data.load_movielens(str(tmp_path))
    f.write_bytes(b"user,item\r\n1,2\r\n")
    with pytest.raises(ConfigError, match="expected the header userId,movieId,rating,timestamp"):
        data.load_movielens(str(f))
    with pytest.raises(ConfigError, match="not embedded"):
        data.load_movielens("", "100k")


def test_movielens_asset__roundtrip(tmp_path):
    r, _ = movielens_files.load_movielens_local(
        str(write_ratings_csv(tmp_path / "ratings.csv")), "latest-small")
    back = movielens_files.ratings_from_asset(movielens_files.ratings_to_asset(r))
    chex.assert_trees_all_equal(tuple(back), tuple(r))


def test_movielens_embedded__equals_shared_ratings_csv():
    csv = SHARED / "ml-latest-small" / "ratings.csv"
    if not csv.is_file():
        pytest.skip(f"{csv} absent (CI keeps ../shared/data beside the checkout)")
    want, _ = data.load_movielens(str(SHARED))
    got, source = data.load_movielens("")
    assert "embedded" in source
    assert len(got.user) == 100_836 and np.unique(got.user).size == 610
    assert np.unique(got.item).size == 9724
    chex.assert_trees_all_equal(tuple(got), tuple(want))
    lic = Path(divjax.__file__).parent / "assets" / "MOVIELENS_LICENSE.txt"
    assert lic.read_bytes() == (SHARED / "ml-latest-small" / "README.txt").read_bytes()


# ----------------------------------------------------------------------------- TFDS path

def test_tfds_path__same_result_as_local_copy(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    a = tiny_cifar()
    write_cifar_dir(tmp_path, a, "bin")
    local, _ = data.load_cifar10(str(tmp_path))

    def cifar_source(self, split, **kwargs):
        x, y = (a.x_train, a.y_train) if split == "train" else (a.x_test, a.y_test)
        return [{"id": f"{split}_{i}", "image": x[i], "label": np.int64(y[i])}
                for i in range(len(y))]

    with tfds.testing.mock_data(as_data_source_fn=cifar_source):
        online, source = data.load_cifar10("tfds")
    assert "tensorflow-datasets cifar10" in source
    assert_same_cifar(online, local)

    write_ratings_csv(tmp_path / "ratings.csv")
    local_r, _ = data.load_movielens(str(tmp_path))

    def movielens_source(self, split, **kwargs):
        return [{"user_id": str(u).encode(), "movie_id": str(m).encode(),
                 "user_rating": np.float32(r), "timestamp": np.int64(0)} for u, m, r in RATINGS]

    with tfds.testing.mock_data(as_data_source_fn=movielens_source):
        online_r, source = data.load_movielens("tfds")
    assert "movielens/latest-small-ratings" in source
    chex.assert_trees_all_equal(tuple(online_r), tuple(local_r))


def test_tfds_path__random_mock_data_loads():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        a, _ = data.load_cifar10("tfds")
    assert a.x_train.shape == (12, 32, 32, 3) and a.x_train.dtype == np.uint8
    assert a.y_train.shape == (12,) and 0 <= a.y_train.min() and a.y_train.max() < 10


# ----------------------------------------------------------------------------- partitions

def balanced_labels(per_class=100, classes=10, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


@pytest.mark.parametrize("scheme", ["kshard", "iid", "dirichlet"])
def test_partition__every_sample_in_exactly_one_node_and_deterministic(scheme):
    y = balanced_labels()
    parts = data.partition_labels(y, 7, scheme, seed=3, shards=5, alpha=0.5)
    assert len(parts) == 7 and min(len(p) for p in parts) >= 1
    allidx = np.concatenate(parts)
    chex.assert_trees_all_equal(np.sort(allidx), np.arange(len(y)))
    again = data.partition_labels(y, 7, scheme, seed=3, shards=5, alpha=0.5)
    chex.assert_trees_all_equal(parts, again)
    other = data.partition_labels(y, 7, scheme, seed=4, shards=5, alpha=0.5)
    assert any(not np.array_equal(p, q) for p, q in zip(parts, other, strict=True))


def test_partition__kshard_class_skew():
    y = balanced_labels()
    one = data.partition_labels(y, 10, "kshard", seed=0, shards=1)
    assert [len(np.unique(y[p])) for p in one] == [1] * 10          # one class per node
    assert sorted(int(y[p][0]) for p in one) == list(range(10))
    for shards in (2, 5):
        parts = data.partition_labels(y, 10, "kshard", seed=0, shards=shards)
        classes = [len(np.unique(y[p])) for p in parts]
        assert max(classes) <= 2 * shards                            # a shard spans <= 2 classes
        assert {len(p) for p in parts} == {100}
    iid = data.partition_labels(y, 10, "iid", seed=0)
    assert min(len(np.unique(y[p])) for p in iid) >= 8


def test_partition__dirichlet_small_alpha_is_skewed():
    y = balanced_labels()
    skewed = data.partition_labels(y, 5, "dirichlet", seed=0, alpha=0.05)
    mild = data.partition_labels(y, 5, "dirichlet", seed=0, alpha=100.0)

    def top_share(parts):
        return np.mean([np.bincount(y[p], minlength=10).max() / len(p) for p in parts])

    assert top_share(skewed) > 0.4 > 0.2 > top_share(mild)


def test_partition__errors():
    with pytest.raises(ConfigError, match="partition='bogus'"):
        data.partition_labels(np.zeros(10, int), 2, "bogus", 0)
    with pytest.raises(ConfigError, match="exceeds the 10 training samples"):
        data.partition_labels(np.zeros(10, int), 3, "kshard", 0, shards=5)


def test_movielens_split__per_user_70_30_and_user_blocks():
    rng = np.random.default_rng(0)
    user = np.repeat(np.arange(1, 24), rng.integers(20, 40, 23))
    r = data.Ratings(user, rng.integers(1, 50, user.size), np.full(user.size, 3.0, np.float32))
    sp = data.split_movielens(r, 5, seed=1)
    for u in range(23):
        m = int(np.sum(sp.user == u))
        assert int(np.sum(sp.train & (sp.user == u))) == round(0.7 * m)
    assert np.diff(sp.node_users).tolist() == [5, 5, 5, 4, 4]      # 23 = 4 * 5 + 3
    again = data.split_movielens(r, 5, seed=1)
    chex.assert_trees_all_equal(sp.train, again.train)
    assert not np.array_equal(sp.train, data.split_movielens(r, 5, seed=2).train)
    with pytest.raises(ConfigError, match="n_nodes=30 exceeds the 23 MovieLens users"):
        data.split_movielens(r, 30, seed=0)


# ----------------------------------------------------------------------------- tasks

def test_movielens_task__tables_batches_and_views():
    cfg = SimConfig(task="movielens", n_nodes=60, batch_size=8)
    task = data.make_movielens_task(cfg)
    info = task.info
    assert "embedded" in info["source"]
    assert info["params"] == 206_680 and info["n_users"] == 610 and info["n_items"] == 9724
    assert info["n_train"] + info["n_test"] == 100_836
    assert info["users_per_node"] == [11] * 10 + [10] * 50
    assert sum(info["samples_per_node"]) == info["n_train"]
    assert sum(info["test_per_node"]) == info["n_test"]
    b = jax.jit(task.sample_batch)(jax.random.key(0), jnp.int32(59))
    chex.assert_shape([b["user"], b["item"], b["rating"]], (8,))
    assert np.all(np.asarray(b["user"]) >= 600)                      # node 59 owns users 600..609
    params = task.init(jax.random.key(0))
    ev = jax.jit(task.evaluate)
    whole, one = ev(params, jnp.int32(-1)), ev(params, jnp.int32(3))
    assert set(whole) == {"rmse", "loss"}
    assert abs(float(whole["rmse"]) ** 2 - float(whole["loss"])) < 1e-3
    assert 3.0 < float(whole["rmse"]) < 4.0                          # ~sqrt(E r^2) at init


def test_cifar10_task__partition_summary_and_evaluation(tmp_path):
    a = tiny_cifar(n_per_batch=40, n_test=30)
    np.savez_compressed(tmp_path / "cifar10.npz", **a._asdict())
    cfg = SimConfig(task="cifar10", n_nodes=4, batch_size=3, data_dir=str(tmp_path))
    task = data.make_cifar10_task(cfg, shards=2, eval_node=20, eval_batch=10)
    assert sum(task.info["samples_per_node"]) == 200
    assert max(task.info["classes_per_node"]) <= 4
    assert task.info["eval_global_images"] == 30
    b = task.sample_batch(jax.random.key(1), jnp.int32(2))
    chex.assert_shape(b["x"], (3, 32, 32, 3))
    params = task.init(jax.random.key(0))
    ev = jax.jit(task.evaluate)
    node_m, glob_m = ev(params, jnp.int32(0)), ev(params, jnp.int32(-1))
    for m in (node_m, glob_m):
        assert 0.0 <= float(m["acc"]) <= 1.0 and np.isfinite(float(m["loss"]))
    # the node view is the first 20 images of the fixed order: the mean over 20 of its outputs
    vm = jax.jit(jax.vmap(task.evaluate, (None, 0)))(params, jnp.arange(3, dtype=jnp.int32))
    chex.assert_trees_all_close(vm["acc"], jnp.full(3, node_m["acc"]), atol=1e-6)


def test_movielens_synthetic__model_keeps_movielens_size_past_610_users():
    from divjax.data import synthetic_ratings
    from divjax.tasks.registry import make_task

    task = make_task(SimConfig(task="movielens-synthetic", n_nodes=700, batch_size=8))
    assert task.info["n_users"] == 700 and task.info["params"] == 206_680
    assert task.info["users_per_node"] == [1] * 700
    r = synthetic_ratings(700)
    assert r.rating.min() >= 0.5 and r.rating.max() <= 5.0 and np.all(r.rating * 2 % 1 == 0)
    with pytest.raises(ConfigError, match="use fewer nodes"):
        synthetic_ratings(10_334)


def test_movielens_evaluate__equals_numpy_rmse_on_global_and_node_test_sets():
    from divjax.tasks import models
    from divjax.tasks.registry import make_task

    n = 16
    task = make_task(SimConfig(task="movielens", n_nodes=n))
    params = jax.tree.map(lambda x: x + 0.3, task.init(jax.random.key(0)))
    ratings, _ = data.load_movielens("")
    sp = data.split_movielens(ratings, n, 0)
    _, predict = models.mf_functions(sp.n_users, sp.n_items)
    node_of = np.searchsorted(sp.node_users, sp.user, side="right") - 1
    evaluate = jax.jit(task.evaluate)
    for node, rows in ((-1, ~sp.train), (3, ~sp.train & (node_of == 3))):
        pred = np.asarray(predict(params, jnp.asarray(sp.user[rows]), jnp.asarray(sp.item[rows])))
        want = np.sqrt(np.mean((pred - sp.rating[rows]) ** 2))
        np.testing.assert_allclose(float(evaluate(params, jnp.int32(node))["rmse"]), want,
                                   rtol=1e-5)
