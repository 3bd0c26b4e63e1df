"""Guarded prediction (`curate predict`): the surrogate answers, an estimator judges each answer, and samples whose
estimated per-sample MAE is not below `--max-error` go to the solver instead.

Output (docs/formats.md, "`curate predict`"): the config arrays, physics and x, plus `y` (n, L, L) float32 = the
returned fields, `path` (n,) "model" / "solver", `estimate` (n,) calibrated MAE units, `error` (n,) the true
per-sample MAE of the model's prediction where the sample was solved, NaN otherwise. A sample keeps the model's
answer iff estimate < E, so `--max-error 0` solves everything; without `--max-error` nothing is solved.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.curate.loop.estimate import Calibrated, Log, load_estimator, load_models, resolve_source, true_errors
from diffcurate.curate.store.arrays import format_of, load_arrays, physics_from_arrays, save_arrays
from diffcurate.curate.store.lock import check_writable
from diffcurate.model.estimators import check_available, get_estimator
from diffcurate.solvers.problem import Configs, paint

DEFAULT_ESTIMATOR = "residual"


@dataclass
class Guarded:
    y: np.ndarray  # (n, L, L) float32 returned fields
    path: np.ndarray  # (n,) str "model" / "solver"
    estimate: np.ndarray  # (n,) float64 estimated per-sample MAE
    error: np.ndarray  # (n,) float64 true per-sample MAE of the model's answer where solved, NaN elsewhere
    x: np.ndarray  # (n, L, L) float32 inputs
    pred: np.ndarray  # (n, L, L) float32 the model's answers
    seconds: dict

    @property
    def solved(self) -> np.ndarray:
        return self.path == "solver"


def check_max_error(max_error: float | None) -> None:
    if max_error is not None and not (math.isfinite(max_error) and max_error >= 0):
        raise InputError(f"--max-error must be a finite number >= 0, got {max_error}")


def guard(est: Calibrated, configs: Configs, max_error: float | None) -> Guarded:
    """Predict, estimate, and solve what the estimate does not clear (configs already validated)."""
    from diffcurate.solvers.registry import solve

    check_max_error(max_error)
    ph = est.models.physics
    t = {"predict": time.perf_counter()}
    x = paint(ph, configs)  # (n, L, L) float32
    pred = est.models.predict(x)  # (n, L, L) float32
    t["estimate"] = time.perf_counter()
    estimate = est(configs, x, pred)
    t["solve"] = time.perf_counter()
    solve_it = np.zeros(len(configs), bool) if max_error is None else ~(estimate < max_error)
    y, error = pred.copy(), np.full(len(configs), np.nan)
    idx = np.nonzero(solve_it)[0]
    if len(idx):
        u = solve(ph, configs[idx], "fast", dtype="float64", batch_size=64)  # (m, L, L) float64
        error[idx] = true_errors(pred[idx], u)
        y[idx] = u.astype(np.float32)
    t["end"] = time.perf_counter()
    seconds = {k: t[n] - t[k] for k, n in (("predict", "estimate"), ("estimate", "solve"), ("solve", "end"))}
    path = np.where(solve_it, "solver", "model")
    return Guarded(y, path, estimate, error, x, pred, seconds)


def predict_file(
    checkpoint,
    input_path,
    out,
    max_error: float | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    device: str = "cpu",
    log: Log = lambda s: None,
) -> dict:
    """`curate predict`: read configs, guard, write `out` atomically; every input check runs before any work."""
    out = Path(out)
    format_of(out)
    if not out.parent.is_dir():
        raise InputError(f"{out}: directory {out.parent} does not exist")
    check_writable(out.parent)
    check_max_error(max_error)
    get_estimator(estimator)
    source = resolve_source(checkpoint)
    d = load_arrays(input_path)
    configs = Configs(d["centers"], d["values"], d["counts"])
    models = load_models(source, device)
    ph = models.physics
    if "lattice" in d:
        theirs = physics_from_arrays(d)
        if theirs != ph:
            raise InputError(
                f"{input_path}: its physics ({theirs.fingerprint()}) differ from the checkpoint's ({ph.fingerprint()})"
            )
    configs.validate(ph)
    if source.run_dir is None:
        check_available(estimator, models)  # a bare checkpoint cannot train what is missing
    est = load_estimator(checkpoint, estimator, device, log, models=models, source=source)
    if est.calibration.method == "uncalibrated":
        log(f"note: {estimator} is uncalibrated for a checkpoint outside a run directory (raw estimates)")
    g = guard(est, configs, max_error)
    save_arrays(out, ph, configs, x=g.x, y=g.y, extra={"path": g.path, "estimate": g.estimate, "error": g.error})
    model_err = g.error[g.solved]
    return {
        "out": str(out),
        "checkpoint": str(source.checkpoint),
        "estimator": estimator,
        "calibration": est.calibration.method,
        "max_error": max_error,
        "n": len(configs),
        "solved": int(g.solved.sum()),
        "solved_fraction": float(g.solved.mean()) if len(configs) else 0.0,
        "estimate_max": float(g.estimate.max()) if len(configs) else None,
        "solved_model_error_max": float(model_err.max()) if model_err.size else None,
        "seconds": g.seconds,
    }
