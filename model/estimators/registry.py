"""The estimator registry: one table, filled here explicitly (importing an estimator's module registers nothing)."""

from __future__ import annotations

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.model.estimators import inverse, residual, spread
from diffcurate.model.estimators.base import REQUIREMENTS, Estimate, Estimator, Models
from diffcurate.solvers.interface import Batch

# name -> Estimator; the order is the order of `curate estimate-eval`'s table
ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator(
            "inverse",
            inverse.reconstruction_error,
            "mean |g(prediction) - x|: reconstruction error of an inverse net field -> sources",
            needs=("inverse",),
        ),
        Estimator(
            "residual-l1",
            residual.residual_l1,
            "mean |r|: the discrete PDE residual's L1 norm (diffusion: free pixels |A y|, discs |y - c|)",
            needs=("residual",),
        ),
        Estimator(
            "residual",
            residual.corrected_residual,
            f"mean |e|, e from the residual by {residual.PCG_ITERATIONS} iterations of the problem's correction",
            needs=("correct",),
        ),
        Estimator(
            "residual-exact",
            residual.exact_error,
            "the correction solve A e = -r (one full solve): the true error, for calibration",
            needs=("correct",),
            calibrate=False,
            ground_truth_free=False,
        ),
        Estimator(
            "ensemble",
            spread.ensemble_spread,
            "RMS distance from the predictions of K independently seeded models",
            needs=("members",),
        ),
        Estimator(
            "mc-dropout",
            spread.mc_dropout_spread,
            f"RMS distance from {spread.MC_PASSES} dropout-sampled passes of the model",
            needs=("dropout",),
        ),
        Estimator(
            "tod",
            spread.tod_spread,
            "temporal output discrepancy: |f_k-1(x) - prediction| (round k vs k-1)",
            needs=("previous",),
        ),
    )
}


def get_estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise InputError(f"unknown estimator {name!r} (choose from {', '.join(ESTIMATORS)})")
    return ESTIMATORS[name]


def check_available(name: str, models: Models) -> Estimator:
    """The estimator, or InputError naming what it needs and the models (or their problem) lack."""
    est = get_estimator(name)
    for need in est.needs:
        ok, what = REQUIREMENTS[need]
        if not ok(models):
            of = f", which problem {models.task.name!r} does not offer" if need in PROBLEM_NEEDS else ""
            raise InputError(f"estimator {name!r} needs {what}{of}")
    return est


PROBLEM_NEEDS = ("residual", "correct")  # requirements that the problem meets, not the run directory


def default_estimator(problem) -> str:
    """The ground-truth-free estimate a problem supports best: the error from its residual's correction, else
    the residual's norm, else the spread of an ensemble (which any problem has)."""
    caps = problem.capabilities()
    return "residual" if "correct" in caps else "residual-l1" if "residual" in caps else "ensemble"


def raw_estimate(name: str, models: Models, configs: Batch, x: np.ndarray, pred: np.ndarray) -> Estimate:
    """Raw score of predictions `pred` (n, C_out, H, W) for inputs `x` (n, C_in, H, W) of `configs`."""
    return check_available(name, models).fn(models, configs, x, pred)
