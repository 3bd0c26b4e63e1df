"""Regions and pooled errors against values computed by hand on tiny arrays."""

import math

import numpy as np
import pytest
import torch

from diffcurate.model.data import ArrayDataset
from diffcurate.model.metrics import MetricAccumulator, evaluate_model, per_sample_mae
from diffcurate.solvers.diffusion import paper_regions


def t(a, dtype=torch.float32):
    return torch.tensor(a, dtype=dtype).reshape(-1, 1, 2, 2)


# sample 0: y = [[1, .3], [.15, .07]], disc on pixel (0,0); pred off by [.1, .2, .3, .4]
# sample 1: y = [[.5, .02], [.12, .0]], disc on pixel (0,0) and (1,1); pred off by [.2, .1, .0, .6]
Y = t([[1.0, 0.3, 0.15, 0.07], [0.5, 0.02, 0.12, 0.0]])
ERR = t([[0.1, -0.2, 0.3, 0.4], [-0.2, 0.1, 0.0, 0.6]])
PRED = Y + ERR
MASK = t([[1, 0, 0, 0], [1, 0, 0, 1]], torch.bool)
COUNTS = torch.tensor([1, 2])


def regions(y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The diffusion problem's regions of (B, 1, H, W) targets and disc masks: (B, R, H, W) bool and their names."""
    r = paper_regions(mask[:, 0].numpy(), y[:, 0].numpy())
    return torch.from_numpy(np.stack(list(r.values()), 1)), tuple(r)


def test_regions_and_pooling_by_hand():
    reg, names = regions(Y, MASK)
    acc = MetricAccumulator(names)
    acc.update(PRED, Y, reg, COUNTS)
    m = acc.result()
    assert m["n_samples"] == 2
    mae = m["mae"]
    assert mae["all"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.2 + 0.1 + 0.0 + 0.6) / 8)
    assert mae["sources"] == pytest.approx((0.1 + 0.2 + 0.6) / 3)
    assert mae["field"] == pytest.approx((0.2 + 0.3 + 0.4 + 0.1 + 0.0) / 5)
    assert mae["r1"] == pytest.approx(0.2)  # field with y >= 0.2: only y=.3 (the 1.0 and .5 are discs)
    assert mae["r2"] == pytest.approx((0.3 + 0.0) / 2)  # y = .15, .12
    assert mae["r3"] == pytest.approx(0.4)  # y = .07 (y = .02 and the disc y=0 are outside)
    by = m["mae_by_sources"]
    assert set(by) == {"all", "sources", "field", "r1", "r2", "r3"}
    assert by["all"] == pytest.approx({"1": 0.25, "2": 0.225})
    assert by["r1"]["1"] == pytest.approx(0.2) and by["r1"]["2"] is None  # empty region -> None (JSON null)
    sq = sum(e * e for e in [0.1, 0.2, 0.3, 0.4, 0.2, 0.1, 0.0, 0.6])
    yy = sum(v * v for v in [1.0, 0.3, 0.15, 0.07, 0.5, 0.02, 0.12, 0.0])
    assert m["rel_l2"] == pytest.approx(math.sqrt(sq / yy), rel=1e-6)
    ps = m["per_sample_mae"]
    assert ps["mean"] == pytest.approx((0.25 + 0.225) / 2)
    assert ps["max"] == pytest.approx(0.25)
    assert ps["p50"] == pytest.approx(0.2375)


def test_per_sample_mae():
    assert per_sample_mae(PRED, Y).numpy() == pytest.approx([0.25, 0.225])


def test_pooling_over_unequal_batches_equals_whole_set():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.random((7, 1, 5, 5)), dtype=torch.float32)
    scale = torch.tensor([0.3, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05]).reshape(7, 1, 1, 1)
    pred = y + scale * torch.tensor(rng.normal(0, 1, (7, 1, 5, 5)), dtype=torch.float32)
    mask = torch.tensor(rng.random((7, 1, 5, 5)) < 0.2)
    counts = torch.tensor([1, 3, 3, 2, 1, 5, 2])
    reg, names = regions(y, mask)
    whole = MetricAccumulator(names)
    whole.update(pred, y, reg, counts)
    parts = MetricAccumulator(names)
    parts.update(pred[:2], y[:2], reg[:2], counts[:2])
    parts.update(pred[2:], y[2:], reg[2:], counts[2:])
    a, b = whole.result(), parts.result()
    for region in a["mae"]:
        assert b["mae"][region] == pytest.approx(a["mae"][region], rel=1e-12)
    assert b["rel_l2"] == pytest.approx(a["rel_l2"], rel=1e-12)
    assert b["mae_by_sources"]["sources"] == pytest.approx(a["mae_by_sources"]["sources"], rel=1e-12)
    # and it is not the mean of the two batch means (the batches are unequal and their MAEs differ)
    m1 = (pred[:2] - y[:2]).abs().mean().item()
    m2 = (pred[2:] - y[2:]).abs().mean().item()
    assert abs((m1 + m2) / 2 - a["mae"]["all"]) > 1e-4


class Scale(torch.nn.Module):
    def forward(self, x):
        return 2 * x


class Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(x)


def test_evaluate_model_uses_eval_mode_and_inverse_transform():
    x = t([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    y = (2 * x) ** 2  # Scale predicts sqrt(y) exactly
    ds = ArrayDataset(x, y, np.zeros((2, 1, 2, 2), bool), [1, 1], ("sources",))
    m, per = evaluate_model(Scale(), ds, transform="sqrt", batch_size=1)
    assert m["mae"]["all"] == pytest.approx(0.0, abs=1e-7) and per.shape == (2,)
    m_none, _ = evaluate_model(Scale(), ds, transform="none")
    # |2x - 4x^2| = .16, .24, .24, .16 on sample 0 and 0 on sample 1
    assert m_none["mae"]["all"] == pytest.approx(0.8 / 8, rel=1e-6)
    assert m["mae"]["sources"] is None  # no disc pixels at all
    net = Noisy().train()
    a = evaluate_model(net, ds)[1]
    b = evaluate_model(net, ds)[1]
    assert np.array_equal(a, b)
    assert not net.training
    assert a == pytest.approx(per_sample_mae(x, y).numpy())  # dropout was off
