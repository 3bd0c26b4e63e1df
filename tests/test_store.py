"""The LMDB store: dedupe, checksums, physics guard, crash safety, map growth, Dataset, subsets, export/import."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from diffcurate.common.errors import CheckError, InputError
from diffcurate.curate.store.arrays import load_arrays
from diffcurate.curate.store.dataset import StoreDataset, open_dataset
from diffcurate.curate.store.export import card_paths, export_store, import_arrays
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.solvers import solve
from diffcurate.solvers.problem import Configs, Physics, disc_mask, paint

TINY = Physics(32, 2, 1.0, 1 / 16)
ROOT = Path(__file__).resolve().parents[1]


def random_configs(n: int, seed: int = 0, physics: Physics = TINY, kmax: int = 10) -> Configs:
    rng = np.random.default_rng(seed)
    lo, hi = physics.radius, physics.lattice - 1 - physics.radius
    ks = rng.integers(1, kmax + 1, n)
    return Configs.from_lists([rng.integers(lo, hi + 1, (k, 2)) for k in ks], [rng.random(k) for k in ks])


@pytest.fixture(scope="module")
def solved() -> tuple[Configs, np.ndarray]:
    c = random_configs(120)
    return c, solve(TINY, c, "fast", dtype="float32")  # (120, 32, 32)


@pytest.fixture
def store(tmp_path, solved) -> Store:
    c, y = solved
    st = Store.create(tmp_path / "store", TINY, preset="tiny")
    st.add(c[:80], y[:80], split="train", sampler="uniform", round=0, scores=np.arange(80.0))
    st.add(c[80:100], y[80:100], split="val", sampler="clustered", round=1, provenance={"strategy": "topk"})
    st.add(c[100:], y[100:], split="test", sampler=["uniform"] * 20, round=0)
    yield st
    st.close()


def test_add_get_and_dedupe(store, solved):
    c, y = solved
    assert store.count() == 120 and store.count("val") == 20
    assert store.add(c[:50], y[:50], split="test") == 0  # duplicates, even into another split, are no-ops
    assert store.count("train") == 80 and store.count("test") == 20
    ids = [c.sample_id(s, TINY) for s in (3, 90, 0)]
    cfg, yy, hs = store.get(ids)
    np.testing.assert_array_equal(yy, y[[3, 90, 0]])
    np.testing.assert_array_equal(paint(TINY, cfg), paint(TINY, c[[3, 90, 0]]))
    assert hs[1]["provenance"] == {"strategy": "topk"} and hs[1]["round"] == 1 and hs[0]["score"] == 3.0
    assert len(store.configs("val")) == 20
    df = store.index()
    assert {"id", "stratum", "sampler", "round", "split", "score"} <= set(df.columns)
    assert df.set_index("id").loc[ids, "stratum"].tolist() == c.counts[[3, 90, 0]].tolist()
    assert df.set_index("id").loc[ids[1], "strategy"] == "topk"
    assert store.verify() == []
    with pytest.raises(InputError, match="no sample"):
        store.get(["0" * 24])


def test_add_blocks_and_uncached_writes(tmp_path, solved):
    """Solver results arrive as (k, L, L) blocks; the bulk writer drops its committed pages from the cache."""
    c, y = solved
    st = Store.create(tmp_path / "s", TINY, cache_writes=False)
    assert st.add(c[:10], [y[:3], y[3:4], y[4:10]], sampler="uniform") == 10
    ids = [c.sample_id(s, TINY) for s in range(10)]
    np.testing.assert_array_equal(st.get(ids)[1], y[:10])
    assert st.verify() == []
    bad = y[10:12].copy()
    bad[1, 5, 5] = -np.inf
    for blocks, match in (
        ([y[10:12], y[12:13]], "shape"),  # 3 rows for 2 configs
        ([y[10:11], y[11:12, :16]], "shape"),
        ([y[10:11], np.full((1, 32, 32), np.nan, np.float32)], "NaN"),
        ([bad], "infinite"),
    ):
        with pytest.raises(InputError, match=match):
            st.add(c[10:12], blocks)
    assert st.count() == 10
    huge = np.full((2, 32, 32), 3e38, np.float32)  # finite, though its float32 sum overflows
    assert st.add(c[10:12], [huge]) == 2 and st.get([c.sample_id(11, TINY)])[1].max() == np.float32(3e38)
    st.close()
    assert Store(tmp_path / "s").count() == 12
    with Store.create(tmp_path / "h", TINY, encoding="float16") as h:
        with pytest.raises(InputError, match="float16 range"):
            h.add(c[:2], y[:2] * 1e5)
        assert h.add(c[:2], y[:2]) == 2 and h.count() == 2


def test_reader_env_is_read_only_and_refuses_a_writer(tmp_path, solved):
    """A process that only reads gets a read-only environment (with readahead); a writer must not share it."""
    c, y = solved
    with Store.create(tmp_path / "s", TINY) as st:
        st.add(c[:4], y[:4])
    with Store(tmp_path / "s", readonly=True) as reader:
        assert reader.env.flags()["readonly"] and reader.readonly
        with pytest.raises(InputError, match="open read-only in this process"):
            Store(tmp_path / "s")
    with Store(tmp_path / "s") as writer, Store(tmp_path / "s", readonly=True) as reader:
        assert reader.env is writer.env and writer.add(c[4:6], y[4:6]) == 2  # a reader shares the writer's env


def test_info_schema(store):
    info = store.info()
    assert {"physics", "schema_version", "count", "by_split", "by_stratum", "by_round", "by_sampler", "bytes"} <= set(
        info
    )
    assert info["count"] == 120 and info["by_split"] == {"test": 20, "train": 80, "val": 20}
    assert info["by_sampler"] == {"clustered": 20, "uniform": 100} and info["bytes"] > 120 * 32 * 32 * 4
    assert Physics.from_dict(info["physics"]) == TINY and sum(info["by_stratum"].values()) == 120


def test_checksum_corruption_detected(store, solved):
    c, _ = solved
    key = c.sample_id(7, TINY).encode()
    with store.env.begin(write=True) as txn:
        raw = bytearray(txn.get(key, db=store._samples))
        # the record's checksum is zlib's CRC-32 of everything before it (the format does not depend on the library)
        assert int.from_bytes(raw[-4:], "big") == zlib.crc32(raw[:-4])
        raw[len(raw) // 2] ^= 0x01
        txn.put(key, bytes(raw), db=store._samples)
    problems = store.verify()
    assert len(problems) == 1 and "checksum" in problems[0] and key.decode() in problems[0]
    with pytest.raises(CheckError, match="checksum"):
        store.get([key.decode()])


def test_physics_mismatch_refused(store, solved, tmp_path):
    c, y = solved
    other = Physics(32, 2, 1.0, 1 / 9)
    with pytest.raises(InputError, match="other physics"):
        store.add(c[:2], y[:2], physics=other)
    with pytest.raises(InputError, match="other physics"):
        Store.create(store.path, other)
    with pytest.raises(InputError, match="shape"):
        store.add(c[:3], y[:2])
    with pytest.raises(InputError, match="NaN"):
        store.add(c[:1], np.full((1, 32, 32), np.nan, np.float32))


def test_bad_paths(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        Store(f)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a store"):
        Store(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        Store(tmp_path / "missing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="non-empty"):
        Store.create(tmp_path / "full", TINY)
    env = lmdb.open(str(tmp_path / "bare"), max_dbs=2)  # an LMDB environment that is not a store
    env.close()
    with pytest.raises(InputError, match="not a diffcurate store"):
        Store(tmp_path / "bare")


def test_map_grows_from_tiny_map(tmp_path, solved):
    c, y = solved
    with Store.create(tmp_path / "s", TINY, map_size=64 << 10) as st:
        before = st.env.info()["map_size"]
        assert st.add(c, y) == 120
        assert st.env.info()["map_size"] > before and st.verify() == []
    with Store(tmp_path / "s") as st:
        assert st.count() == 120
    # headers are left out of the map's growth ahead of a batch: 64 KiB of provenance per sample overflows the
    # estimate, and the MapFullError path (double the map, retry the batch) must still store everything once
    big = {"note": "x" * (64 << 10)}
    with Store.create(tmp_path / "p", TINY, map_size=64 << 10) as st:
        assert st.add(c, y, provenance=big) == 120 and st.count() == 120 and st.verify() == []
        assert st.env.info()["map_size"] >= 2 * 120 * (64 << 10)
        assert all(h["provenance"] == big for h in st.get(st.ids()[:3])[2])


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.solvers.problem import Configs, Physics
    st = Store.create(sys.argv[1], Physics(32, 2, 1.0, 1 / 16))
    rng = np.random.default_rng(0)
    y = rng.random((8, 32, 32)).astype(np.float32)
    for i in range(100000):
        c = Configs.from_lists([rng.integers(2, 30, (3, 2)) for _ in range(8)], [rng.random(3) for _ in range(8)])
        st.add(c, y)
        if i == 5:
            print("ready", flush=True)
    """
)


def test_kill_9_writer_leaves_sound_store(tmp_path):
    path = tmp_path / "s"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    with Store(path) as st:
        n = st.count()
        assert n >= 48 and n % 8 == 0  # whole committed batches (8 samples per add call) and nothing else
        assert st.verify() == []
        assert len(st.index()) == n


def test_dataset_items_and_workers(store, solved):
    c, y = solved
    ds = StoreDataset(store.path, split="val")
    x, yy, regions, count = ds[0]
    assert x.shape == yy.shape == (1, 32, 32) and regions.shape == (5, 32, 32)
    assert ds.region_names == ("sources", "field", "r1", "r2", "r3")
    assert (x.dtype, yy.dtype, regions.dtype, count.dtype) == (torch.float32, torch.float32, torch.bool, torch.int64)
    mask = regions[:1]
    s = [c.sample_id(i, TINY) for i in range(len(c))].index(ds.ids[0])
    np.testing.assert_array_equal(x[0].numpy(), paint(TINY, c[s])[0])
    np.testing.assert_array_equal(mask[0].numpy(), disc_mask(TINY, c[s])[0])
    np.testing.assert_array_equal(yy[0].numpy(), y[s])
    assert int(count) == c.counts[s]
    batches = {}
    for w in (0, 2):
        loader = DataLoader(ds, batch_size=7, num_workers=w, shuffle=False)
        batches[w] = [torch.cat(parts) for parts in zip(*loader, strict=True)]
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a, b)
    # the workers closed their inherited copy of the env; the parent's Store is unaffected
    assert store.add(c[:1], y[:1]) == 0 and store.verify() == []


def test_open_dataset_store_and_files(store, tmp_path):
    ds = open_dataset(store.path, split="train")
    assert len(ds) == 80
    for ext in ("npz", "h5"):
        out = tmp_path / f"all.{ext}"
        export_store(store.path, out)
        fds = open_dataset(out, split="all")
        assert len(fds) == 120
        assert len(open_dataset(out)) == len(open_dataset(out, split="train")) == 80  # the file's own split marks
        ids = load_arrays(out)["ids"].tolist()
        sds = StoreDataset(store.path, split="all", ids=ids[:5])
        for i in range(5):
            for a, b in zip(fds[i], sds[i], strict=True):
                assert torch.equal(a, b)
    with pytest.raises(InputError):
        open_dataset(tmp_path / "nothing.txt")


def test_subsets_nested_balanced_reproducible(tmp_path):
    c = random_configs(400, seed=3)
    y = np.zeros((400, 32, 32), np.float32)
    with Store.create(tmp_path / "s", TINY) as st:
        st.add(c, y)
        fracs = [0.0125, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
        subs = [st.subset("train", f, seed=1) for f in fracs]
        assert [len(s) for s in subs] == [5, 10, 20, 40, 100, 200, 400]
        for small, big in zip(subs, subs[1:], strict=False):
            assert set(small) <= set(big)
        assert subs[3] == st.subset("train", 0.1, seed=1) and subs[3] != st.subset("train", 0.1, seed=2)
        df = st.index().set_index("id")
        per = df.loc[subs[3], "stratum"].value_counts()
        assert len(per) == 10 and per.max() - per.min() <= 1  # 40 = 4 per source count
        with pytest.raises(InputError):
            st.subset("train", 0.0, seed=1)


@pytest.mark.parametrize("ext", ["npz", "h5"])
def test_export_import_round_trip(store, tmp_path, ext):
    a = tmp_path / f"a.{ext}"
    card = export_store(store.path, a, command="curate export test")
    assert card["n_samples"] == 120 and card["command"] == "curate export test"
    jcard, mcard = card_paths(a)
    assert jcard.is_file() and "Dataset card" in mcard.read_text()
    assert import_arrays(tmp_path / "fresh", a, split=None) == 120
    b = tmp_path / f"b.{ext}"
    export_store(tmp_path / "fresh", b)
    da, db = load_arrays(a), load_arrays(b)
    assert set(da) == set(db)
    for k in da:
        np.testing.assert_array_equal(da[k], db[k])
    with Store(tmp_path / "fresh") as st:
        assert st.info()["by_split"] == store.info()["by_split"]
        assert st.info()["by_round"] == store.info()["by_round"]
    with pytest.raises(InputError, match="--force"):
        export_store(store.path, a)
    export_store(store.path, a, split="val", force=True)
    assert len(load_arrays(a)["ids"]) == 20
    export_store(store.path, a, max_round=0, force=True)
    assert len(load_arrays(a)["ids"]) == 100


def test_import_solve_output_and_refuse_other_physics(store, tmp_path, solved):
    from diffcurate.curate.store.arrays import save_arrays

    c, y = solved
    f = tmp_path / "solved.npz"
    save_arrays(f, TINY, c[:10], y=y[:10])  # like `curate solve`: no ids
    assert import_arrays(store.path, f) == 0  # all already in the store
    other = Physics(32, 2, 1.0, 1 / 9)
    g = tmp_path / "other.npz"
    save_arrays(g, other, c[:10], y=y[:10])
    with pytest.raises(InputError, match="other physics"):
        import_arrays(store.path, g)
    h = tmp_path / "noy.npz"
    save_arrays(h, TINY, c[:10])
    with pytest.raises(InputError, match="no targets"):
        import_arrays(store.path, h)


@pytest.mark.parametrize("version", [0, "1", 2, 1.0, True])
def test_unknown_schema_versions_are_one_line_exit_2(tmp_path, cli, version):
    """Only the integer versions this code knows open: older, newer, a string, a float or a bool is refused by
    every store command with one line and exit 2, and the store is left as it was."""
    import json

    from diffcurate.curate.store.env import MAX_DBS

    path = tmp_path / "s"
    with Store.create(path, TINY) as st:
        st.add(Configs.from_lists([np.array([[5, 5]])], [np.array([1.0])]), np.zeros((1, 32, 32), np.float32))
    env = lmdb.open(str(path), max_dbs=MAX_DBS, subdir=True)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"schema_version", json.dumps(version).encode())
    env.close()
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "lock.mdb"}
    for args in (["info", "--store", path], ["verify", "--store", path]):
        code, _, err = cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "store schema" in err, err
    assert {p.name: p.read_bytes() for p in path.iterdir() if p.name != "lock.mdb"} == before


def test_a_store_and_an_export_written_before_problems_were_pluggable(tmp_path, cli):
    """tests/data/legacy: a store (records with the diffusion arrays at the header's top level and `n_sources`)
    and its export (no `problem` array), both written by the code before stores were problem-agnostic. They open,
    verify and re-solve, read the same configurations and fields, import, export again to the same arrays, and
    take new records beside the old."""
    import shutil

    from conftest import tiny_configs

    from diffcurate.curate.store.env import begin
    from diffcurate.curate.store.records import decode_index

    src = Path(__file__).parent / "data" / "legacy"
    shutil.copytree(src, tmp_path / "legacy")
    store, old = tmp_path / "legacy" / "store", tmp_path / "legacy" / "export.npz"
    with Store(store, readonly=True) as st, begin(st.env, buffers=True) as txn:
        key, raw = next(iter(txn.cursor(db=st._index)))
        h = decode_index(raw, bytes(key).decode())
    assert "config" not in h and {"centers", "values", "n_sources"} <= set(h)  # the old layout, as written
    code, out, err = cli("verify", "--store", store, "--resolve", "4", "--json")
    assert code == 0 and json.loads(out)["problems"] == [] and json.loads(out)["resolved"] == 4, err
    d = load_arrays(old)
    assert "problem" not in d
    with Store(store, readonly=True) as st:
        assert st.problem.name == "diffusion" and st.count() == 12
        cfg, y, _ = st.get(list(d["ids"]))
        np.testing.assert_array_equal(cfg.centers, d["centers"])
        np.testing.assert_array_equal(cfg.counts, d["counts"])
        np.testing.assert_array_equal(y, d["y"])
        assert st.index().set_index("id").loc[list(d["ids"]), "stratum"].tolist() == d["counts"].tolist()
        physics = st.physics
    assert import_arrays(store, old, split=None) == 0  # every sample is there already
    export_store(store, tmp_path / "again.npz")
    again = load_arrays(tmp_path / "again.npz")
    for k in ("centers", "values", "counts", "x", "y", "ids", "split", "sampler", "round"):
        np.testing.assert_array_equal(again[k], d[k])
    more = tiny_configs(3, seed=99)
    with Store(store) as st:
        assert st.add(more, solve(physics, more, "fast", dtype="float32"), split="val") == 3
        assert st.count() == 15 and len(st.configs()) == 15 and st.verify() == []
