"""`curate verify`: every checksum, plus K random samples re-solved and compared with their stored targets."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np

from diffcurate.curate.store.lmdbstore import Store

# A stored target may differ from a fresh solve by its encoding's rounding plus, for targets solved in float32
# (generate's default), the float32 solve's own error: for diffusion up to 1.3e-6 at the paper preset in another
# batch composition (tests/test_store.py checks it there), 4x that as the margin. Real damage is far larger. The
# error is taken relative to a sample's largest |y| where that exceeds 1 (fields of any scale).
TOLERANCE = {"float32": 5e-6, "float16": 5e-4}


def resolved_error(store: Store, configs, y: np.ndarray) -> np.ndarray:
    """(n,) largest error of stored targets y (n, H, W) against a fresh solve: exact, by the problem's `correct`
    (a float64 solve) where it offers it, else against its `solve`; relative where |y| exceeds 1."""
    p, params = store.problem, store.physics
    if "correct" in p.capabilities():
        e = np.abs(p.correct(params, configs, y[:, None], None))  # (n, 1, H, W) float64
    else:
        e = np.abs(p.solve(params, configs).astype(np.float64) - y[:, None])
    n = len(y)
    return e.reshape(n, -1).max(1) / np.maximum(1.0, np.abs(y).reshape(n, -1).max(1))


def verify_store(path: Path, resolve: int = 0, seed: int = 0) -> dict:
    """Returns {"checked", "resolved", "max_error", "problems": [...]}; the CLI exits 1 when problems exist."""
    with Store(path, readonly=True) as store:
        problems = store.verify()
        try:
            n = store.count()
        except lmdb.Error as e:
            return {"checked": 0, "resolved": 0, "max_error": 0.0, "problems": [*problems, f"LMDB: {e}"]}
        worst = 0.0
        k = min(max(0, resolve), n)
        if k and not any(p.startswith("LMDB") for p in problems):
            ids = [i for i in store.ids() if i not in store.bad_ids]  # damaged index entries are skipped
            pick = sorted(np.random.default_rng(seed).choice(len(ids), size=min(k, len(ids)), replace=False))
            cfg, y, _ = store.get([ids[i] for i in pick])
            err = resolved_error(store, cfg, y)
            worst = float(err.max(initial=0.0))
            tol = TOLERANCE[store.encoding]
            problems += [
                f"{ids[i]}: re-solved target differs by {e:.3g} > {tol:g}"
                for i, e in zip(pick, err, strict=True)
                if e > tol
            ]
    return {"checked": n, "resolved": k, "max_error": worst, "problems": problems}


def repair_store(path: Path) -> dict:
    """`curate verify --repair`: damaged records re-solved from their configurations (`Store.repair`), then the
    store verified again. Returns verify_store's dict plus "repaired" (ids) and the repair's own problems."""
    with Store(path) as store:
        repaired, cannot = store.repair()
    r = verify_store(path)
    return {**r, "repaired": repaired, "problems": [*cannot, *r["problems"]]}
