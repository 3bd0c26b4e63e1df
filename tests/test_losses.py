"""Losses, weights, transforms and schedules against values computed by hand."""

import math

import pytest
import torch

from diffcurate.common.errors import InputError
from diffcurate.model.losses import LossSpec, loss_value, lr_at, schedule_index, transform_pair

PRED = torch.tensor([0.0, 0.5, 1.0, 0.2]).reshape(1, 1, 2, 2)
Y = torch.tensor([0.0, 0.25, 0.5, 1.0]).reshape(1, 1, 2, 2)
# errors e = pred - y = [0, 0.25, 0.5, -0.8]


@pytest.mark.parametrize(
    "pointwise, delta, expected",
    [
        ("mae", 0.1, (0 + 0.25 + 0.5 + 0.8) / 4),
        ("mse", 0.1, (0 + 0.0625 + 0.25 + 0.64) / 4),
        # huber delta=0.3: 0.5 e^2 for |e|<=0.3 else 0.3(|e| - 0.15)
        ("huber", 0.3, (0 + 0.5 * 0.0625 + 0.3 * (0.5 - 0.15) + 0.3 * (0.8 - 0.15)) / 4),
        # berhu delta=0.3: |e| for |e|<=0.3 else (e^2 + 0.09) / 0.6
        ("berhu", 0.3, (0 + 0.25 + (0.25 + 0.09) / 0.6 + (0.64 + 0.09) / 0.6) / 4),
    ],
)
def test_pointwise_losses(pointwise, delta, expected):
    got = loss_value(LossSpec(pointwise, delta=delta), PRED, Y)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_berhu_is_continuous_at_delta():
    d = 0.2
    e = torch.tensor([d - 1e-6, d + 1e-6]).reshape(1, 1, 1, 2)
    spec = LossSpec("berhu", delta=d, reduction="mean")
    left = loss_value(spec, e[..., :1], torch.zeros(1, 1, 1, 1))
    right = loss_value(spec, e[..., 1:], torch.zeros(1, 1, 1, 1))
    assert left.item() == pytest.approx(right.item(), abs=1e-5)


def test_exp_weight_uses_target():
    # weights exp(-(1-y)/w), w=0.5, y = [0, .25, .5, 1]; MAE terms [0, .25, .5, .8]
    w = [math.exp(-2.0), math.exp(-1.5), math.exp(-1.0), 1.0]
    terms = [0.0, 0.25, 0.5, 0.8]
    spec = LossSpec("mae", "exp", w=0.5, reduction="mean")
    assert loss_value(spec, PRED, Y).item() == pytest.approx(
        sum(a * b for a, b in zip(w, terms, strict=True)) / 4, rel=1e-6
    )
    weighted = LossSpec("mae", "exp", w=0.5, reduction="weighted")
    assert loss_value(weighted, PRED, Y).item() == pytest.approx(
        sum(a * b for a, b in zip(w, terms, strict=True)) / sum(w), rel=1e-6
    )
    # swapping the roles of pred and target changes the weights, so the value changes: weights follow the target
    assert loss_value(spec, Y, PRED).item() != pytest.approx(loss_value(spec, PRED, Y).item(), rel=1e-3)


def test_step_weight():
    # 1 + a tanh(b y), a=2, b=3; MSE terms [0, .0625, .25, .64]
    w = [1 + 2 * math.tanh(3 * v) for v in (0.0, 0.25, 0.5, 1.0)]
    terms = [0.0, 0.0625, 0.25, 0.64]
    got = loss_value(LossSpec("mse", "step", a=2.0, b=3.0, reduction="mean"), PRED, Y).item()
    assert got == pytest.approx(sum(a * b for a, b in zip(w, terms, strict=True)) / 4, rel=1e-6)


def test_weight_has_no_gradient_and_pred_does():
    pred = PRED.clone().requires_grad_(True)
    loss_value(LossSpec("mae", "exp", reduction="mean"), pred, Y).backward()
    # d/dpred of exp(-(1-y)) |pred - y| / 4 at pixel 3 (e = -0.8, y = 1): -1/4
    assert pred.grad.flatten()[3].item() == pytest.approx(-0.25)


def test_sqrt_transform_round_trip():
    fwd, inv = transform_pair("sqrt")
    y = torch.tensor([0.0, 0.04, 0.25, 1.0])
    assert torch.allclose(fwd(y), torch.tensor([0.0, 0.2, 0.5, 1.0]))
    assert torch.allclose(inv(fwd(y)), y)
    assert inv(torch.tensor([-0.3])).item() == 0.0  # negative predictions clamp to 0, not 0.09


def test_schedules():
    assert [schedule_index("fixed", e) for e in range(4)] == [0, 0, 0, 0]
    assert [schedule_index("toggle", e, period=5) for e in range(12)] == [0] * 5 + [1] * 5 + [0] * 2
    draws = [schedule_index("random", e, prob=0.8, seed=3) for e in range(400)]
    assert draws == [schedule_index("random", e, prob=0.8, seed=3) for e in range(400)]  # seeded
    assert 0.7 < draws.count(0) / 400 < 0.9
    assert draws != [schedule_index("random", e, prob=0.8, seed=4) for e in range(400)]


def test_lr_schedule_constant_then_cosine():
    assert lr_at(0, 100, 1.0) == 1.0
    assert lr_at(59, 100, 1.0) == 1.0
    assert lr_at(80, 100, 1.0) == pytest.approx(0.01 + 0.99 * 0.5)  # halfway through the cosine
    assert lr_at(100, 100, 1.0) == pytest.approx(0.01)
    assert lr_at(0, 100, 1.0, warmup=4) == pytest.approx(0.25)


@pytest.mark.parametrize("field, value", [("pointwise", "l3"), ("weight", "gauss"), ("reduction", "sum")])
def test_unknown_names_are_input_errors(field, value):
    with pytest.raises(InputError, match=value):
        LossSpec(**{field: value}).check()
    with pytest.raises(InputError):
        schedule_index("sometimes", 0)
    with pytest.raises(InputError):
        transform_pair("log")
