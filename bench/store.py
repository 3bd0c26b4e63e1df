"""Store throughput: writes, random reads, Dataset reads with 0 vs 2 workers, float16 error and bytes/sample.

    .venv/bin/python bench/store.py [--small N] [--paper N] [--dir DIR]

Fields are real `fast` solves (a pool, reused across the distinct configurations written). Dataset rows: best of
2 epochs (warm), workers started afresh each epoch; the cold rows are one epoch each after the store's pages were
dropped from the page cache (every reader here opens LMDB read-only, with readahead: the writers are closed).
"write float32, uncached" writes as `generate` does at L >= 256 (`cache_writes=False`).
Ratios compare each row with the float32 row (writes, reads) or the 0-worker row (Dataset) of the same preset,
measured in this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcurate.curate.store.dataset import StoreDataset  # noqa: E402
from diffcurate.curate.store.lmdbstore import Store  # noqa: E402
from diffcurate.solvers import solve  # noqa: E402
from diffcurate.solvers.problem import PRESETS, Configs, Physics  # noqa: E402


def random_configs(physics: Physics, n: int, kmax: int, rng: np.random.Generator) -> Configs:
    lo, hi = physics.radius, physics.lattice - 1 - physics.radius
    ks = rng.integers(1, kmax + 1, n)
    return Configs.from_lists([rng.integers(lo, hi + 1, (k, 2)) for k in ks], [rng.random(k) for k in ks])


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_preset(name: str, n: int, pool: int, root: Path, rows: list, errors: list) -> None:
    physics = PRESETS[name].physics
    L = physics.lattice
    rng = np.random.default_rng(0)
    configs = random_configs(physics, n, 20, rng)
    y_pool = solve(physics, configs[:pool], "fast", dtype="float32")  # (pool, L, L) float32
    y = y_pool[np.arange(n) % pool]  # (n, L, L): real fields, distinct configs (so distinct ids)
    err = np.abs(y_pool.astype(np.float16).astype(np.float32) - y_pool)
    errors.append((name, L, float(err.max()), float(err.mean()), float(y_pool.max())))
    base = {}
    for enc in ("float32", "float16"):
        path = root / f"{name}-{enc}"
        st = Store.create(path, physics, encoding=enc)
        dt, added = timed(lambda st=st: st.add(configs, y))
        assert added == n
        size = st.info()["bytes"]
        ids = st.ids()
        order = [ids[i] for i in rng.permutation(n)]
        rt, _ = timed(lambda st=st, order=order: [st.get(order[i : i + 64]) for i in range(0, n, 64)])
        st.close()
        payload = n * L * L * 4 / 1e6  # MB of float32 targets moved, whatever the encoding
        w, r = n / dt, n / rt
        base.setdefault("w", w), base.setdefault("r", r)
        rows.append(
            (
                name,
                f"write {enc}",
                f"{w:,.0f}",
                f"{payload / dt:,.0f}",
                f"{w / base['w']:.2f}",
                f"{size / n / 1024:,.1f} KiB/sample",
            )
        )
        rows.append((name, f"random read {enc}", f"{r:,.0f}", f"{payload / rt:,.0f}", f"{r / base['r']:.2f}", ""))
    with Store.create(root / f"{name}-bulk", physics, cache_writes=False) as st:  # how `generate` writes
        dt, _ = timed(lambda st=st: st.add(configs, y))
    rows.append(
        (
            name,
            "write float32, uncached",
            f"{n / dt:,.0f}",
            f"{n * L * L * 4 / dt / 1e6:,.0f}",
            f"{n / dt / base['w']:.2f}",
            "generate's mode",
        )
    )
    ds = StoreDataset(root / f"{name}-float32", split="train")
    d0 = None
    for workers, cold in ((0, False), (2, False), (0, True), (2, True)):
        loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=workers)
        if cold:  # one epoch straight after the store's pages left the page cache (mapped pages would stay)
            ds.close()
            with Store(root / f"{name}-float32", readonly=True) as st:
                st.drop_cache()
        epoch = lambda loader=loader: sum(len(b[0]) for b in loader)  # noqa: E731
        t = timed(epoch)[0] if cold else min(timed(epoch)[0] for _ in range(2))  # warm: best of 2
        d0 = d0 or n / t
        what = f"Dataset epoch, {workers} workers" + (", cold cache" if cold else "")
        rows.append(
            (name, what, f"{n / t:,.0f}", f"{n * L * L * 4 / t / 1e6:,.0f}", f"{n / t / d0:.2f}", "x, y, mask, count")
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=3000, help="samples written at the small preset (L=64)")
    ap.add_argument("--paper", type=int, default=200, help="samples written at the paper preset (L=512)")
    ap.add_argument("--dir", type=Path, default=None, help="where to make the stores (default: a temp dir)")
    a = ap.parse_args()
    rows: list = []
    errors: list = []
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        t0, load0 = time.perf_counter(), f"{os.getloadavg()[0]:.2f}"
        bench_preset("small", a.small, 256, Path(tmp), rows, errors)
        bench_preset("paper", a.paper, 32, Path(tmp), rows, errors)
        total = time.perf_counter() - t0
    table = Table(title="diffcurate store (LMDB, 64 samples per write txn, sync on)")
    for col in ("preset", "operation", "samples/s", "MB/s (f32 eq.)", "ratio", "note"):
        table.add_column(col, justify="left" if col in ("preset", "operation", "note") else "right")
    for r in rows:
        table.add_row(*r)
    con = Console(width=130)
    con.print(table)
    err = Table(title="float16 encoding error on solved fields")
    for col in ("preset", "L", "max |err|", "mean |err|", "max y"):
        err.add_column(col, justify="right")
    for name, L, mx, mean, ymax in errors:
        err.add_row(name, str(L), f"{mx:.2e}", f"{mean:.2e}", f"{ymax:.3f}")
    con.print(err)
    con.print(f"total {total:.1f} s; load average before/after: {load0} / {os.getloadavg()[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
