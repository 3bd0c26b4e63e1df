"""The trainer's streamed data path: how many samples/s reach the training step, item by item against whole
batches with x encoded where it is used, for several loader worker counts, in one run (docs/benchmarks.md, "Data
path").

    .venv/bin/python bench/loader.py                       # paper preset (L = 512), 256 samples, batch 32
    .venv/bin/python bench/loader.py --preset small --samples 2048 --workers 0 1 2 4

`items`: a DataLoader over the store's samples, each worker reading, decoding and encoding one sample at a time
(x, y, regions, stratum, then collated), as a Dataset without `read_batch` is streamed. `batches`:
`model.data.Batches`, each worker reading a whole batch in one LMDB transaction and shipping y and the
configurations' arrays; x is encoded where it is used (`model.data.batch_to_device`: the problem's `encode`, then
moved to --device). Each row is the median of --repeats warm
epochs (the store's pages cached) of iterating the loader to (x, y) on the device, with no training step. The read
floor, measured in the same run, reads every sample's stored bytes in one LMDB transaction without decoding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_store(path: Path, preset: str, n: int):
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.solvers.problem import PRESETS
    from diffcurate.solvers.registry import solve
    from diffcurate.solvers.sampling import sample_configs

    p = PRESETS[preset]
    with Store.create(path, p.physics, preset=preset) as st:
        for start in range(0, n, 64):
            cfg = sample_configs("mixed", p.physics, 0, range(start, min(n, start + 64)), p.sources)[0]
            st.add(cfg, solve(p.physics, cfg, "fast", dtype="float32"), split="train")


def epoch_items(ds, order, batch: int, workers: int, device) -> int:
    loader = DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers)
    seen = 0
    for x, y, _regions, _stratum in loader:
        x, y = x.to(device), y.to(device)  # (B, 1, L, L) float32 each
        seen += len(x)
    return seen


def epoch_batches(ds, order, batch: int, workers: int, device) -> int:
    from diffcurate.model.data import Batches, batch_to_device

    loader = DataLoader(
        Batches(ds), batch_size=None, sampler=BatchSampler(order, batch, False), num_workers=workers, pin_memory=False
    )
    seen = 0
    for b in loader:
        x, y = batch_to_device(ds.task, b, device)  # (B, 1, L, L) float32 each
        seen += len(x)
    return seen


def read_floor(store: Path, repeats: int) -> tuple[float, float]:
    """(samples/s, MiB/s) of reading every stored sample's bytes in one LMDB read transaction, copied out of the
    memory map (what any reader must do) with no decoding: the rate no loader of this store beats on one core."""
    from diffcurate.curate.store.lmdbstore import Store

    with Store(store, readonly=True) as st:
        times, n, nbytes = [], 0, 0
        for _ in range(repeats + 1):  # the first pass warms the pages
            t0 = time.perf_counter()
            with st.env.begin(db=st._samples) as txn:  # values come out as bytes: copied
                n, nbytes = 0, 0
                for _key, value in txn.cursor():
                    nbytes += len(value)
                    n += 1
            times.append(time.perf_counter() - t0)
    t = float(np.median(times[1:]))
    return n / t, nbytes / t / 2**20


def measure(store: Path, batch: int, workers: list[int], repeats: int, device: str) -> list[dict]:
    from diffcurate.curate.store.dataset import StoreDataset

    ds = StoreDataset(store, "train")
    dev = torch.device(device)
    order = np.random.default_rng(0).permutation(len(ds)).tolist()
    L = ds.physics.lattice
    mib = L * L * 4 / 2**20  # y per sample, float32: what reaches the training step besides x
    floor, floor_mib = read_floor(store, repeats)
    print(f"read floor (raw LMDB, one transaction): {floor:,.0f} samples/s, {floor_mib:,.0f} MiB/s", flush=True)
    rows = []
    for w in workers:
        row = {"workers": w}
        for name, fn in (("items", epoch_items), ("batches", epoch_batches)):
            fn(ds, order, batch, w, dev)  # warm: pages cached, workers' imports done once
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                n = fn(ds, order, batch, w, dev)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            row[f"{name}_samples_per_s"] = n / float(np.median(times))
        row["ratio"] = row["batches_samples_per_s"] / row["items_samples_per_s"]
        row["batches_mib_per_s"] = row["batches_samples_per_s"] * mib
        row["batches_vs_floor"] = row["batches_samples_per_s"] / floor
        row["read_floor_samples_per_s"], row["read_floor_mib_per_s"] = floor, floor_mib
        rows.append(row)
        print(
            f"workers {w}: items {row['items_samples_per_s']:,.0f}/s, batches {row['batches_samples_per_s']:,.0f}/s "
            f"({row['batches_mib_per_s']:,.0f} MiB/s of y, {row['batches_vs_floor']:.2f} of the read floor), "
            f"batches/items {row['ratio']:.2f}",
            flush=True,
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--store", type=Path, help="an existing store to read (default: a temp one made first)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        store = args.store or Path(d) / "s"
        if args.store is None:
            t0 = time.perf_counter()
            make_store(store, args.preset, args.samples)
            print(f"made {args.samples} {args.preset} samples in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = measure(store, args.batch, args.workers, args.repeats, args.device)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
