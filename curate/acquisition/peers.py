"""Peer batch active-learning methods from bmdal-reg (Holzmüller et al., JMLR 2023; the library AL4PDE uses), on
the surrogate's own bottleneck features, so our ranker is measured against the field's implementation.

`lcmd` (largest cluster maximum distance) and `coreset` (bmdal's `maxdist`, greedy k-centre) select in TP mode:
distances count to the training set as well as to the batch picked so far. Kernel: linear on the features.

bmdal_reg 3.0.2 is installed without its dependencies (`make setup` does it; its install_requires pull openml,
seaborn, ... which the selection code never imports), and still spells `np.Inf`, which numpy 2 removed: the
alias is restored before import (a documented compatibility shim, nothing else of numpy is touched).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from diffcurate.common.errors import InputError

METHODS = {"lcmd": "lcmd", "coreset": "maxdist"}


def bmdal_select(pool: np.ndarray, train: np.ndarray, budget: int, method: str) -> np.ndarray:
    """(budget,) int64 rows of `pool` (n, D) chosen by bmdal-reg `method` given the training features (m, D)."""
    if method not in METHODS:
        raise InputError(f"unknown bmdal method {method!r} (choose from {', '.join(METHODS)})")
    if not hasattr(np, "Inf"):
        setattr(np, "Inf", np.inf)  # noqa: B010  (bmdal_reg 3.0.2 predates numpy 2; a plain assignment is "fixed")
    try:
        import torch
        from bmdal_reg.bmdal.algorithms import select_batch
        from bmdal_reg.bmdal.feature_data import TensorFeatureData
    except ImportError:
        raise InputError(f"strategy {method!r} needs bmdal-reg: pip install --no-deps bmdal_reg==3.0.2 dill") from None
    budget = min(budget, len(pool))
    # z-score with the training set's statistics so no single feature dominates the distances
    mu, sd = train.mean(0), train.std(0) + 1e-8
    data = {
        "train": TensorFeatureData(torch.as_tensor((train - mu) / sd, dtype=torch.float64)),
        "pool": TensorFeatureData(torch.as_tensor((pool - mu) / sd, dtype=torch.float64)),
    }
    with contextlib.redirect_stdout(io.StringIO()):  # bmdal prints a line per call
        idx, _ = select_batch(
            batch_size=budget,
            models=[torch.nn.Identity()],
            data=data,
            y_train=None,
            base_kernel="linear",
            kernel_transforms=[],
            selection_method=METHODS[method],
            sel_with_train=True,
        )
    return np.asarray(idx.cpu().numpy(), np.int64)
