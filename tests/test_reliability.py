"""Nothing lost, nothing leaked: every user file through one validated path, concurrent writers, damaged stores,
a full disk. Each bad input is exit 2, exactly one stderr line, no traceback and no new files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY, flip_inside_a_weight, read_only, tiny_configs

from diffcurate.curate.store.arrays import save_arrays
from diffcurate.curate.store.dataset import open_dataset
from diffcurate.curate.store.export import export_store
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.curate.store.verify import verify_store
from diffcurate.model.checkpoint import save_checkpoint
from diffcurate.model.data import dataset_from_configs
from diffcurate.model.nets import build_model, default_model_config
from diffcurate.model.train import TrainConfig, train
from diffcurate.solvers.problem import PRESETS, Configs
from diffcurate.solvers.registry import solve

CURATE = str(Path(sys.executable).with_name("curate"))


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    d = tmp_path_factory.mktemp("solved")
    cfg = tiny_configs(16, seed=5)
    y = solve(TINY, cfg, "fast", dtype="float32")
    path = d / "good.npz"
    save_arrays(path, TINY, cfg, y=y)
    return path, cfg, y


@pytest.fixture(scope="module")
def ckpt(solved, tmp_path_factory):
    _, cfg, y = solved
    d = tmp_path_factory.mktemp("ckpt")
    res = train(
        default_model_config("tiny"),
        TrainConfig(epochs=1, batch_size=8),
        dataset_from_configs(TINY, cfg, y),
        None,
        d,
        physics=TINY,
        device="cpu",
    )
    return res.checkpoint


def _arrays(cfg: Configs, y: np.ndarray, **change) -> dict:
    d = {
        "centers": cfg.centers,
        "values": cfg.values,
        "counts": cfg.counts,
        "y": y,
        "lattice": np.array(32),
        "radius": np.array(2),
        "diffusion": np.array(1.0),
        "decay": np.array(1 / 16),
        "source_model": np.array("fixed"),
    }
    d.update(change)
    return {k: v for k, v in d.items() if v is not None}


def make_bad(kind: str, where: Path, cfg: Configs, y: np.ndarray) -> Path:
    """One damaged or malformed file of the kind named."""
    c = cfg.centers.copy()
    path = where / f"{kind}.npz"
    if kind == "truncated":
        good = where / "g.npz"
        np.savez(good, **_arrays(cfg, y))
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        good.unlink()
    elif kind == "garbage":
        path.write_bytes(os.urandom(3000))
    elif kind == "object-array":
        np.savez(path, **_arrays(cfg, y, values=np.array([[0.5]] * len(cfg), dtype=object)))
    elif kind == "nan-y":
        y2 = y.copy()
        y2[12, 3, 3] = np.nan
        np.savez(path, **_arrays(cfg, y2))
    elif kind == "inf-y":
        y2 = y.copy()
        y2[2, 0, 0] = np.inf
        np.savez(path, **_arrays(cfg, y2))
    elif kind == "int-y":
        np.savez(path, **_arrays(cfg, (y * 100).astype(np.int32)))
    elif kind == "counts-over-k":
        n = cfg.counts.copy()
        n[0] = cfg.centers.shape[1] + 3
        np.savez(path, **_arrays(cfg, y, counts=n))
    elif kind in ("zero-counts", "negative-counts"):
        n = cfg.counts.copy()
        n[1] = 0 if kind == "zero-counts" else -3
        np.savez(path, **_arrays(cfg, y, counts=n))
    elif kind == "negative-centres":
        c[0, 0] = (-4, 10)
        np.savez(path, **_arrays(cfg, y, centers=c))
    elif kind == "edge-disc":  # a disc that would paint into the next sample's input
        c[0, 0] = (31, 31)
        np.savez(path, **_arrays(cfg, y, centers=c))
    elif kind == "centres-strings":
        np.savez(path, **_arrays(cfg, y, centers=c.astype(str)))
    elif kind == "values-strings":  # numeric strings that numpy would convert without a word
        np.savez(path, **_arrays(cfg, y, values=cfg.values.astype(str)))
    elif kind == "float16-y":
        np.savez(path, **_arrays(cfg, y.astype(np.float16)))
    elif kind == "no-samples":
        empty = dict(centers=cfg.centers[:0], values=cfg.values[:0], counts=cfg.counts[:0])
        np.savez(path, **_arrays(cfg, y[:0], **empty))
    elif kind == "text-file":
        path.write_text("lattice = 32\n" * 50)
    elif kind == "symlink-to-text":
        path.symlink_to("/etc/passwd")
    elif kind == "directory":
        path.mkdir()
    elif kind == "physics-string":
        np.savez(path, **_arrays(cfg, y, lattice=np.array("32")))
    elif kind == "physics-vector":
        np.savez(path, **_arrays(cfg, y, decay=np.array([0.1, 0.2])))
    elif kind.startswith("h5"):
        path = where / f"{kind}.h5"
        d = _arrays(cfg, y)
        if kind == "h5-truncated":
            with h5py.File(path, "w") as h:
                for k, v in d.items():
                    h[k] = v.astype("S") if v.dtype.kind == "U" else v
            path.write_bytes(path.read_bytes()[:900])
        else:  # h5-compound-counts
            with h5py.File(path, "w") as h:
                for k, v in d.items():
                    if k == "counts":
                        h[k] = np.array([(int(x), 0) for x in v], dtype=[("a", "i8"), ("b", "i8")])
                    else:
                        h[k] = v.astype("S") if v.dtype.kind == "U" else v
    else:
        raise KeyError(kind)
    return path


CONFIG_KINDS = [
    "truncated",
    "garbage",
    "object-array",
    "counts-over-k",
    "zero-counts",
    "negative-counts",
    "negative-centres",
    "edge-disc",
    "centres-strings",
    "values-strings",
    "no-samples",
    "text-file",
    "symlink-to-text",
    "directory",
    "physics-string",
    "physics-vector",
    "h5-truncated",
    "h5-compound-counts",
]
TARGET_KINDS = ["nan-y", "inf-y", "int-y", "float16-y"]
# what the one line says for these kinds, whichever command reads the file
SAYS = {"text-file": "not an npz file", "symlink-to-text": "not an npz file", "directory": "is a directory"}


def _commands(f: Path, out: Path, ckpt: Path) -> dict[str, list]:
    return {
        "train": ["train", out / "run", "--data", f, "--preset", "tiny", "--epochs", "1", "--no-progress"],
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--data", f, "--out", out / "m.json", "--split", "all"],
        "import": ["import", "--store", out / "store", "--input", f],
        "predict": ["predict", "--checkpoint", ckpt, "--input", f, "--out", out / "p.npz"],
        "solve": ["solve", "--input", f, "--out", out / "s.npz", "--preset", "tiny"],
    }


def _one_line_exit_2(cli, args, out: Path) -> str:
    before = sorted(out.rglob("*"))
    code, _, err = cli(*args)
    assert code == 2, (args, code, err)
    assert err.count("\n") == 1 and "Traceback" not in err, (args, err)
    assert sorted(out.rglob("*")) == before, f"{args} left files behind"
    return err


@pytest.mark.parametrize("kind", CONFIG_KINDS + TARGET_KINDS)
def test_every_file_reader_refuses_bad_files(cli, solved, ckpt, tmp_path, kind):
    _, cfg, y = solved
    f = make_bad(kind, tmp_path, cfg, y)
    out = tmp_path / "out"
    out.mkdir()
    for name, args in _commands(f, out, ckpt).items():
        if kind in TARGET_KINDS and name in ("predict", "solve"):
            continue  # they read configurations only
        err = _one_line_exit_2(cli, args, out)
        assert SAYS.get(kind, "") in err, (name, err)


def _bad_checkpoints(ckpt: Path, where: Path) -> dict[str, Path]:
    from diffcurate.model.checkpoint import CHECKSUM, atomic_save

    raw = {k: v for k, v in torch.load(ckpt, weights_only=True).items() if k != CHECKSUM}
    out = {}
    (where / "garbage.pt").write_bytes(os.urandom(500))
    out["garbage"] = where / "garbage.pt"
    atomic_save({**raw, "model_config": {**raw["model_config"], "enc_channels": "wide"}}, where / "types.pt")
    out["model-config-types"] = where / "types.pt"
    atomic_save({**raw, "model_config": {**raw["model_config"], "slope": [1, 2]}}, where / "types2.pt")
    out["model-config-vector"] = where / "types2.pt"
    atomic_save({**raw, "state_dict": {}}, where / "empty.pt")
    out["no-state"] = where / "empty.pt"
    atomic_save({**raw, "format": "diffcurate.model/7"}, where / "future.pt")
    out["future-format"] = where / "future.pt"
    return out


def test_bad_checkpoints_are_one_line(cli, solved, ckpt, tmp_path):
    f, _, _ = solved
    out = tmp_path / "out"
    out.mkdir()
    for kind, bad in _bad_checkpoints(ckpt, tmp_path).items():
        for args in (
            ["evaluate", "--checkpoint", bad, "--data", f, "--out", out / "m.json", "--split", "all"],
            ["predict", "--checkpoint", bad, "--input", f, "--out", out / "p.npz"],
            ["export-model", "--checkpoint", bad, "--out", out / "m.onnx", "--format", "onnx"],
        ):
            _one_line_exit_2(cli, args, out)
        if kind != "future-format" and kind != "garbage":
            _one_line_exit_2(
                cli,
                [
                    "train",
                    out / "r",
                    "--data",
                    f,
                    "--preset",
                    "tiny",
                    "--epochs",
                    "1",
                    "--no-progress",
                    "--init-from",
                    bad,
                ],
                out,
            )


def test_warm_start_refuses_other_physics_and_architecture(cli, solved, tmp_path):
    f, _, _ = solved
    small = save_checkpoint(
        tmp_path / "small.pt",
        build_model(default_model_config("small")),
        default_model_config("small"),
        physics=PRESETS["small"].physics,
    )
    unet = save_checkpoint(
        tmp_path / "unet.pt",
        build_model(default_model_config("tiny", "unet")),
        default_model_config("tiny", "unet"),
        physics=TINY,
    )
    out = tmp_path / "out"
    out.mkdir()
    base = ["train", out / "r", "--data", f, "--preset", "tiny", "--epochs", "1", "--no-progress", "--init-from"]
    assert "physics" in _one_line_exit_2(cli, [*base, small], out)
    assert "differs" in _one_line_exit_2(cli, [*base, unet], out)


def test_import_is_all_or_nothing(cli, solved, tmp_path):
    _, cfg, y = solved
    bad = make_bad("nan-y", tmp_path, cfg, y)  # row 12 of 16
    store = tmp_path / "new"
    _one_line_exit_2(cli, ["import", "--store", store, "--input", bad], tmp_path)
    assert not store.exists()  # no empty store left behind
    good = tmp_path / "ok.npz"
    save_arrays(good, TINY, cfg[:4], y=y[:4])
    assert cli("import", "--store", store, "--input", good)[0] == 0
    _one_line_exit_2(cli, ["import", "--store", store, "--input", bad], tmp_path)
    with Store(store, readonly=True) as st:
        assert st.count() == 4 and len(st.history()) == 1  # the existing store is untouched


def test_exported_splits_are_honoured(ray_cluster, cli, tmp_path):
    """An export of every split, read back by split, never hands test rows to training."""
    from diffcurate.curate.cluster.generate import generate
    from diffcurate.curate.store.dataset import load_data

    store = tmp_path / "s"
    for split, n, seed in (("train", 12, 1), ("val", 4, 2), ("test", 6, 3)):
        generate(store, TINY, n, seed=seed, split=split, sources=(1, 10), show_progress=False)
    export_store(store, tmp_path / "all.npz", split="all")
    assert [len(open_dataset(tmp_path / "all.npz", split=s)) for s in ("train", "val", "test", "all")] == [12, 4, 6, 22]
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        assert len(load_data(tmp_path / "all.npz", split)[0]) == n
    code, out, err = cli("train", tmp_path / "run", "--data", tmp_path / "all.npz", "--epochs", "1", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["train_size"] == 12 and d["val_size"] == 4


def _generate_cmd(store: Path, split: str, seed: int, address: str) -> list[str]:
    return [
        CURATE,
        "generate",
        "--store",
        str(store),
        "--count",
        "300",
        "--seed",
        str(seed),
        "--split",
        split,
        "--preset",
        "tiny",
        "--address",
        address,
    ]


def test_two_writers_at_once_equal_the_sequential_result(ray_cluster, tmp_path):
    """Two `generate` processes on one store at once, on the same split and on two splits, hold what the same
    requests made one after the other hold."""

    def together(store: Path, splits: tuple[str, str]) -> None:
        procs = [
            subprocess.Popen(
                _generate_cmd(store, s, 0, ray_cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for s in splits
        ]
        results = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), results

    same, two = tmp_path / "same", tmp_path / "two"
    together(same, ("train", "train"))
    together(two, ("train", "val"))
    alone = tmp_path / "alone"  # train then val; a second train request would add nothing
    for s in ("train", "val"):
        subprocess.run(_generate_cmd(alone, s, 0, ray_cluster), check=True, capture_output=True, timeout=300)
    with Store(same, readonly=True) as a, Store(two, readonly=True) as t, Store(alone, readonly=True) as b:
        assert len(a.ids("train")) == len(t.ids("train")) == len(t.ids("val")) == len(b.ids("train")) == 300
        assert a.ids("train") == b.ids("train")  # nothing lost
        # one seed for both splits: whichever writer goes first takes the first 300 distinct samples, the other
        # the next 300, so the splits are disjoint and together hold what the sequential runs hold
        assert not set(t.ids("train")) & set(t.ids("val"))
        assert set(t.ids("train")) | set(t.ids("val")) == set(b.ids("train")) | set(b.ids("val"))
    # a finished request whose samples went missing is filled, not answered from the history
    with Store(alone) as st, st.env.begin(write=True) as txn:
        key = st.ids("train")[0].encode()
        txn.delete(key, db=st._samples)
        txn.delete(key, db=st._index)
    subprocess.run(_generate_cmd(alone, "train", 0, ray_cluster), check=True, capture_output=True, timeout=300)
    with Store(alone, readonly=True) as st:
        assert st.count("train") == 300


def test_writer_lock_names_the_holder(tmp_path):
    from diffcurate.common.errors import InputError
    from diffcurate.curate.store.lock import lock_writer, unlock_writer

    with Store.create(tmp_path / "s", TINY):
        holder = (
            "import sys; from diffcurate.curate.store.lock import lock_writer; lock_writer(sys.argv[1], wait=False)"
        )
        r = subprocess.run([sys.executable, "-c", holder, str(tmp_path / "s")], capture_output=True, text=True)
        assert r.returncode != 0 and f"pid {os.getpid()}" in r.stderr
    lock_writer(tmp_path / "s", wait=False)  # released on close: free again
    unlock_writer(tmp_path / "s")
    with pytest.raises(InputError):  # the lock file is not store content
        Store(tmp_path / "elsewhere")


@pytest.fixture
def small_store(tmp_path):
    cfg = tiny_configs(40, seed=9)
    with Store.create(tmp_path / "s", TINY) as st:
        st.add(cfg, solve(TINY, cfg, "fast", dtype="float32"), split="train")
    return tmp_path / "s"


def _flip(path: Path, offset: int, n: int = 8) -> None:
    with open(path / "data.mdb", "r+b") as f:
        f.seek(offset)
        b = bytearray(f.read(n))
        f.seek(offset)
        f.write(bytes(x ^ 0xFF for x in b))


def _record_offset(store: Path, split: str | None = None, i: int = 7) -> int:
    """Byte offset of some target values inside data.mdb (the float32 field of record i of `split`, or of all)."""
    with Store(store, readonly=True) as st:
        _, y, _ = st.get([st.ids(split)[i]])
    raw = (store / "data.mdb").read_bytes()
    return raw.index(y[0, 10:12].tobytes())


def _damage_index(store: Path) -> None:
    """Rot one index entry's bytes (its checksum no longer matches)."""
    with Store(store) as st:
        key = st.ids()[5].encode()
        with st.env.begin(write=True) as txn:
            v = bytearray(txn.get(key, db=st._index))
            v[10] ^= 0xFF
            txn.put(key, bytes(v), db=st._index)


def _verify_cli(store: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([CURATE, "verify", "--store", str(store), *extra], capture_output=True, text=True)


def test_damaged_record_is_reported_with_and_without_resolve(small_store):
    _flip(small_store, _record_offset(small_store))
    for extra in ([], ["--resolve", "5"], ["--resolve", "5", "--json"]):
        r = _verify_cli(small_store, *extra)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        if "--json" in extra:
            d = json.loads(r.stdout)
            assert d["problems"] and d["resolved"] == 5
        else:
            assert "checksum" in r.stdout + r.stderr
    # info and export skip it with a warning
    r = subprocess.run(
        [CURATE, "export", "--store", str(small_store), "--out", str(small_store.parent / "e.npz")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "skipped 1 damaged" in r.stderr, r.stderr
    assert json.loads((small_store.parent / "e.npz.card.json").read_text())["n_samples"] == 39


def test_damaged_index_entry_does_not_block_the_store(small_store):
    _damage_index(small_store)
    r = _verify_cli(small_store, "--resolve", "3")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "index" in r.stdout + r.stderr, (r.stdout, r.stderr)
    r = subprocess.run([CURATE, "info", "--store", str(small_store), "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and "damaged index" in r.stderr and json.loads(r.stdout)["count"] == 39, r.stderr


def test_truncated_map_and_damaged_pages_are_found_not_crashed(small_store, tmp_path):
    import shutil

    size = (small_store / "data.mdb").stat().st_size
    cut = tmp_path / "cut"
    shutil.copytree(small_store, cut)
    os.truncate(cut / "data.mdb", size // 2)
    for cmd in (["verify", "--store", str(cut)], ["info", "--store", str(cut)]):
        r = subprocess.run([CURATE, *cmd], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "truncated" in r.stderr, r  # not SIGBUS (135)
    meta = tmp_path / "meta"
    shutil.copytree(small_store, meta)
    _flip(meta, 16, 4)  # the first meta page's magic
    _flip(meta, 4096 + 16, 4)  # and the second's
    r = _verify_cli(meta)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r
    pages = tmp_path / "pages"
    shutil.copytree(small_store, pages)
    with open(pages / "data.mdb", "r+b") as f:  # B-tree pages after the two meta pages
        f.seek(2 * 4096)
        f.write(os.urandom(3 * 4096))
    r = _verify_cli(pages)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r


def test_verify_resolve_at_the_paper_preset_is_clean(tmp_path):
    """float32 targets solved in one batch and re-solved in float64 in another differ by the float32 solve's error
    (~1e-6 at L = 512), which is not damage."""
    ph = PRESETS["paper"].physics
    from diffcurate.solvers.sampling import sample_configs

    cfg = sample_configs("mixed", ph, 4, range(6), (1, 20))[0]
    with Store.create(tmp_path / "p", ph) as st:
        st.add(cfg, solve(ph, cfg, "fast", dtype="float32", batch_size=6), split="train")
    r = verify_store(tmp_path / "p", resolve=6)
    assert r["problems"] == [] and r["resolved"] == 6 and 0 < r["max_error"] < 5e-6


def test_full_disk_is_one_line_and_keeps_what_was_committed(ray_cluster, tmp_path):
    """A file size limit stands in for a full disk: the commit fails, the command says so in one line (exit 1),
    and what was committed before is intact and resumes."""
    store = tmp_path / "s"
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20)); "
        "from diffcurate.curate.cli.app import main; sys.argv = ['curate'] + sys.argv[1:]; main()"
    )
    args = [
        "generate",
        "--store",
        str(store),
        "--count",
        "400",
        "--seed",
        "0",
        "--preset",
        "tiny",
        "--address",
        ray_cluster,
    ]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    # our line only: not Ray's own C++ log lines ("[2026-... E ...] task_manager.cc:...") about tasks cut short
    err = [line for line in r.stderr.splitlines() if line.strip() and "━" not in line]
    assert r.returncode == 1 and len(err) == 1 and "full" in err[0] and "kept" in err[0], r.stderr
    assert verify_store(store)["problems"] == []
    r = subprocess.run([CURATE, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with Store(store, readonly=True) as st:
        assert st.count("train") == 400


def test_exports_follow_the_umask_and_load_in_the_data_tools(small_store, tmp_path, monkeypatch):
    """npz and Parquet exports are 0644 under umask 022 (not mkstemp's 0600); the Parquet file loads one row per
    sample in Hugging Face datasets and pandas, x and y as 2-D arrays, with the card's licence and citation."""
    import datasets
    import pandas as pd

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    old = os.umask(0o022)
    try:
        card = export_store(small_store, tmp_path / "a.parquet")
        export_store(small_store, tmp_path / "a.npz")
    finally:
        os.umask(old)
    for f in ("a.parquet", "a.npz", "a.parquet.card.json", "a.npz.card.md"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o644, f
    assert card["license"] == "MIT" and "2302.03786" in card["citation"] and "x" in card["fields"]
    assert "How the splits were made" in (tmp_path / "a.parquet.card.md").read_text()
    df = pd.read_parquet(tmp_path / "a.parquet")
    assert len(df) == 40 and np.stack(df["y"][0]).shape == (32, 32)
    with Store(small_store, readonly=True) as st:
        _, y, _ = st.get([df["id"][3]])
    np.testing.assert_array_equal(np.stack(df["y"][3]), y[0])
    ds = datasets.Dataset.from_parquet(str(tmp_path / "a.parquet"))
    assert ds.num_rows == 40 and np.asarray(ds[0]["x"]).shape == (32, 32)
    assert {"centers", "values", "counts", "stratum", "split", "sampler", "round", "score"} <= set(ds.column_names)


def test_a_flipped_byte_in_a_checkpoint_is_refused_by_every_command(cli, solved, ckpt, tmp_path):
    """Checkpoints carry a checksum of their tensors: a damaged weight is one line naming the file, exit 1, for
    evaluate, predict, export-model and a warm start; the intact file still works."""
    f, _, _ = solved
    bad = tmp_path / "bad.pt"
    flip_inside_a_weight(ckpt, bad)
    import torch

    assert torch.load(bad, weights_only=True)["state_dict"]  # torch itself reads it without a word
    out = tmp_path / "out"
    out.mkdir()
    for args in (
        ["evaluate", "--checkpoint", bad, "--data", f, "--out", out / "m.json", "--split", "all"],
        ["predict", "--checkpoint", bad, "--input", f, "--out", out / "p.npz"],
        ["export-model", "--checkpoint", bad, "--out", out / "m.onnx", "--format", "onnx"],
        ["train", out / "r", "--data", f, "--preset", "tiny", "--epochs", "1", "--no-progress", "--init-from", bad],
    ):
        code, _, err = cli(*args)
        assert code == 1 and err.count("\n") == 1 and "checksum mismatch" in err and str(bad) in err, (args, err)
        assert "Traceback" not in err
    code, _, err = cli("evaluate", "--checkpoint", ckpt, "--data", f, "--out", out / "m.json", "--split", "all")
    assert code == 0, err


def _refused(cli, args, where: Path, code: int, words: str) -> str:
    """`curate ARGS` ends with `code`, exactly one stderr line holding `words`, no traceback, no new files."""
    before = sorted(where.rglob("*"))
    got, _, err = cli(*args)
    assert got == code and err.count("\n") == 1 and words in err and "Traceback" not in err, (args, got, err)
    assert sorted(where.rglob("*")) == before, f"{args} left files behind"
    return err


def test_read_only_stores_and_outputs_are_one_line_exit_2(small_store, cli, tmp_path):
    """generate into a store this process may not write, export into such a directory: one line, exit 2, before
    Ray starts or the store is read, and nothing written."""
    out = tmp_path / "out"
    out.mkdir()
    with read_only(small_store):
        err = _refused(cli, ["generate", "--store", small_store, "--count", "50", "--preset", "tiny"], tmp_path, 2, "")
        assert "read-only" in err and str(small_store) in err
    with read_only(out):
        err = _refused(cli, ["export", "--store", small_store, "--out", out / "e.npz"], tmp_path, 2, "read-only")
        assert str(out) in err


def test_export_to_a_directory_is_one_line(small_store, cli, tmp_path):
    """--out naming a directory: one line saying so, with and without --force."""
    d = tmp_path / "dir.npz"
    d.mkdir()
    for extra in ([], ["--force"]):
        _refused(cli, ["export", "--store", small_store, "--out", d, *extra], tmp_path, 2, "is a directory")


def test_export_leaves_nothing_behind(small_store, tmp_path, monkeypatch):
    """The next export removes the temp files a killed one left; the cards are written before the data file's
    rename, so cards without their file are what a killed export left, and the rerun replaces them without
    --force."""
    import diffcurate.curate.store.export as export

    out = tmp_path / "e.npz"
    stale = [tmp_path / ".e.npz.k1l2.tmp", tmp_path / ".e.npz.card.json.x9.tmp"]
    for f in stale:
        f.write_bytes(b"left by a kill -9")

    def killed(path, *args, **kwargs):  # the process dies between the cards and the data file's rename
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_arrays", killed)
    with pytest.raises(KeyboardInterrupt):
        export_store(small_store, out)
    assert not out.exists() and all(p.exists() for p in export.card_paths(out))
    assert not any(p.exists() for p in stale), "stale temp files are removed by the next export"
    monkeypatch.undo()
    card = export_store(small_store, out)  # no --force needed: the orphan cards are replaced
    assert card["n_samples"] == 40 and out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(Exception, match="exists; pass --force"):
        export_store(small_store, out)
