"""Round 0 of a committed study record, run again with this code: its per-sample test errors against the record's.

    .venv/bin/python tools/study_round0.py edcnn/random-s0 /tmp/r0

Builds the record's run config, runs round 0 only in OUT_DIR, and lines its per-sample test errors up with the
study's test set (docs/study/runs/test_set.json). Exit 0 when they are identical, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from diffcurate.curate.loop.config import RunConfig
from diffcurate.curate.loop.rundir import RunPaths, init_run
from diffcurate.curate.loop.runner import run

RUNS = Path(__file__).resolve().parents[1] / "docs" / "study" / "runs"


def main(record: str, out: Path) -> int:
    meta = json.loads((RUNS / f"{record}.json").read_text())
    ref = np.load(RUNS / f"{record}.npz")["per_sample"][0]  # (n_test,) round 0, in the test set's order
    order = json.loads((RUNS / "test_set.json").read_text())["ids"]
    cfg = RunConfig.from_dict(meta["config"])
    cfg.validate()
    init_run(out, cfg)
    run(out, rounds=0, show_progress=False)
    ev = json.loads(RunPaths(out).round(0).eval.read_text())
    pos = {i: j for j, i in enumerate(order)}
    per = np.full(len(order), np.nan, np.float32)
    per[[pos[i] for i in ev["ids"]]] = ev["per_sample"]
    same = bool(np.array_equal(per, ref))
    print(
        f"{record}: {len(order)} test samples, max |difference| {np.nanmax(np.abs(per - ref)):.3g}, "
        f"mean {np.nanmean(per):.6g} (record {ref.mean():.6g}), identical: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
