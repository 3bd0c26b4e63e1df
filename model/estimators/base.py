"""The estimator interface: (models, configs, prediction) -> per-sample raw score and a per-pixel map.

Every estimator judges a *given* prediction (normally the surrogate's own) against evidence that does not need
the solution: the PDE it should satisfy, other models, the input it should map back to. Judging the prediction
rather than the model is what lets a test corrupt a prediction and check that the score rises, and keeps the
estimators interchangeable. Raw scores are turned into per-sample MAE units by `calibration`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffcurate.model.inference import predict
from diffcurate.solvers.interface import Batch, Task


@dataclass
class Member:
    """A trained network and the target transform it was trained with."""

    net: torch.nn.Module
    transform: str = "none"
    config: dict = field(default_factory=dict)

    def __call__(self, x: np.ndarray, device="cpu", batch_size: int = 64) -> np.ndarray:
        return predict(self.net, x, self.transform, device, batch_size)  # (n, C_out, H, W) float32


@dataclass
class Models:
    """What an estimator may use: the surrogate, plus the extras that a run directory brings."""

    task: Task  # the problem and parameters the surrogate was trained for
    model: Member
    members: list[Member] = field(default_factory=list)  # extra independently seeded models (ensemble)
    previous: Member | None = None  # the previous round's model (tod)
    inverse: Member | None = None  # field -> source image x (inverse)
    device: str = "cpu"
    batch_size: int = 64

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model(x, self.device, self.batch_size)  # (n, C_out, H, W) float32


@dataclass
class Estimate:
    raw: np.ndarray  # (n,) float64, larger = worse; not yet in MAE units
    pixels: np.ndarray | None = None  # (n, C, H, W) float32 per-pixel estimate, where the estimator has one


@dataclass(frozen=True)
class Estimator:
    """`needs`: extras from REQUIREMENTS; `calibrate`: False when raw is already the per-sample MAE;
    `ground_truth_free`: usable as an acquisition score (no solve)."""

    name: str
    fn: Callable[[Models, Batch, np.ndarray, np.ndarray], Estimate]  # (models, configs, x, pred)
    description: str
    needs: tuple[str, ...] = ()
    calibrate: bool = True
    ground_truth_free: bool = True


# requirement -> (check(models), what is missing when it fails)
REQUIREMENTS: dict[str, tuple[Callable[[Models], bool], str]] = {
    "members": (lambda m: len(m.members) > 0, "ensemble members (a run directory, which trains them on demand)"),
    "previous": (lambda m: m.previous is not None, "the previous round's checkpoint (a run with >= 2 rounds)"),
    "inverse": (lambda m: m.inverse is not None, "an inverse network (a run directory, which trains it on demand)"),
    "residual": (
        lambda m: "residual" in m.task.problem.capabilities(),
        "the problem's `residual` (its discrete operator applied to a prediction)",
    ),
    "correct": (
        lambda m: "correct" in m.task.problem.capabilities(),
        "the problem's `correct` (the error of a prediction from its residual)",
    ),
    "dropout": (
        lambda m: float(m.model.config.get("dropout", 0.0)) > 0,
        "a model trained with dropout > 0 (set `dropout` in the run config's [model] section)",
    ),
}


def pixel_mean(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64).reshape(len(a), -1).mean(1)  # (n,)
