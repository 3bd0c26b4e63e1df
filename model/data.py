"""Datasets the trainer reads: items are (x, y, regions, stratum), whatever the problem and the storage behind them.

x float32 (C_in, H, W) the problem's `encode`, y float32 (C_out, H, W) the solved target, regions bool (R, H, W)
the problem's metric regions (named by the dataset's `region_names`; computed once, with the data), stratum
int64 scalar. Files and stores are read by the store's `load_data` (curate/store/dataset.py).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from diffcurate.common.errors import InputError
from diffcurate.common.splits import check_split
from diffcurate.solvers.plugins import as_task


class ArrayDataset(Dataset):
    """In-memory arrays: x (n, C_in, H, W) float32, y (n, C_out, H, W) float32, regions (n, R, H, W) bool,
    strata (n,) int64; `region_names` (R,) names the regions."""

    def __init__(self, x, y, regions, strata, region_names) -> None:
        self.x = torch.as_tensor(np.asarray(x, np.float32))
        self.y = torch.as_tensor(np.asarray(y, np.float32))
        self.regions = torch.as_tensor(np.asarray(regions, bool))
        self.strata = torch.as_tensor(np.asarray(strata, np.int64))
        self.region_names = tuple(region_names)
        n = len(self.strata)
        shapes = (self.x.shape, self.y.shape, self.regions.shape)
        if not (
            all(len(s) == 4 and s[0] == n and s[2:] == self.x.shape[2:] for s in shapes)
            and self.regions.shape[1] == len(self.region_names)
        ):
            raise InputError(
                f"dataset arrays disagree: x {tuple(self.x.shape)}, y {tuple(self.y.shape)}, regions "
                f"{tuple(self.regions.shape)} ({len(self.region_names)} named), strata ({n},); expected (n, C, H, W)"
            )

    def __len__(self) -> int:
        return int(self.strata.shape[0])

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], self.regions[i], self.strata[i]

    def subset(self, idx) -> ArrayDataset:
        idx = torch.as_tensor(np.asarray(idx, np.int64))
        return ArrayDataset(self.x[idx], self.y[idx], self.regions[idx], self.strata[idx], self.region_names)


class Batches(Dataset):
    """The batches of a dataset that reads whole batches (`read_batch(rows) -> (y (B, C_out, H, W) float32,
    configurations)`, as a store's does) as items: a DataLoader with `batch_size=None` and a batch sampler hands
    each worker one batch at a time, and x is encoded where it is used (`batch_to_device`), so a worker ships y
    and the configurations' arrays, not x and y item by item."""

    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, rows) -> tuple[torch.Tensor, dict]:
        y, cfg = self.data.read_batch(rows)
        arrays = self.data.task.to_arrays(cfg)
        return y, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def batch_to_device(task, batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) on `device` from a `Batches` item: y moved, x encoded from the configurations."""
    y, arrays = batch
    configs = task.from_arrays({k: v.numpy() for k, v in arrays.items()})
    x = torch.from_numpy(task.encode(configs))  # (B, C_in, H, W) float32
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def reads_batches(data: Dataset) -> bool:
    return callable(getattr(data, "read_batch", None)) and getattr(data, "task", None) is not None


def as_arrays(data: Dataset) -> ArrayDataset:
    """The dataset read once into memory (an `ArrayDataset` as it is): what can travel to other processes, which
    may not open the store the data came from."""
    if isinstance(data, ArrayDataset):
        return data
    items = [data[i] for i in range(len(data))]  # x, y, regions (C, H, W) each, stratum
    x, y, regions = (torch.stack([it[k] for it in items]) for k in range(3))
    strata = torch.stack([torch.as_tensor(it[3]) for it in items])
    return ArrayDataset(x, y, regions, strata, data.region_names)


def dataset_from_configs(task, configs, y: np.ndarray, regions: bool = True) -> ArrayDataset:
    """x encoded and the regions taken from the configurations; y (n, H, W) or (n, C_out, H, W) the solved
    targets. `task`: a `solvers.interface.Task` (or a diffusion Physics). `regions=False`: none, for a training
    set (only evaluation pools by region; its items carry (0, H, W) masks)."""
    task = as_task(task)
    y = np.asarray(y, np.float32)
    y = y[:, None] if y.ndim == 3 else y  # (n, C_out, H, W)
    named = task.regions(configs, y) if regions else {}  # name -> (n, H, W) bool
    masks = np.zeros((len(y), len(named), *y.shape[2:]), bool)  # (n, R, H, W)
    for i, m in enumerate(named.values()):
        masks[:, i] = m
    return ArrayDataset(task.encode(configs), y, masks, task.strata(configs), tuple(named))


def split_indices(n: int, split: str, seed: int = 0, train_fraction: float = 0.9) -> np.ndarray:
    """Deterministic train/val split of n samples by seed (val gets at least one sample when n >= 2)."""
    if check_split(split) == "test":
        raise InputError("data without split marks has no test rows: choose train, val or all")
    if not 0 < train_fraction <= 1:
        raise InputError(f"train fraction must lie in (0, 1], got {train_fraction}")
    if split == "all":
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    n_train = min(n - 1, round(train_fraction * n)) if n >= 2 and train_fraction < 1 else n
    return np.sort(perm[:n_train] if split == "train" else perm[n_train:])


def default_num_workers(lattice: int, device: torch.device) -> int:
    """DataLoader workers for training: 0 (load in the trainer's process) unless a GPU trains at L >= 256.

    On a CPU, 0 workers load an epoch at least as fast as 2 at both presets and the trainer consumes far less than
    one process loads, so workers would only take its cores; a GPU trainer at L = 512 would consume more than one
    process loads: there, up to 4 workers, one core left to the trainer (docs/benchmarks.md, "Store")."""
    if device.type == "cpu" or lattice < 256:
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def synthetic_configs(task, n: int, strata: tuple[int, int], seed: int = 0):
    """n configurations of the problem's first family (for diffusion, the paper's uniform one), indices 0..n-1."""
    task = as_task(task)
    return task.problem.sample(task.params, task.problem.families()[0], seed, range(n), strata)[0]


def synthetic_dataset(task, n: int, strata: tuple[int, int], seed: int = 0) -> ArrayDataset:
    """n configurations of the problem's first family (`synthetic_configs`), solved by the problem."""
    task = as_task(task)
    configs = synthetic_configs(task, n, strata, seed)
    return dataset_from_configs(task, configs, task.problem.solve(task.params, configs))
