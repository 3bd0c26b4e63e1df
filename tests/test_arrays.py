"""npz/HDF5 read and write of the config-array layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from diffcurate.common.errors import InputError
from diffcurate.curate.store.arrays import load_arrays, load_configs, save_arrays, task_from_arrays
from diffcurate.solvers.problem import Configs, Physics, paint

TINY = Physics(32, 2, 1.0, 1 / 16, "production")


def configs(n: int = 6, seed: int = 0) -> Configs:
    rng = np.random.default_rng(seed)
    ks = rng.integers(1, 5, n)
    return Configs.from_lists([rng.integers(2, 30, (k, 2)) for k in ks], [rng.random(k) for k in ks])


@pytest.mark.parametrize("ext", ["npz", "h5", "hdf5"])
def test_round_trip(tmp_path, ext):
    c = configs()
    x = paint(TINY, c)  # (6, 32, 32) float32
    y = np.random.default_rng(1).random((6, 32, 32))  # float64 stays float64
    ids = [c.sample_id(s, TINY) for s in range(6)]
    p = save_arrays(tmp_path / f"a.{ext}", TINY, c, x=x, y=y, ids=ids, extra={"path": np.array(["model"] * 6)})
    d = load_arrays(p)
    assert task_from_arrays(d).params == TINY and str(d["problem"]) == "diffusion"
    assert d["source_model"].shape == () and str(d["source_model"]) == "production"
    assert d["ids"].dtype.kind == "U" and d["ids"].tolist() == ids and d["path"].tolist() == ["model"] * 6
    assert d["x"].dtype == np.float32 and d["y"].dtype == np.float64
    np.testing.assert_array_equal(d["y"], y)
    lc = load_configs(p)
    for k in ("centers", "values", "counts"):
        np.testing.assert_array_equal(getattr(lc, k), getattr(c, k))
        assert getattr(lc, k).dtype == d[k].dtype
    assert [c.dtype for c in (d["centers"], d["values"], d["counts"])] == [np.int64, np.float64, np.int64]


def test_npz_loads_without_pickle_and_h5_has_attributes(tmp_path):
    c = configs()
    save_arrays(tmp_path / "a.npz", TINY, c, ids=["a"] * 6)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert str(z["source_model"]) == "production" and z["lattice"] == 32
    save_arrays(tmp_path / "a.h5", TINY, c)
    with h5py.File(tmp_path / "a.h5") as h:
        assert h.attrs["lattice"] == 32 and h.attrs["source_model"] == "production"
        assert h["centers"].shape == (6, c.centers.shape[1], 2)


def test_bad_inputs(tmp_path):
    c = configs()
    with pytest.raises(InputError, match="no such file"):
        load_arrays(tmp_path / "missing.npz")
    with pytest.raises(InputError, match="unknown extension"):
        save_arrays(tmp_path / "a.csv", TINY, c)
    with pytest.raises(InputError, match="x must have shape"):
        save_arrays(tmp_path / "a.npz", TINY, c, x=np.zeros((5, 32, 32)))
    with pytest.raises(InputError, match="grid is .32, 32."):
        save_arrays(tmp_path / "a.npz", TINY, c, y=np.zeros((6, 16, 16)))
    with pytest.raises(InputError, match="ids"):
        save_arrays(tmp_path / "a.npz", TINY, c, ids=["a"])
    with pytest.raises(InputError, match="overwrite"):
        save_arrays(tmp_path / "a.npz", TINY, c, extra={"y": np.zeros(6)})
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    np.savez(tmp_path / "partial.npz", centers=c.centers, counts=c.counts)
    with pytest.raises(InputError, match="missing arrays values"):
        load_arrays(tmp_path / "partial.npz")
    np.savez(tmp_path / "shape.npz", centers=c.centers, values=c.values[:, :1], counts=c.counts)
    with pytest.raises(InputError, match="values must have shape"):
        load_arrays(tmp_path / "shape.npz")
    np.savez(tmp_path / "nophys.npz", centers=c.centers, values=c.values, counts=c.counts)
    with pytest.raises(InputError, match="no physics"):
        task_from_arrays(load_arrays(tmp_path / "nophys.npz"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not an HDF5 file"):
        load_arrays(tmp_path / "junk.h5")
    np.savez(tmp_path / "obj.npz", centers=np.array([None], dtype=object))
    with pytest.raises(InputError, match="not an npz file .or it holds pickled objects, which are refused"):
        load_arrays(tmp_path / "obj.npz")


def test_failed_write_leaves_old_file(tmp_path, monkeypatch):
    c = configs()
    p = save_arrays(tmp_path / "a.npz", TINY, c)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        save_arrays(p, TINY, configs(seed=2))
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["a.npz"]
