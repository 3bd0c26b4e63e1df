"""The single definition of the errors (docs/formats.md, "JSON outputs": evaluate schema).

Regions: `all` (every pixel), then the problem's own (`Problem.regions`, carried by each item: for diffusion
sources, field and the bands r1 / r2 / r3 of the paper). Errors are pooled over the pixels of the whole set
(sums and counts accumulated across batches, never means of batch means), per region and per stratum. Empty
regions -> None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

PERCENTILES = {"p50": 50, "p95": 95, "p99": 99}


@dataclass(frozen=True)
class Metrics:
    """The evaluate schema as a value: `from_dict` reads, and `to_dict` writes, the JSON of eval.json, the
    rounds' `test` and `curate evaluate`, so that readers name a metric once (`mae_all`, `p99`)."""

    n_samples: int
    mae: dict[str, float | None]  # pooled over the pixels of each region
    mae_by_sources: dict[str, dict[str, float | None]]  # region -> stratum -> pooled MAE
    rel_l2: float | None  # pooled: sqrt(sum of squared errors / sum of squared targets) over the set
    per_sample_mae: dict[str, float | None]  # mean, p50, p95, p99, max of the per-sample MAE
    rel_l2_mean: float | None = None  # the field's metric: the mean over samples of ||pred - y||_2 / ||y||_2

    @classmethod
    def from_dict(cls, d: dict) -> Metrics:
        """Records written before `rel_l2_mean` was measured read with it None."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mae_all(self) -> float | None:
        return self.mae["all"]

    @property
    def p99(self) -> float | None:
        return self.per_sample_mae["p99"]


def region_names(data) -> tuple[str, ...]:
    """The names of the regions a Dataset's (or a DataLoader's) items carry, after `all`."""
    return tuple(getattr(getattr(data, "dataset", data), "region_names", ()))


def per_sample_mae(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) mean |pred - y| over all pixels of each sample."""
    return (pred.double() - y.double()).abs().flatten(1).mean(1)


def per_sample_rel_l2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) ||pred - y||_2 / ||y||_2 of each sample over all pixels and channels (inf where y is all zero)."""
    e, y = (pred.double() - y.double()).flatten(1), y.double().flatten(1)
    return (e.square().sum(1) / y.square().sum(1)).sqrt()


def _none_if_empty(s: float, n: float) -> float | None:
    return float(s / n) if n > 0 else None


class MetricAccumulator:
    """Accumulate per-region error sums and pixel counts over batches; `result()` gives the evaluate schema.
    `regions`: the names of the regions the items carry (`all` comes first, always)."""

    def __init__(self, regions: tuple[str, ...] = ()) -> None:
        self.regions = ("all", *regions)
        self.abs_sum: dict[int, np.ndarray] = {}  # stratum -> (R + 1,) sum |e| per region
        self.n_pix: dict[int, np.ndarray] = {}  # stratum -> (R + 1,) pixels per region
        self.sq_err = 0.0
        self.sq_y = 0.0
        self.samples: list[np.ndarray] = []
        self.rel: list[np.ndarray] = []  # per-sample relative L2

    def update(self, pred: torch.Tensor, y: torch.Tensor, regions: torch.Tensor, strata: torch.Tensor) -> None:
        """pred, y (B, C_out, H, W) in target units; regions (B, R, H, W) bool; strata (B,) int."""
        pred, y = pred.detach().double(), y.detach().double()
        err = (pred - y).abs().mean(1, keepdim=True)  # (B, 1, H, W): over the output channels
        every = torch.ones(len(regions), 1, *regions.shape[2:], dtype=torch.bool, device=regions.device)
        reg = torch.cat([every, regions.bool().to(y.device)], 1)  # (B, R + 1, H, W)
        sums = (err * reg).flatten(2).sum(2).cpu().numpy()  # (B, R + 1)
        pix = reg.flatten(2).sum(2).cpu().numpy().astype(np.float64)  # (B, R + 1)
        for k, s, n in zip(strata.reshape(-1).tolist(), sums, pix, strict=True):
            k = int(k)
            self.abs_sum[k] = self.abs_sum.get(k, 0.0) + s
            self.n_pix[k] = self.n_pix.get(k, 0.0) + n
        self.sq_err += float(((pred - y) ** 2).sum())
        self.sq_y += float((y**2).sum())
        self.samples.append(per_sample_mae(pred, y).cpu().numpy())
        self.rel.append(per_sample_rel_l2(pred, y).cpu().numpy())

    def per_sample(self) -> np.ndarray:
        return np.concatenate(self.samples) if self.samples else np.zeros(0)

    def result(self) -> dict:
        ps = self.per_sample()
        rel = np.concatenate(self.rel) if self.rel else np.zeros(0)
        regions = self.regions
        tot_s = sum(self.abs_sum.values(), np.zeros(len(regions)))
        tot_n = sum(self.n_pix.values(), np.zeros(len(regions)))
        keys = sorted(self.abs_sum)
        return Metrics(
            n_samples=int(ps.size),
            mae={r: _none_if_empty(tot_s[i], tot_n[i]) for i, r in enumerate(regions)},
            mae_by_sources={
                r: {str(k): _none_if_empty(self.abs_sum[k][i], self.n_pix[k][i]) for k in keys}
                for i, r in enumerate(regions)
            },
            rel_l2=float(np.sqrt(self.sq_err / self.sq_y)) if self.sq_y > 0 else None,
            per_sample_mae={
                "mean": float(ps.mean()) if ps.size else None,
                **{k: float(np.percentile(ps, q)) if ps.size else None for k, q in PERCENTILES.items()},
                "max": float(ps.max()) if ps.size else None,
            },
            rel_l2_mean=float(rel.mean()) if rel.size and np.isfinite(rel).all() else None,
        ).to_dict()


def _batches(data, batch_size: int):
    """Accept a DataLoader (iterate it) or a Dataset (wrap it, in order)."""
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)


def evaluate_model(
    model: torch.nn.Module,
    data,
    device: str | torch.device = "cpu",
    transform: str | Callable[[torch.Tensor], torch.Tensor] = "none",
    batch_size: int = 64,
) -> tuple[dict, np.ndarray]:
    """Metrics of `model` on a Dataset/DataLoader of (x, y, regions, stratum) items, in eval mode without grad.

    `transform` names the target transform the model was trained with; its inverse maps predictions back to
    target units. Returns (evaluate-schema dict, (n,) per-sample MAE in data order)."""
    from diffcurate.model.losses import transform_pair

    inverse = transform_pair(transform)[1] if isinstance(transform, str) else transform
    device = torch.device(device)
    model.eval()
    acc = MetricAccumulator(region_names(data))
    with torch.no_grad():
        for x, y, regions, strata in _batches(data, batch_size):
            pred = inverse(model(x.to(device)).float())  # (B, C_out, H, W) float32, target units
            acc.update(pred, y.to(device), regions.to(device), strata)
    return acc.result(), acc.per_sample()


def per_sample_weighted_mae(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, sources_weight: float):
    """(B,) per-sample MAE with the pixels of `mask` (the problem's first region: for diffusion, the discs)
    weighted by `sources_weight` (1.0 = the plain per-sample MAE).

    The ranker's true-error score: raising the weight makes the pick favour configurations whose first region
    is badly reproduced (for diffusion, the sources: the paper's worst region)."""
    e = (pred.double() - y.double()).abs().flatten(1)
    w = 1.0 + (sources_weight - 1.0) * mask.flatten(1).double()
    return (e * w).sum(1) / w.sum(1)
