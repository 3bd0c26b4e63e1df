"""The paper's training losses as registries: pointwise penalty x per-pixel weight, target transforms, schedules.

A loss is `pointwise(pred - target)` times a per-pixel `weight(y)`, reduced over pixels and the batch.
Weights are computed from the *target* y in the original [0, 1] units, never from the prediction: a weight that
depended on the prediction would add a gradient path through the weight (the net could lower its loss by
moving predictions to where the weight is small) and would change meaning under the sqrt transform.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch

from diffcurate.common.errors import InputError

Tensor = torch.Tensor


def _huber(e: Tensor, delta: float) -> Tensor:
    a = e.abs()
    return torch.where(a <= delta, 0.5 * e * e, delta * (a - 0.5 * delta))


def _berhu(e: Tensor, delta: float) -> Tensor:
    """Inverse Huber: |e| below delta (keeps small errors' gradient), quadratic above, continuous at delta."""
    a = e.abs()
    return torch.where(a <= delta, a, (e * e + delta * delta) / (2 * delta))


# name -> fn(e, delta) -> per-pixel penalty
POINTWISE: dict[str, Callable[[Tensor, float], Tensor]] = {
    "mae": lambda e, delta: e.abs(),
    "mse": lambda e, delta: e * e,
    "huber": _huber,
    "berhu": _berhu,
}

# name -> fn(y, spec) -> per-pixel weight. exp: ~1 at y=1, exp(-1/w) at y=0 (paper eq. 5);
# step: 1 + a tanh(b y) (paper eq. 6). Both up-weight the rare high-value pixels near sources.
WEIGHTS: dict[str, Callable[[Tensor, LossSpec], Tensor]] = {
    "none": lambda y, s: torch.ones_like(y),
    "exp": lambda y, s: torch.exp(-(1.0 - y) / s.w),
    "step": lambda y, s: 1.0 + s.a * torch.tanh(s.b * y),
}

# name -> (forward applied to targets before the loss, inverse applied to predictions at evaluation)
TRANSFORMS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "none": (lambda t: t, lambda t: t),
    "sqrt": (lambda t: t.clamp(min=0).sqrt(), lambda t: t.clamp(min=0).square()),
}

# name -> fn(e, target, w) -> (B,) per-sample loss, averaged over the batch whatever the reduction: the neural-
# operator field's relative L2, ||e||_2 / ||y||_2 per sample (weighted by w when a weight is named)
SAMPLEWISE: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "rel-l2": lambda e, t, w: ((w * e * e).flatten(1).sum(1) / (w * t * t).flatten(1).sum(1).clamp_min(1e-30)).sqrt(),
}

REDUCTIONS = ("mean", "weighted")


@dataclass(kw_only=True)
class LossParams:
    """The hyperparameters that a run's primary and alternate losses share (the trainer's config inherits them).

    reduction "mean" is the paper's <w * rho(e)>; "weighted" is sum(w rho)/sum(w), which keeps the loss scale
    independent of the weight (the step weight with a=4000 is ~1000x the exp weight), so that toggling between
    weights does not hit Adam's moment estimates with a 1000x jump."""

    delta: float = 0.1  # huber / berhu threshold, in target units
    w: float = 1.0  # `exp` weight length scale, in target units
    a: float = 4000.0  # `step` weight amplitude (dimensionless): pixels with large y weigh up to 1 + a
    b: float = 10.0  # `step` weight steepness (per target unit)
    reduction: str = "weighted"  # mean = <w rho(e)> (the paper's); weighted = sum(w rho) / sum(w)

    def loss_params(self) -> dict:
        """These fields alone, as keyword arguments for a LossSpec."""
        return {k: getattr(self, k) for k in LOSS_PARAMS}


LOSS_PARAMS = tuple(f.name for f in fields(LossParams))


@dataclass
class LossSpec(LossParams):
    """One loss: pointwise penalty and weight by name, with the shared hyperparameters (keyword-only)."""

    pointwise: str = "mae"
    weight: str = "none"

    def check(self) -> LossSpec:
        for name, table, what in (
            (self.pointwise, {**POINTWISE, **SAMPLEWISE}, "loss"),
            (self.weight, WEIGHTS, "weight"),
            (self.reduction, REDUCTIONS, "reduction"),
        ):
            if name not in table:
                raise InputError(f"unknown {what} {name!r} (choose from {', '.join(table)})")
        if self.delta <= 0 or self.w <= 0 or self.a < 0 or self.b < 0:
            raise InputError("loss hyperparameters must satisfy delta > 0, w > 0, a >= 0, b >= 0")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def transform_pair(name: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    if name not in TRANSFORMS:
        raise InputError(f"unknown transform {name!r} (choose from {', '.join(TRANSFORMS)})")
    return TRANSFORMS[name]


def _weighted(spec: LossSpec, pred: Tensor, target: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
    """(weights, pointwise loss), both (B, 1, L, L)."""
    y = target if y is None else y
    return WEIGHTS[spec.weight](y, spec).detach(), POINTWISE[spec.pointwise](pred - target, spec.delta)


def _per_sample(spec: LossSpec, pred: Tensor, target: Tensor, y: Tensor | None) -> Tensor:
    """(B,) a samplewise loss of each sample."""
    w = WEIGHTS[spec.weight](target if y is None else y, spec).detach()
    return SAMPLEWISE[spec.pointwise](pred - target, target, w)


def loss_value(spec: LossSpec, pred: Tensor, target: Tensor, y: Tensor | None = None) -> Tensor:
    """Scalar loss. pred/target (B, 1, L, L) in the transformed space; y the untransformed target for weights."""
    if spec.pointwise in SAMPLEWISE:
        return _per_sample(spec, pred, target, y).mean()
    w, rho = _weighted(spec, pred, target, y)
    if spec.reduction == "weighted":
        return (w * rho).sum() / w.sum()
    return (w * rho).mean()


def loss_parts(spec: LossSpec, pred: Tensor, target: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(numerator, denominator) of `loss_value`, both sums over the batch: data-parallel workers add each part up
    over their shares of one batch, so that their loss is the whole batch's whatever the number of workers."""
    if spec.pointwise in SAMPLEWISE:
        per = _per_sample(spec, pred, target, y)
        return per.sum(), torch.tensor(float(per.numel()), device=per.device)
    w, rho = _weighted(spec, pred, target, y)
    den = w.sum() if spec.reduction == "weighted" else torch.tensor(float(rho.numel()), device=rho.device)
    return (w * rho).sum(), den


def _fixed(epoch: int, period: int, prob: float, seed: int) -> int:
    return 0


def _toggle(epoch: int, period: int, prob: float, seed: int) -> int:
    return (epoch // max(1, period)) % 2


def _random(epoch: int, period: int, prob: float, seed: int) -> int:
    """Loss 0 with probability prob, drawn from (seed, epoch) alone so a resumed run draws the same."""
    return 0 if random.Random(seed * 1_000_003 + epoch).random() < prob else 1


# name -> fn(epoch, period, prob, seed) -> 0 (primary loss) or 1 (alternate loss)
SCHEDULES: dict[str, Callable[[int, int, float, int], int]] = {"fixed": _fixed, "toggle": _toggle, "random": _random}


def schedule_index(name: str, epoch: int, period: int = 5, prob: float = 0.5, seed: int = 0) -> int:
    if name not in SCHEDULES:
        raise InputError(f"unknown loss schedule {name!r} (choose from {', '.join(SCHEDULES)})")
    return SCHEDULES[name](epoch, period, prob, seed)


def lr_at(step: int, total: int, lr: float, warmup: int = 0, const_frac: float = 0.6, final_ratio: float = 0.01):
    """Linear warm-up, constant until const_frac of the steps, then cosine to lr * final_ratio (on this
    problem it cut round-to-round noise from 15-20 % to 3-4 %; a pure cosine under-trained)."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    knee = max(warmup, int(const_frac * total))
    if step < knee or total <= knee:
        return lr
    t = min(1.0, (step - knee) / max(1, total - knee))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
