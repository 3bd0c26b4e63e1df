"""Torch Datasets over a store or an exported file, all yielding the trainer's item (x, y, regions, stratum).

Item contract (shared with model/'s ArrayDataset): x float32 (C_in, H, W) = the problem's ``encode`` of the
configuration, y float32 (C_out, H, W), regions bool (R, H, W) = the problem's ``regions`` (named by the
dataset's ``region_names``), stratum int64 scalar.

DataLoader workers: see ``model.data.default_num_workers`` (the trainer's default) and bench/store.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from diffcurate.common.errors import InputError
from diffcurate.common.splits import check_split
from diffcurate.curate.store.arrays import FORMATS, load_arrays, validated_samples
from diffcurate.curate.store.env import acquire_env, begin, is_store, open_env, release_env
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.curate.store.records import configs_from_headers, decode_record
from diffcurate.model.data import dataset_from_configs
from diffcurate.solvers.interface import Task
from diffcurate.solvers.plugins import as_task


def make_item(task: Task, cfg, y: np.ndarray) -> tuple[torch.Tensor, ...]:
    """(x, y, regions, stratum) for one sample: cfg holds one configuration, y is (H, W)."""
    d = dataset_from_configs(task, cfg, np.asarray(y, np.float32)[None])
    return d[0]


class StoreDataset(Dataset):
    """Samples of one split of a store (or the given ids). The LMDB environment is opened lazily, read-only
    and without locks, once per process: safe with DataLoader workers whatever the start method."""

    def __init__(self, path: str | os.PathLike, split: str = "train", ids: Sequence[str] | None = None):
        check_split(split)
        self.path = Path(path)
        with Store(self.path, readonly=True) as st:  # closed again before any fork
            self.physics = st.physics
            self.task = st.task
            self.region_names = region_names(self.task)
            self.ids = list(st.ids(split)) if ids is None else [str(i) for i in ids]
        self._env = self._db = self._pid = None
        self._shared = False

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None, "_db": None, "_pid": None, "_shared": False}

    def _open(self) -> None:
        if get_worker_info() is not None:  # a DataLoader worker: a private read-only env, no lock table
            self._env, self._shared = open_env(self.path, readonly=True, lock=False), False
        else:  # the main process shares the env with any Store open on the path (LMDB: one per process), else
            # opens a read-only one (readahead)
            self._env, self._shared = acquire_env(self.path, write=False), True
        self._db = self._env.open_db(b"samples", create=False)
        self._pid = os.getpid()

    def close(self) -> None:
        if self._env is not None and self._pid == os.getpid():  # an inherited env was closed at the fork
            release_env(self._env) if self._shared else self._env.close()
        self._env = self._db = self._pid = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getitem__(self, i: int):
        if self._pid != os.getpid():  # first use in this process (main or a forked worker)
            self._open()
        key = self.ids[i]
        with begin(self._env, buffers=True) as txn:
            buf = txn.get(key.encode(), db=self._db)
            if buf is None:
                raise InputError(f"no sample {key!r} in {self.path}")
            h, y = decode_record(buf, key)
        return make_item(self.task, configs_from_headers(self.task.problem, self.physics, [h]), y)

    def read_batch(self, rows: Sequence[int]):
        """y (B, 1, H, W) float32 and the configurations of rows, read in one transaction: what a loader ships
        when x is encoded where it is used (`model.data.batch_to_device`); model.train's batch protocol."""
        if self._pid != os.getpid():
            self._open()
        y = torch.empty((len(rows), 1, *self.task.grid), dtype=torch.float32)  # (B, 1, H, W)
        out = y.numpy()  # the same memory: each record is decoded straight into the batch
        headers = []
        with begin(self._env, buffers=True) as txn:
            for b, i in enumerate(rows):
                key = self.ids[int(i)]
                buf = txn.get(key.encode(), db=self._db)
                if buf is None:
                    raise InputError(f"no sample {key!r} in {self.path}")
                h, _ = decode_record(buf, key, out[b, 0])
                headers.append(h)
        return y, configs_from_headers(self.task.problem, self.physics, headers)


class ArraysDataset(Dataset):
    """Samples of an npz/HDF5 file in the config-array layout (docs/formats.md) with `y` (x is taken from the file or painted)."""

    def __init__(self, path: str | os.PathLike, ids: Sequence[str] | None = None, split: str = "all"):
        d = load_arrays(path)
        self.physics, self.configs, y = validated_samples(d, str(path))
        self.task = as_task(self.physics)
        self.region_names = region_names(self.task)
        self.y = np.asarray(y, np.float32)  # (n, H, W)
        self.x = np.asarray(d["x"], np.float32) if "x" in d else None  # (n, H, W) or (n, C_in, H, W)
        self.rows = np.arange(len(self.configs))
        check_split(split)
        if split != "all" and "split" in d:  # an exported file carries each row's split: honour it
            self.rows = np.nonzero(np.asarray(d["split"]).astype(str) == split)[0]
        if ids is not None:
            if "ids" not in d:
                raise InputError(f"{path}: no `ids` array to select from")
            where = {str(k): r for r, k in enumerate(d["ids"].tolist())}
            missing = [i for i in ids if str(i) not in where]
            if missing:
                raise InputError(f"{path}: unknown ids {missing[:3]}")
            self.rows = np.array([where[str(i)] for i in ids], np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r = int(self.rows[i])
        cfg = self.configs[r : r + 1]
        x, y, regions, stratum = make_item(self.task, cfg, self.y[r])
        if self.x is not None:
            x = torch.from_numpy(self.x[r].copy()).reshape(x.shape)
        return x, y, regions, stratum


def open_dataset(path: str | os.PathLike, split: str = "train", ids: Sequence[str] | None = None) -> Dataset:
    """A Dataset of (x, y, regions, stratum) over a store directory or an .npz/.h5 file: one split of the store, or
    of the file's rows where it marks splits (an export); an unmarked file is one set (all rows).

    >>> from diffcurate.curate.store.dataset import open_dataset
    >>> ds = open_dataset("runs/x/store", split="train")   # or "data/all.npz"
    """
    p = Path(path)
    if p.is_dir() or is_store(p):
        return StoreDataset(p, split=split, ids=ids)
    if p.suffix.lower() in FORMATS:
        return ArraysDataset(p, ids=ids, split=split)
    raise InputError(f"{p}: neither a store directory nor an .npz/.h5 file")


IN_MEMORY_BYTES = 2 << 30  # a split smaller than this is read once into RAM


def region_names(task: Task) -> tuple[str, ...]:
    """The names of the problem's metric regions, from one configuration of its first family."""
    p = task.problem
    cfg = p.sample(task.params, p.families()[0], 0, [0])[0]
    return tuple(p.regions(task.params, cfg, np.zeros((1, p.channels[1], *task.grid), np.float32)))


def _item_bytes(task: Task) -> int:
    """Bytes of one in-memory sample: x and y float32, one bool per region and pixel."""
    c_in, c_out = task.problem.channels
    h, w = task.grid
    return h * w * (4 * (c_in + c_out) + len(region_names(task)))


def _load_store(path: Path, split: str, seed: int, train_fraction: float, regions: bool) -> tuple[Dataset, Task]:
    """`load_data` of a store: its own splits ("all" = every split); `seed` and
    `train_fraction` are unused because a store's splits are fixed when samples are added."""
    with Store(path, readonly=True) as st:
        task = st.task
        ids = st.ids(split)
        if len(ids) * _item_bytes(task) > IN_MEMORY_BYTES:
            return StoreDataset(path, split, ids), task
        cfg, y, _ = st.get(ids)
        return dataset_from_configs(task, cfg, y, regions), task


def file_rows(d: dict, split: str, seed: int, train_fraction: float, where: str) -> np.ndarray:
    """Rows of a loaded file for `split`. A file with a `split` array (an export) is read by it: train and val
    are its train and val rows (val, when it has none, a seeded share of its train rows) and rows marked test
    never reach training; test (or all) takes exactly those rows. A file without one is split by seed."""
    from diffcurate.model.data import split_indices

    n = len(d["y"])  # a file with targets (load_data reads no other)
    if "split" not in d:  # unmarked (e.g. `curate solve` output): test means every row
        return np.arange(n) if split == "test" else split_indices(n, split, seed, train_fraction)
    marks = np.asarray(d["split"]).astype(str)
    if marks.shape != (n,):
        raise InputError(f"{where}: split must have shape ({n},), got {marks.shape}")
    if split == "all":
        return np.arange(n)
    if split == "test":
        rows = np.nonzero(marks == "test")[0]
    else:
        train, val = np.nonzero(marks == "train")[0], np.nonzero(marks == "val")[0]
        if len(val):
            rows = train if split == "train" else val
        else:
            rows = train[split_indices(len(train), split, seed, train_fraction)]
    if not len(rows):
        raise InputError(f"{where}: no rows for split {split!r} (the file's splits: {sorted(set(marks.tolist()))})")
    return rows


def _load_file(path: Path, split: str, seed: int, train_fraction: float, regions: bool) -> tuple[Dataset, Task]:
    """`load_data` of npz and HDF5 files: validated row by row (`validated_samples`), split
    by the file's own `split` array where it has one (`file_rows`), else by seed."""
    d = load_arrays(path)
    physics, cfg, y = validated_samples(d, str(path))
    task = as_task(physics)
    rows = file_rows(d, split, seed, train_fraction, str(path))
    return dataset_from_configs(task, cfg[rows], y[rows], regions), task


def load_data(
    path, split: str = "all", seed: int = 0, train_fraction: float = 0.9, regions: bool = True
) -> tuple[Dataset, Task]:
    """(Dataset of (x, y, regions, stratum), its Task) for one split of a store or an npz/HDF5 file: the one loader of
    `curate train` and `curate evaluate`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data not found: {path}")
    check_split(split)
    if path.is_dir():
        return _load_store(path, split, seed, train_fraction, regions)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{path}: unsupported data format (a store directory, .npz, .h5 or .hdf5)")
    return _load_file(path, split, seed, train_fraction, regions)


def load_file_dataset(path: str | os.PathLike, split: str = "all") -> tuple[ArraysDataset, Task]:
    """(Dataset, its Task) of an npz/HDF5 file with targets, validated row by row (`validated_samples`)."""
    ds = ArraysDataset(path, split=split)
    return ds, ds.task
