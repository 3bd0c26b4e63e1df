"""The diffusion problem's ground-truth-free error physics: a prediction's discrete residual r, and the error
it implies (`Diffusion.residual`, `residual_offset` and `correct`, which the estimators of model/estimators/
reach through the problem).

The error e = u - y_hat of the `fixed` model solves the discrete problem driven by the residual: e = -r on disc
pixels (the violated imposed values) and A e = -r on free pixels, with the discs holding e. So

* `residual-l1`: mean |r| (|A y_hat| on free pixels, |y_hat - c| on discs): the residual norm itself. A is a
  second difference, so it weights high-frequency wiggles that barely move the MAE;
* `residual`: e from r by a few steps of preconditioned conjugate gradients on the correction problem (each step:
  one stencil and one *unmasked* solve = two DST-Is, the fast solver's cheap part), |e| = the residual in the
  error's own units. Measured on the `small` test set (300 samples; Spearman with the true per-sample MAE,
  median |estimate / truth - 1|, ms per sample on 2 shared CPU cores; the fast solve costs ~0.8 ms, the model
  ~1.5 ms, so at L=64 the estimator is no cheaper than the truth: the solver is that good):

      steps      0 (preconditioner once)            1       2       3       5        10
      Spearman   0.888                               0.984   0.995   0.999   0.9999   1.0
      median     0.80                                0.088   0.044   0.021   0.0015   2e-6
      ms         0.3                                 0.6     0.7     0.7     1.1      2.1

  (`residual-l1`: Spearman 0.82.) So a handful of steps from the network's answer is all but the truth;
* `residual-exact`: the correction solve A e = -r with the discs' constraints is the same linear system as the
  problem itself, so it costs one full solve; we run that solve and return |u - y_hat|: the truth, for calibration
  and comparison only (it needs no ground truth from outside, but costs as much as the solver).

`production` stores y = u / max(u), which hides the amplitude: the residual of a normalised field is defined only
up to the unknown factor max(u). `residual-l1` fits it per sample by least squares (min_s |A s y_hat + gamma
alpha|; cheap, but biased low when y_hat is noisy, since A amplifies noise), and a prediction that is right up to
a constant factor then has zero residual, so it adds |max(y_hat) - 1| x mean(y_hat), the one thing the
normalisation still pins. `residual` recovers max(u) exactly, by one unmasked solve of A u = -gamma alpha; but
that solve *is* the production solver (no discs), so for `production` `residual` costs what `residual-exact`
does and equals it: the normalisation hides exactly what a solve is needed for.
"""

from __future__ import annotations

import numpy as np
import torch

from diffcurate.solvers.fast import unmasked_solve
from diffcurate.solvers.operator import apply_operator, residual
from diffcurate.solvers.problem import Configs, Physics, disc_mask, paint

PCG_ITERATIONS = 5


def residual_field(ph: Physics, configs: Configs, pred: np.ndarray, amplitude: torch.Tensor | None = None):
    """(n, L, L) float64 residual of the predictions (n, L, L) in normalised field units (see the module
    docstring); `amplitude` (n, 1, 1): max(u) of `production` if known, else fitted by least squares."""
    u = torch.from_numpy(np.asarray(pred, np.float64))  # (n, L, L) float64
    if ph.source_model != "production":
        return residual(u, ph, configs)
    Au = apply_operator(u, ph)
    g = ph.decay * torch.from_numpy(paint(ph, configs, "sum", np.float64))  # (n, L, L) gamma * alpha
    dot = lambda a, b: (a * b).flatten(1).sum(1)[:, None, None]  # noqa: E731
    s = -dot(Au, g) / dot(Au, Au).clamp_min(1e-300) if amplitude is None else amplitude  # (n, 1, 1) max(u)
    return Au + g / torch.where(s.abs() > 0, s, torch.ones_like(s))


def scale_term(ph: Physics, pred: np.ndarray) -> np.ndarray:
    """(n,) what the residual of a normalised (`production`) field cannot see: |max(y_hat) - 1| x mean |y_hat|."""
    if ph.source_model != "production":
        return np.zeros(len(pred))
    p = np.asarray(pred, np.float64).reshape(len(pred), -1)
    return np.abs(p.max(1) - 1.0) * np.abs(p).mean(1)


def correction(ph: Physics, configs: Configs, r: torch.Tensor, iterations: int = PCG_ITERATIONS) -> torch.Tensor:
    """(n, L, L) float64 approximate error e from the residual r: e = -r on discs, and on free pixels a few
    iterations of conjugate gradients on (-A_FF) e_F = r_F + (A e_D)_F (SPD), preconditioned by the unmasked
    inverse restricted to the free pixels. The unmasked inverse alone lets the error spread through the discs,
    which pin it (measured: Spearman 0.69, below |r| itself); CG fixes that in a few steps (module docstring)."""
    free = ~torch.from_numpy(disc_mask(ph, configs))  # (n, L, L) bool
    e_d = torch.where(free, torch.zeros_like(r), -r)
    K = lambda v: torch.where(free, -apply_operator(v, ph), 0.0)  # noqa: E731  (-A_FF)
    P = lambda v: torch.where(free, -unmasked_solve(torch.where(free, v, 0.0), ph), 0.0)  # noqa: E731
    dot = lambda a, b: (a * b).flatten(1).sum(1)[:, None, None]  # noqa: E731
    rhs = torch.where(free, r + apply_operator(e_d, ph), 0.0)
    x = torch.zeros_like(r)
    res = rhs.clone()
    z = P(res)
    p, rz = z.clone(), dot(res, z)
    for _ in range(iterations):
        Kp = K(p)
        pkp = dot(p, Kp)
        alpha = torch.where(pkp > 0, rz / pkp.clamp_min(1e-300), 0.0)
        x = x + alpha * p
        res = res - alpha * Kp
        z = P(res)
        rz_new = dot(res, z)
        p = z + torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), 0.0) * p
        rz = rz_new
    return torch.where(free, x, e_d)


def estimated_error(ph: Physics, configs: Configs, pred: np.ndarray, iterations: int | None = PCG_ITERATIONS):
    """(n, L, L) float64 error e = u - y_hat of predictions (n, L, L): from the residual by `iterations` PCG
    steps (`production`: exact, the amplitude by one unmasked solve), or (None) by one full solve."""
    if iterations is None:
        from diffcurate.solvers.registry import solve

        u = solve(ph, configs, "fast", dtype="float64", batch_size=64)  # (n, L, L) float64
        return u - np.asarray(pred, np.float64)
    if ph.source_model == "production":  # exact: the amplitude by one unmasked solve, then no discs to mind
        alpha = torch.from_numpy(paint(ph, configs, "sum", np.float64))
        peak = unmasked_solve(-ph.decay * alpha, ph).flatten(1).amax(1)[:, None, None]  # (n, 1, 1) max(u)
        return unmasked_solve(-residual_field(ph, configs, pred, peak), ph).numpy()
    return correction(ph, configs, residual_field(ph, configs, pred), iterations).numpy()
