"""Estimators from other models: how far the judged prediction lies from independent ones.

Each map is the RMS distance of the prediction y_hat from a set of other predictions f_k:
sqrt(mean_k (f_k - y_hat)^2) per pixel. For the surrogate's own y_hat that is the spread of the set around it;
for a corrupted y_hat it grows with the corruption, so every estimator here judges a given prediction.

* `ensemble`: f_k = the surrogate and K-1 independently seeded members trained on the same data;
* `mc-dropout`: f_k = T passes of the surrogate with its dropout layers sampling (needs dropout > 0 at training:
  switching on dropout in a model trained without it measures noise the model never learnt to absorb);
* `tod`: temporal output discrepancy, f = the previous round's model: where consecutive rounds still disagree
  the model has not converged.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from diffcurate.model.estimators.base import Estimate, Models, pixel_mean
from diffcurate.model.losses import transform_pair
from diffcurate.model.nets import enable_mc_dropout
from diffcurate.solvers.interface import Batch

MC_PASSES = 16
MC_SEED = 0


def rms_distance(others: np.ndarray, pred: np.ndarray) -> Estimate:
    """others (K, n, C, H, W), pred (n, C, H, W) -> per-pixel sqrt(mean_k (f_k - pred)^2) and its mean."""
    d = np.sqrt(((others.astype(np.float64) - pred[None].astype(np.float64)) ** 2).mean(0))  # (n, C, H, W)
    return Estimate(pixel_mean(d), d.astype(np.float32))


def ensemble_spread(models: Models, configs: Batch, x: np.ndarray, pred: np.ndarray) -> Estimate:
    others = [models.predict(x)] + [m(x, models.device, models.batch_size) for m in models.members]
    return rms_distance(np.stack(others), pred)


def mc_passes(models: Models, x: np.ndarray, passes: int = MC_PASSES) -> np.ndarray:
    """(T, n, C_out, H, W) float32: T stochastic passes (dropout on, BatchNorm on running stats) over x
    (n, C_in, H, W), seeded."""
    net = enable_mc_dropout(copy.deepcopy(models.model.net))
    inverse = transform_pair(models.model.transform)[1]
    dev = torch.device(models.device)
    blocks = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(MC_SEED)
        for a in range(0, len(x), models.batch_size):
            xb = torch.as_tensor(x[a : a + models.batch_size], dtype=torch.float32, device=dev)  # (B, C_in, H, W)
            blocks.append(np.stack([inverse(net(xb).float()).cpu().numpy() for _ in range(passes)]))
    return np.concatenate(blocks, axis=1).astype(np.float32)  # (T, n, C_out, H, W)


def mc_dropout_spread(models: Models, configs: Batch, x: np.ndarray, pred: np.ndarray) -> Estimate:
    return rms_distance(mc_passes(models, x), pred)


def tod_spread(models: Models, configs: Batch, x: np.ndarray, pred: np.ndarray) -> Estimate:
    return rms_distance(models.previous(x, models.device, models.batch_size)[None], pred)
