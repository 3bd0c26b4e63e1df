"""Datasets the trainer reads: items are (x, y, mask, count), whatever the storage behind them.

x float32 (1, L, L) input image, y float32 (1, L, L) target, mask bool (1, L, L) disc pixels (needed because
zero-valued discs are invisible in x), count int64 scalar = number of sources. Files and stores are read by the
store's `load_data` (curate/store/dataset.py).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from diffcurate.common.errors import InputError
from diffcurate.common.splits import check_split
from diffcurate.solvers.problem import Configs, Physics, disc_mask, paint


class ArrayDataset(Dataset):
    """In-memory arrays: x, y (n, L, L) float, mask (n, L, L) bool, counts (n,) int."""

    def __init__(self, x, y, mask, counts) -> None:
        self.x = torch.as_tensor(np.asarray(x, np.float32))
        self.y = torch.as_tensor(np.asarray(y, np.float32))
        self.mask = torch.as_tensor(np.asarray(mask, bool))
        self.counts = torch.as_tensor(np.asarray(counts, np.int64))
        n = len(self.counts)
        if not (self.x.shape == self.y.shape == self.mask.shape and self.x.ndim == 3 and self.x.shape[0] == n):
            raise InputError(
                f"dataset arrays disagree: x {tuple(self.x.shape)}, y {tuple(self.y.shape)},"
                f" mask {tuple(self.mask.shape)}, counts ({n},); expected (n, L, L) x3 and (n,)"
            )

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def __getitem__(self, i: int):
        return self.x[i, None], self.y[i, None], self.mask[i, None], self.counts[i]

    def subset(self, idx) -> ArrayDataset:
        idx = torch.as_tensor(np.asarray(idx, np.int64))
        return ArrayDataset(self.x[idx], self.y[idx], self.mask[idx], self.counts[idx])


class Batches(Dataset):
    """The batches of a dataset that reads whole batches (`read_batch(rows) -> (y (B, 1, L, L) float32,
    Configs)`, as a store's does) as items: a DataLoader with `batch_size=None` and a batch sampler hands each
    worker one batch at a time, and x is painted where it is used (`batch_to_device`), so a worker ships y and
    the configurations, not x, mask and y item by item."""

    def __init__(self, data: Dataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, rows) -> tuple[torch.Tensor, ...]:
        y, cfg = self.data.read_batch(rows)
        return y, torch.from_numpy(cfg.centers), torch.from_numpy(cfg.values), torch.from_numpy(cfg.counts)


def batch_to_device(physics: Physics, batch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) on `device` from a `Batches` item: y moved, x painted there."""
    from diffcurate.solvers.problem import paint_tensor

    y, centers, values, counts = batch
    x = paint_tensor(physics, Configs(centers.numpy(), values.numpy(), counts.numpy()), device)  # (B, 1, L, L)
    return x, y.to(device, non_blocking=True)


def reads_batches(data: Dataset) -> bool:
    return callable(getattr(data, "read_batch", None)) and getattr(data, "physics", None) is not None


def as_arrays(data: Dataset) -> ArrayDataset:
    """The dataset read once into memory (an `ArrayDataset` as it is): what can travel to other processes, which
    may not open the store the data came from."""
    if isinstance(data, ArrayDataset):
        return data
    items = [data[i] for i in range(len(data))]  # (x, y, mask) (1, L, L) each, count
    x, y, mask = (torch.cat([it[k] for it in items]) for k in range(3))
    return ArrayDataset(x, y, mask, torch.stack([torch.as_tensor(it[3]) for it in items]))


def dataset_from_configs(physics: Physics, configs: Configs, y: np.ndarray) -> ArrayDataset:
    """Paint x and the disc mask from the configurations; y (n, L, L) the solved targets."""
    return ArrayDataset(paint(physics, configs), y, disc_mask(physics, configs), configs.counts)


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


def uniform_configs(physics: Physics, n: int, sources: tuple[int, int], seed: int = 0) -> Configs:
    """n configurations of the paper's uniform family (the sampler registry's `uniform`, indices 0..n-1)."""
    from diffcurate.solvers.sampling import sample_configs

    return sample_configs("uniform", physics, seed, range(n), sources)[0]


def synthetic_dataset(physics: Physics, n: int, sources: tuple[int, int], seed: int = 0) -> ArrayDataset:
    """n uniform configurations solved with the fast solver (float32 targets)."""
    from diffcurate.solvers import solve

    configs = uniform_configs(physics, n, sources, seed)
    return dataset_from_configs(physics, configs, solve(physics, configs, "fast", dtype="float32", batch_size=64))
