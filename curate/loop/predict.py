"""Guarded prediction (`curate predict`): the surrogate answers, an estimator judges each answer, and samples whose
estimated per-sample MAE is not below `--max-error` go to the solver instead.

Output (docs/formats.md, "`curate predict`"): the config arrays, physics and x, plus `y` (n, H, W) float32 = the
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
from diffcurate.curate.store.arrays import configs_of, format_of, load_arrays, save_arrays, task_from_arrays
from diffcurate.curate.store.lock import check_writable
from diffcurate.model.estimators import check_available, get_estimator
from diffcurate.model.estimators.registry import default_estimator
from diffcurate.solvers.interface import Batch


@dataclass
class Guarded:
    y: np.ndarray  # (n, C_out, H, W) float32 returned fields
    path: np.ndarray  # (n,) str "model" / "solver"
    estimate: np.ndarray  # (n,) float64 estimated per-sample MAE
    error: np.ndarray  # (n,) float64 true per-sample MAE of the model's answer where solved, NaN elsewhere
    x: np.ndarray  # (n, C_in, H, W) float32 inputs
    pred: np.ndarray  # (n, C_out, H, W) float32 the model's answers
    seconds: dict

    @property
    def solved(self) -> np.ndarray:
        return self.path == "solver"


def check_max_error(max_error: float | None) -> None:
    if max_error is not None and not (math.isfinite(max_error) and max_error >= 0):
        raise InputError(f"--max-error must be a finite number >= 0, got {max_error}")


def guard(est: Calibrated, configs: Batch, max_error: float | None) -> Guarded:
    """Predict, estimate, and solve (with the problem's solver) what the estimate does not clear (configs already
    validated)."""
    check_max_error(max_error)
    task = est.models.task
    t = {"predict": time.perf_counter()}
    x = task.encode(configs)  # (n, C_in, H, W) float32
    pred = est.models.predict(x)  # (n, C_out, H, W) float32
    t["estimate"] = time.perf_counter()
    estimate = est(configs, x, pred)
    t["solve"] = time.perf_counter()
    solve_it = np.zeros(len(configs), bool) if max_error is None else ~(estimate < max_error)
    y, error = pred.copy(), np.full(len(configs), np.nan)
    idx = np.nonzero(solve_it)[0]
    if len(idx):
        u = task.problem.solve(task.params, configs[idx])  # (m, C_out, H, W) float32
        error[idx] = true_errors(pred[idx], u)
        y[idx] = u
    t["end"] = time.perf_counter()
    seconds = {k: t[n] - t[k] for k, n in (("predict", "estimate"), ("estimate", "solve"), ("solve", "end"))}
    path = np.where(solve_it, "solver", "model")
    return Guarded(y, path, estimate, error, x, pred, seconds)


def predict_file(
    checkpoint,
    input_path,
    out,
    max_error: float | None = None,
    estimator: str | None = None,  # None: the problem's best (`default_estimator`)
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
    if estimator is not None:
        get_estimator(estimator)
    source = resolve_source(checkpoint)
    d = load_arrays(input_path)
    models = load_models(source, device)
    ph = models.task
    if any(k in d for k in ph.params_dict()):
        theirs = task_from_arrays(d, str(input_path))
        if (theirs.name, theirs.fingerprint()) != (ph.name, ph.fingerprint()):
            raise InputError(
                f"{input_path}: its physics ({theirs.fingerprint()}) differ from the checkpoint's ({ph.fingerprint()})"
            )
    configs = configs_of(ph, d, str(input_path))
    estimator = estimator or default_estimator(ph.problem)
    if source.run_dir is None:
        check_available(estimator, models)  # a bare checkpoint cannot train what is missing
    est = load_estimator(checkpoint, estimator, device, log, models=models, source=source)
    if est.calibration.method == "uncalibrated":
        log(f"note: {estimator} is uncalibrated for a checkpoint outside a run directory (raw estimates)")
    g = guard(est, configs, max_error)
    one = lambda a: a[:, 0] if a.shape[1] == 1 else a  # noqa: E731  (n, H, W) for one channel
    extra = {"path": g.path, "estimate": g.estimate, "error": g.error}
    save_arrays(out, ph, configs, x=one(g.x), y=one(g.y), extra=extra)
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
