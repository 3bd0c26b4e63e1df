"""The inverse estimator (the seed paper's proposal): a small network g trained to map a *true* field y back to
its input x (for diffusion, the source image); applied to a predicted field, |g(y_hat) - x| is large where y_hat
is not a field that this configuration makes. It needs no solve, only x, which every configuration encodes for
free."""

from __future__ import annotations

import numpy as np

from diffcurate.model.estimators.base import Estimate, Models, pixel_mean
from diffcurate.model.nets import UNetConfig, config_to_dict
from diffcurate.solvers.interface import Batch


def inverse_model_config(lattice: int, channels: tuple[int, int] = (1, 1)) -> dict:
    """A small UNet from y's channels to x's (`channels`: the problem's (C_in, C_out)); skips keep the sharp
    edges that x consists of; depth as deep as L allows, <= 2."""
    depth = next(d for d in (2, 1, 0) if lattice % (2**d) == 0)
    return config_to_dict(UNetConfig(base=8, depth=depth, in_channels=channels[1], out_channels=channels[0]))


def reconstruction_error(models: Models, configs: Batch, x: np.ndarray, pred: np.ndarray) -> Estimate:
    x_hat = models.inverse(pred, models.device, models.batch_size)  # (n, C_in, H, W) float32
    d = np.abs(x_hat - x)
    return Estimate(pixel_mean(d), d)
