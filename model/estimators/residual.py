"""Estimators from the PDE itself, through the problem: its discrete residual of a prediction
(`Problem.residual`), and the error that residual implies (`Problem.correct`). For the diffusion problem the
physics, and what each estimator costs and how well it ranks, are in solvers/correction.py.

* `residual-l1`: mean |r| (plus `Problem.residual_offset`, what the residual cannot see): the residual norm;
* `residual`: mean |e|, e the error estimated from the residual by a few iterations of the problem's own
  correction (`correct(..., iterations=PCG_ITERATIONS)`);
* `residual-exact`: the error by a full solve (`correct(..., iterations=None)`): the truth, for calibration and
  comparison only.
"""

from __future__ import annotations

import numpy as np

from diffcurate.model.estimators.base import Estimate, Models, pixel_mean

PCG_ITERATIONS = 5


def residual_l1(models: Models, configs, x: np.ndarray, pred: np.ndarray) -> Estimate:
    p, params = models.task.problem, models.task.params
    r = np.abs(p.residual(params, configs, pred))  # (n, C_out, H, W) float64
    return Estimate(pixel_mean(r) + p.residual_offset(params, pred), r.astype(np.float32))


def corrected_residual(models: Models, configs, x: np.ndarray, pred: np.ndarray) -> Estimate:
    e = np.abs(models.task.problem.correct(models.task.params, configs, pred, PCG_ITERATIONS))
    return Estimate(pixel_mean(e), e.astype(np.float32))


def exact_error(models: Models, configs, x: np.ndarray, pred: np.ndarray) -> Estimate:
    e = np.abs(models.task.problem.correct(models.task.params, configs, pred, None))
    return Estimate(pixel_mean(e), e.astype(np.float32))
