"""Digest of what a run directory holds, for refactors that must not change what a run computes.

    curate init R --preset tiny --seed 7 && curate run R --rounds 2 --no-dashboard
    .venv/bin/python tools/run_digest.py R > before.json     # before the change
    .venv/bin/python tools/run_digest.py R2 > after.json     # after it: a fresh run, or R resumed
    cmp before.json after.json

The store's sample ids per split and per round, and rounds.jsonl without its wall-clock fields (`seconds`,
`timeline`): equal files mean the same samples, picks and test metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffcurate.curate.loop.rundir import RunPaths, read_rounds
from diffcurate.curate.store.lmdbstore import Store

WALL_CLOCK = {"seconds", "timeline"}


def _without_wall_clock(obj):
    if isinstance(obj, dict):
        return {k: _without_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK}
    if isinstance(obj, list):
        return [_without_wall_clock(v) for v in obj]
    return obj


def digest(root: Path) -> dict:
    paths = RunPaths(root)
    with Store(paths.store, readonly=True) as st:
        idx = st.index()
    train = idx[idx["split"] == "train"]
    return {
        "ids": {s: sorted(idx[idx["split"] == s]["id"]) for s in ("train", "val", "test")},
        "train_by_round": {int(k): sorted(g["id"]) for k, g in train.groupby("round")},
        "rounds": _without_wall_clock(read_rounds(root)),
    }


if __name__ == "__main__":
    print(json.dumps(digest(Path(sys.argv[1])), indent=1, sort_keys=True))
