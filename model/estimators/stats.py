"""Rank statistics for judging estimators (no sklearn): Spearman via scipy, AUROC via ranks (Mann-Whitney)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata, spearmanr


def spearman(a, b) -> float | None:
    """Spearman's rho, None when undefined (fewer than 3 samples or a constant input)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def auroc(score, positive) -> float | None:
    """P(score of a random positive > score of a random negative), ties count one half; None without both."""
    score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
