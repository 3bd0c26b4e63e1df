"""`reference`: assemble the sparse system and solve it directly with SuperLU. Slow, obviously correct."""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla
import torch

from diffcurate.solvers.operator import sparse_operator
from diffcurate.solvers.problem import Configs, Physics, fixed_values, paint


def solve_reference(physics: Physics, configs: Configs, device=None, dtype=torch.float64) -> torch.Tensor:
    L = physics.lattice
    A = sparse_operator(physics)
    out = np.zeros((len(configs), L * L))
    for s in range(len(configs)):
        if physics.source_model == "production":
            alpha = paint(physics, configs[s], "sum", np.float64).ravel()
            out[s] = spla.spsolve(A.tocsc(), -physics.decay * alpha)
            continue
        fixed = fixed_values(physics, configs[s]).ravel()
        on = ~np.isnan(fixed)
        free = np.nonzero(~on)[0]
        out[s, on] = fixed[on]
        if free.size:
            rhs = -(A[free][:, np.nonzero(on)[0]] @ fixed[on])
            out[s, free] = spla.spsolve(A[free][:, free].tocsc(), rhs)
    return torch.as_tensor(out.reshape(-1, L, L), dtype=dtype, device=device)
