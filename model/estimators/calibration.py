"""Raw scores -> per-sample MAE units, fitted on the val split, stored as plain JSON.

Method `loglinear`: log(MAE) = a + b log(raw), least squares, b kept > 0. Chosen over isotonic regression
(PAV) because it is strictly increasing (isotonic steps tie samples, which throws away the ranking that Spearman
and the acquisition use) and it extrapolates (a step function clamps a corrupted prediction's score to the
largest val error, exactly where a guard must not under-estimate). It estimates the *median* error at a raw
score. Method `identity`: the raw score already is the per-sample MAE (residual-exact).

Stated calibration: `log_ratio` holds quantiles of log(true / estimate) on val; `slack` = exp(max) is the factor
by which the val errors exceeded their estimates at worst. A guard `--max-error E` therefore returned model
answers with true error <= E x slack on val; that is the promise we test on the test split.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_json

EPS = 1e-12


@dataclass
class Calibration:
    estimator: str
    method: str = "identity"  # identity | loglinear | uncalibrated
    a: float = 0.0
    b: float = 1.0
    n_val: int = 0
    val_spearman: float | None = None
    log_ratio: dict = field(default_factory=dict)  # p50, p90, p99, max of log(true / estimate) on val
    slack: float | None = None  # exp(log_ratio["max"])
    checkpoint: str = ""  # file name of the surrogate it was fitted for
    key: str = ""  # what it was fitted for (checkpoint bytes, estimator code, extras; diffcurate.curate.loop.estimate)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """(n,) raw -> (n,) estimated per-sample MAE."""
        raw = np.asarray(raw, np.float64)
        if self.method in ("identity", "uncalibrated"):
            return raw.copy()
        return np.exp(self.a + self.b * np.log(np.maximum(raw, EPS)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(**d)

    def save(self, path: Path) -> None:
        atomic_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}: not a calibration file ({e})") from None


def fit(estimator: str, raw: np.ndarray, true: np.ndarray, method: str = "loglinear", **meta) -> Calibration:
    """Fit raw -> true per-sample MAE on val samples."""
    from diffcurate.model.estimators.stats import spearman

    raw, true = np.asarray(raw, np.float64), np.asarray(true, np.float64)
    cal = Calibration(estimator, method, n_val=int(len(raw)), **meta)
    if method == "loglinear":
        lx, ly = np.log(np.maximum(raw, EPS)), np.log(np.maximum(true, EPS))
        if len(raw) >= 2 and np.ptp(lx) > 0:
            b, a = np.polyfit(lx, ly, 1)
            b = max(float(b), 1e-3)
            a = float(np.mean(ly - b * lx))
        else:
            b, a = 1.0, float(np.mean(ly - lx)) if len(raw) else 0.0
        cal.a, cal.b = float(a), float(b)
    elif method not in ("identity", "uncalibrated"):
        raise InputError(f"unknown calibration method {method!r}")
    if len(raw):
        lr = np.log(np.maximum(true, EPS)) - np.log(np.maximum(cal.apply(raw), EPS))
        cal.log_ratio = {k: float(np.percentile(lr, q)) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))}
        cal.log_ratio["max"] = float(lr.max())
        cal.slack = float(math.exp(cal.log_ratio["max"]))
        cal.val_spearman = spearman(raw, true)
    return cal
