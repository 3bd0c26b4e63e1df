"""Error estimators for a surrogate's predictions, behind one registry (`ESTIMATORS`).

`raw_estimate(name, models, configs, x, pred)` scores predictions; `calibration` maps raw scores to per-sample
MAE units. The registry (`registry.py`) lists every estimator explicitly; their modules register nothing."""

from diffcurate.model.estimators.base import Estimate, Estimator, Member, Models
from diffcurate.model.estimators.calibration import Calibration, fit
from diffcurate.model.estimators.inverse import inverse_model_config
from diffcurate.model.estimators.registry import ESTIMATORS, check_available, get_estimator, raw_estimate
from diffcurate.model.estimators.stats import auroc, spearman

__all__ = [
    "ESTIMATORS",
    "Calibration",
    "Estimate",
    "Estimator",
    "Member",
    "Models",
    "auroc",
    "check_available",
    "fit",
    "get_estimator",
    "inverse_model_config",
    "raw_estimate",
    "spearman",
]
