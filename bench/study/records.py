"""Each finished run's small record, the study's only input: docs/study/runs/ARM/NAME-sSEED.{json,npz}.

The JSON holds the run's config, code version, and per round the training size, solves, picks by stratum
and the seconds each step took; the npz holds each round's per-sample test MAE (float32, in the order of
docs/study/runs/test_set.json, which every record must share) and the final training and validation
configurations, so that the retrain jobs (control, transfer) need no run directory. Records are written
atomically, and `results.json` and the figures are computed from them alone.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

from diffcurate.common.files import atomic_path
from diffcurate.curate.loop.steps import EVALUATE, STEP_NAMES, TRAIN

# seconds of a round that a strategy pays: training and acquisition (solving the pool, scoring, mining, embedding,
# picking, solving the picks); round 0's solve is mostly the shared test sets and is left out
COST_STEPS = tuple(n for n in STEP_NAMES if n != EVALUATE.name)  # a round's acquisition and training


def code_version() -> str:
    """The commit the code came from, with `+dirty` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "curate", "model", "solvers", "bench/study"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+dirty" if dirty else "")


def paths(records: Path, arm: str, name: str, seed: int) -> tuple[Path, Path]:
    base = records / arm / f"{name}-s{seed}"
    return base.with_suffix(".json"), base.with_suffix(".npz")


def exists(records: Path, arm: str, name: str, seed: int) -> bool:
    return all(p.is_file() for p in paths(records, arm, name, seed))


def cost(r: dict) -> float:
    steps = COST_STEPS if r["round"] > 0 else (TRAIN.name,)
    return float(sum(r["seconds"].get(k, 0.0) for k in steps))


def _atomic(path: Path, write) -> None:
    """write(fh) into a binary file that replaces `path` whole."""
    with atomic_path(path, make_parent=True) as tmp, tmp.open("wb") as fh:
        write(fh)


def test_set(records: Path, store, ids: list[str], sampler: list[str]) -> list[str]:
    """The study's fixed test set (sorted ids): written by the first record (test_set.json: ids, samplers,
    strata; test_set.npz: the configurations' schema arrays, for the retrain jobs), checked by every later one."""
    path = records / "test_set.json"
    order = np.argsort(ids)
    sorted_ids = [ids[i] for i in order]
    if path.is_file():
        have = json.loads(path.read_text())
        if have["ids"] != sorted_ids:
            raise SystemExit(f"error: this run's test split differs from {path}: the study needs one test set")
        return have["ids"]
    configs, _, _ = store.get(sorted_ids)
    task = store.task
    mine = {"ids": sorted_ids, "sampler": [sampler[i] for i in order], "stratum": task.strata(configs).tolist()}
    _atomic(records / "test_set.npz", lambda fh: np.savez_compressed(fh, **task.to_arrays(configs)))
    _atomic(path, lambda fh: fh.write((json.dumps(mine) + "\n").encode()))
    return sorted_ids


def write_run(records: Path, root: Path, arm: str, name: str, seed: int) -> list[Path]:
    """The record of a finished run directory; returns the files written."""
    from diffcurate.curate.loop.rundir import RunPaths, load_run, read_rounds
    from diffcurate.curate.store.lmdbstore import Store

    cfg, rounds, rp = load_run(root), read_rounds(root), RunPaths(root)
    evals = [json.loads(rp.round(r["round"]).eval.read_text()) for r in rounds]
    fits = [json.loads(rp.round(r["round"]).fit.read_text()) for r in rounds]
    with Store(rp.store, readonly=True) as st:
        idx = st.index().set_index("id")
        first = evals[0]
        order = test_set(records, st, first["ids"], first["sampler"])
        pos = {i: j for j, i in enumerate(order)}
        per = np.zeros((len(rounds), len(order)), np.float32)
        for k, ev in enumerate(evals):
            per[k, [pos[i] for i in ev["ids"]]] = ev["per_sample"]
        sets = {}
        for split in ("train", "val"):
            ids = sorted(st.ids(split))
            configs, _, _ = st.get(ids)
            arrays = st.task.to_arrays(configs)
            sets.update({f"{split}_{k}": v for k, v in arrays.items()})
            if split == "train":
                sets["train_round"] = idx.loc[ids, "round"].to_numpy(np.int64)
    meta = {
        "arm": arm,
        "strategy": name,
        "seed": seed,
        "code": code_version(),
        "config": cfg.to_dict(),
        "test_set_sha256": hashlib.sha256("\n".join(order).encode()).hexdigest(),
        "rounds": [
            {
                "round": r["round"],
                "train_size": r["train_size"],
                "solves": r["solves"],
                "added_by_sources": r["added_by_sources"],
                "mined": r.get("mined", 0),
                "seconds": r["seconds"],
                "cost_s": cost(r),
                "epochs": f["epochs"],
                "best_epoch": f["best_epoch"],
            }
            for r, f in zip(rounds, fits, strict=True)
        ],
    }
    js, npz = paths(records, arm, name, seed)
    _atomic(npz, lambda fh: np.savez_compressed(fh, per_sample=per, **sets))
    _atomic(js, lambda fh: fh.write((json.dumps(meta, indent=1) + "\n").encode()))
    return [js, npz]


def write_retrain(records: Path, kind: str, name: str, seed: int, meta: dict, per: np.ndarray) -> list[Path]:
    """The record of a retrain job (control, transfer): (1, n_test) per-sample errors in the test set's order."""
    js, npz = paths(records, kind, name, seed)
    _atomic(npz, lambda fh: np.savez_compressed(fh, per_sample=per[None].astype(np.float32)))
    _atomic(js, lambda fh: fh.write((json.dumps({**meta, "code": code_version()}, indent=1) + "\n").encode()))
    return [js, npz]


def load(records: Path, arm: str, name: str, seed: int) -> tuple[dict, dict]:
    """(meta, arrays) of one record."""
    js, npz = paths(records, arm, name, seed)
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(js.read_text()), arrays


def allocation(records: Path, arm: str, name: str, seed: int) -> dict[str, float]:
    """Shares by source count of everything a run picked (all acquisition rounds): what `stratified` copies."""
    meta, _ = load(records, arm, name, seed)
    total: dict[str, int] = {}
    for r in meta["rounds"][1:]:
        for c, v in r["added_by_sources"].items():
            total[c] = total.get(c, 0) + v
    n = sum(total.values())
    return {c: v / n for c, v in sorted(total.items(), key=lambda kv: int(kv[0]))}
