"""Copies of a sample's field along the data path, from the solver's y to the trainer's tensors, an evaluation
and an export: the peak of what numpy allocates in each stage for one sample, in units of one float32 field
(H W 4 bytes), and the time per sample of each stage over a batch (docs/benchmarks.md, "Data path and data
through Ray"). An evaluation pools the error over the metric regions, which a dataset holds once made.

    .venv/bin/python bench/copies.py                       # paper preset (L = 512): 1 sample for the peaks, 64 timed
    .venv/bin/python bench/copies.py --preset small --samples 256

A stage that copies a field into a fresh array and keeps the copy, or holds a temporary while writing its result,
shows up as one field more; a mask costs a quarter of a field per region (bool), the store's own copy into LMDB
is C and not counted. The same script runs on another checkout (`PYTHONPATH` to its `diffcurate` folders) for a
before/after comparison in one sitting.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_args import options  # noqa: E402


def _stages(root: Path, preset: str, n: int):
    """(name, function) of each stage on n samples, in data-path order; each function runs its stage once."""
    from diffcurate.curate.store.export import export_store
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.metrics import evaluate_model
    from diffcurate.solvers.problem import PRESETS
    from diffcurate.solvers.registry import solve
    from diffcurate.solvers.sampling import sample_configs

    p = PRESETS[preset]
    cfg = sample_configs("mixed", p.physics, 0, range(n), p.sources)[0]
    y = solve(p.physics, cfg, "fast", dtype="float32")  # (n, L, L): what the solver actors return
    store = root / f"store-{n}"
    st = Store.create(store, p.physics)
    ids = [cfg.sample_id(s, p.physics) for s in range(n)]
    out = root / f"export-{n}.npz"

    def add():
        with tempfile.TemporaryDirectory(dir=root) as d, Store.create(Path(d) / "s", p.physics) as s:
            s.add(cfg, y)

    def get():
        st.get(ids)

    def dataset():
        dataset_from_configs(p.physics, cfg, y)

    def export():
        export_store(store, out, force=True)

    held = dataset_from_configs(p.physics, cfg, y)

    def evaluate():  # the metrics alone: an identity "model" (x's one channel as the prediction)
        evaluate_model(torch.nn.Identity(), held)

    st.add(cfg, y)
    return st, [
        ("store.add", add),
        ("store.get", get),
        ("dataset (x, masks, tensors)", dataset),
        ("evaluate (metrics per region)", evaluate),
        ("export npz", export),
    ]


def main() -> None:
    args = options(__doc__, preset="paper", samples=64, repeats=3)
    from diffcurate.solvers.problem import PRESETS

    L = PRESETS[args.preset].physics.lattice
    field = L * L * 4
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        st, one = _stages(Path(d), args.preset, 1)
        for name, fn in one:
            fn()  # warm: imports, the first allocation of every buffer
            tracemalloc.start()
            tracemalloc.reset_peak()
            fn()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rows[name] = {"fields": peak / field}
        st.close()
        st, many = _stages(Path(d), args.preset, args.samples)
        for name, fn in many:
            fn()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            rows[name]["us"] = float(np.median(times)) / args.samples * 1e6
        st.close()
    print(
        f"{args.preset} preset (L = {L}); peak numpy allocation of one sample in fields, us per sample of "
        f"{args.samples} (median of {args.repeats}):"
    )
    for name, r in rows.items():
        print(f"  {name:30s} {r['fields']:6.2f} fields  {r['us']:10.1f} us")


if __name__ == "__main__":
    main()
