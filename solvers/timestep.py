"""`timestep`: explicit Euler in time to the steady state, as the paper made its data (a baseline).

Kept to show what the exact solvers save. It stops when max |u_{n+1} - u_n| < tol; the remaining error at that
point is reported by the benchmark (it is far larger than tol: the slowest mode decays by only ~dt*gamma per step).
"""

from __future__ import annotations

import numpy as np
import torch

from diffcurate.solvers.operator import apply_operator
from diffcurate.solvers.problem import Configs, Physics, fixed_values, paint

TOL = 1e-6
MAX_STEPS = 2_000_000
CHECK_EVERY = 50


def solve_timestep(physics: Physics, configs: Configs, device="cpu", dtype=torch.float64, tol: float = TOL):
    L, n = physics.lattice, len(configs)
    dt = 0.9 * 2.0 / (8.0 * physics.diffusion + physics.decay)  # 90 % of the explicit stability limit
    if physics.source_model == "production":
        src = physics.decay * torch.as_tensor(paint(physics, configs, "sum", np.float64), dtype=dtype, device=device)
        keep = torch.zeros((n, L, L), dtype=torch.bool, device=device)
        u = torch.zeros((n, L, L), dtype=dtype, device=device)
    else:
        fv = fixed_values(physics, configs)
        keep = torch.as_tensor(~np.isnan(fv), device=device)
        u = torch.as_tensor(np.nan_to_num(fv), dtype=dtype, device=device)
        src = torch.zeros_like(u)
    for step in range(MAX_STEPS):
        du = dt * (apply_operator(u, physics) + src)
        du = torch.where(keep, torch.zeros_like(du), du)
        u = u + du
        if step % CHECK_EVERY == 0 and float(du.abs().max()) < tol:
            break
    return u
