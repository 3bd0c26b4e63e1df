"""The inverse estimator (the seed paper's proposal): a small network g trained to map a *true* field y back to
its source image x; applied to a predicted field, |g(y_hat) - x| is large where y_hat is not a field that these
sources make. It needs no solve, only x, which every configuration paints for free."""

from __future__ import annotations

import numpy as np

from diffcurate.model.estimators.base import Estimate, Models, pixel_mean
from diffcurate.model.nets import UNetConfig, config_to_dict
from diffcurate.solvers.problem import Configs


def inverse_model_config(lattice: int) -> dict:
    """A small UNet (skips keep the sharp disc edges that x consists of); depth as deep as L allows, <= 2."""
    depth = next(d for d in (2, 1, 0) if lattice % (2**d) == 0)
    return config_to_dict(UNetConfig(base=8, depth=depth))


def reconstruction_error(models: Models, configs: Configs, x: np.ndarray, pred: np.ndarray) -> Estimate:
    x_hat = models.inverse(pred, models.device, models.batch_size)  # (n, L, L) float32
    d = np.abs(x_hat - x)
    return Estimate(pixel_mean(d), d)
