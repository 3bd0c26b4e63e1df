"""The discrete operator A = D * Lap_5pt - gamma with u = 0 outside the lattice, and the PDE residual.

The reference solver assembles A as a sparse matrix from `sparse_operator`; the time stepper and the residual
estimator apply it as a stencil (`apply_operator`). Both are the same operator, defined here once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from diffcurate.solvers.problem import Configs, Physics, disc_mask, fixed_values, paint


def sparse_operator(physics: Physics) -> sp.csr_matrix:
    """(L^2, L^2) CSR matrix of D * Lap - gamma on the lattice, zero Dirichlet ring outside."""
    L, D, g = physics.lattice, physics.diffusion, physics.decay
    lap1 = sp.diags([np.ones(L - 1), -2.0 * np.ones(L), np.ones(L - 1)], [-1, 0, 1])
    eye = sp.identity(L)
    lap = sp.kron(lap1, eye) + sp.kron(eye, lap1)
    return (D * lap - g * sp.identity(L * L)).tocsr()


def apply_operator(u: torch.Tensor, physics: Physics) -> torch.Tensor:
    """A u for a batch of fields. u: (B, L, L) -> (B, L, L), zero padding = absorbing ring."""
    p = torch.nn.functional.pad(u, (1, 1, 1, 1))
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * u
    return physics.diffusion * lap - physics.decay * u


def residual(u: torch.Tensor, physics: Physics, configs: Configs) -> torch.Tensor:
    """Per-pixel residual of the discrete problem for fields u (B, L, L); zero for the exact solution.

    fixed: A u on free pixels, and u - c on disc pixels (the violation of the imposed values).
    production: A u + gamma * alpha, for the *unnormalised* field; a stored target u / max(u) must be rescaled
    by the caller (the normalisation hides the overall amplitude, so only the shape of u is checked then).
    """
    Au = apply_operator(u, physics)
    if physics.source_model == "production":
        alpha = torch.as_tensor(paint(physics, configs, "sum", np.float64), dtype=u.dtype, device=u.device)
        return Au + physics.decay * alpha
    mask = torch.as_tensor(disc_mask(physics, configs), device=u.device)
    target = fixed_values(physics, configs)
    target = torch.as_tensor(np.nan_to_num(target), dtype=u.dtype, device=u.device)
    return torch.where(mask, u - target, Au)
