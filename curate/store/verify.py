"""`curate verify`: every checksum, plus K random samples re-solved and compared with their stored targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffcurate.curate.store.lmdbstore import Store
from diffcurate.solvers.registry import solve

# A stored target may differ from a fresh float64 solve by its encoding's rounding only.
TOLERANCE = {"float32": 1e-6, "float16": 5e-4}


def verify_store(path: Path, resolve: int = 0, seed: int = 0) -> dict:
    """Returns {"checked", "resolved", "max_error", "problems": [...]}; the CLI exits 1 when problems exist."""
    with Store(path, readonly=True) as store:
        problems = store.verify()
        n = store.count()
        worst = 0.0
        k = min(max(0, resolve), n)
        if k:
            bad = {p.split(":")[0] for p in problems}
            ids = [i for i in store.ids() if i not in bad]
            pick = sorted(np.random.default_rng(seed).choice(len(ids), size=min(k, len(ids)), replace=False))
            cfg, y, _ = store.get([ids[i] for i in pick])
            fresh = solve(store.physics, cfg, "fast", dtype="float64")
            err = np.abs(fresh - y).reshape(len(pick), -1).max(1)
            worst = float(err.max(initial=0.0))
            tol = TOLERANCE[store.encoding]
            problems += [
                f"{ids[i]}: re-solved target differs by {e:.3g} > {tol:g}"
                for i, e in zip(pick, err, strict=True)
                if e > tol
            ]
    return {"checked": n, "resolved": k, "max_error": worst, "problems": problems}
