"""Guarded prediction on a run's test split: for each estimator and max error E, the fraction sent to the solver,
the worst true per-sample MAE among the answers the model kept, and the wall time against solving everything.

    .venv/bin/python bench/estimators.py RUN_DIR                       # residual, residual-l1, ensemble, ...
    .venv/bin/python bench/estimators.py RUN_DIR --estimators residual --errors 0.01,0.02 --json

E defaults to the val p50 / p90 / p99 of the surrogate's true error (E is in per-sample MAE units for every
estimator: each is calibrated on val). Wall time = predict + estimate + solve the flagged ones, timed here in
the same process as "solve all" (fast solver, float64), because this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcurate.curate.loop.estimate import _split, load_estimator, resolve_source, true_errors  # noqa: E402
from diffcurate.curate.loop.predict import guard  # noqa: E402
from diffcurate.curate.loop.rundir import load_run  # noqa: E402
from diffcurate.solvers.problem import paint  # noqa: E402
from diffcurate.solvers.registry import solve  # noqa: E402

DEFAULT = "residual,residual-l1,ensemble,mc-dropout,inverse,tod,residual-exact"


def bench(run_dir: Path, names: list[str], errors: list[float] | None) -> dict:
    source = resolve_source(run_dir)
    cfg, y = _split(source, "test")
    t0 = time.perf_counter()
    solve(load_run(source.run_dir).physics, cfg, "fast", dtype="float64", batch_size=64)
    solve_all = time.perf_counter() - t0
    rows = []
    thresholds = errors
    for name in names:
        est = load_estimator(run_dir, name, log=lambda s: print(s, file=sys.stderr))
        if thresholds is None:
            vcfg, vy = _split(source, "val")
            ve = true_errors(est.models.predict(paint(est.models.physics, vcfg)), vy)
            thresholds = [float(np.percentile(ve, q)) for q in (50, 90, 99)]
        for E in thresholds:
            t0 = time.perf_counter()
            g = guard(est, cfg, E)
            wall = time.perf_counter() - t0
            kept = true_errors(g.pred, y)[~g.solved]
            rows.append(
                {
                    "estimator": name,
                    "max_error": E,
                    "solved_fraction": float(g.solved.mean()),
                    "worst_kept": float(kept.max()) if kept.size else None,
                    "kept_over_E": int((kept > E).sum()),
                    "seconds": wall,
                    "vs_solve_all": wall / solve_all,
                    "slack": est.calibration.slack,
                }
            )
    return {
        "run": str(run_dir),
        "checkpoint": source.checkpoint.name,
        "n_test": len(cfg),
        "solve_all_seconds": solve_all,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--estimators", default=DEFAULT)
    ap.add_argument("--errors", default=None, help="Comma-separated E values (default: val p50, p90, p99).")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    errors = [float(e) for e in a.errors.split(",")] if a.errors else None
    r = bench(a.run_dir, [n.strip() for n in a.estimators.split(",")], errors)
    if a.json:
        print(json.dumps(r))
        return
    t = Table(
        "estimator",
        "E",
        "to solver",
        "worst kept MAE",
        "kept > E",
        "val slack",
        "wall s",
        "vs solve all",
        title=f"{r['run']} ({r['checkpoint']}), {r['n_test']} test samples; solve all: {r['solve_all_seconds']:.3f} s",
    )
    for w in r["rows"]:
        t.add_row(
            w["estimator"],
            f"{w['max_error']:.4g}",
            f"{100 * w['solved_fraction']:.1f} %",
            "-" if w["worst_kept"] is None else f"{w['worst_kept']:.4g}",
            str(w["kept_over_E"]),
            f"{w['slack']:.2f}" if w["slack"] else "-",
            f"{w['seconds']:.3f}",
            f"{w['vs_solve_all']:.2f}x",
        )
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
