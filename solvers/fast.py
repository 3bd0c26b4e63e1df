"""`fast`: an exact solver in torch (CPU or CUDA, float32 or float64, batched).

The operator A = D*Lap - gamma with a zero ring outside the L x L lattice is diagonalised by the 2-D DST-I, which
we apply as a real FFT of the odd extension (period N = 2(L+1)): one unmasked solve costs two FFTs.

Fixed-value discs (`fixed` model) are handled exactly by a capacitance-matrix correction. Let B be the disc
pixels that touch a free pixel. Put unknown point sources f on B only, u = A^-1 f; then A u = 0 everywhere off
B, in particular on every free pixel, and the free-pixel equations see only free and B pixels. Choosing f so
that u = c on B (the m x m system G[B, B] f = c_B, m ~ 4*pi*R per disc) therefore gives the exact solution on the
free pixels; the disc interiors are then set to their values. G[p, q] = (A^-1)[p, q] is read from one periodic
Green's table g (N x N, from one inverse FFT of 1/lambda) plus its 3 mirror images (method of images), so the
capacitance matrix costs m^2 table look-ups instead of m unmasked solves.

The `production` model is a single unmasked solve: A u = -gamma * alpha.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft as sfft
import torch

from diffcurate.solvers.problem import Configs, Physics, disc_index, paint
from diffcurate.solvers.threads import fft_workers


@functools.lru_cache(maxsize=16)
def _spectrum(L: int, D: float, gamma: float, device: str, dtype: torch.dtype):
    """1/lambda on the rfft2 grid of the N x N torus, and the periodic Green's table g = ifft2(1/lambda)."""
    N = 2 * (L + 1)
    k = torch.arange(N, dtype=torch.float64)
    c = 2.0 * torch.cos(2.0 * math.pi * k / N) - 2.0
    lam = D * (c[:, None] + c[None, :]) - gamma  # (N, N), all < 0 since gamma > 0
    inv = 1.0 / lam
    g = torch.fft.ifft2(inv).real  # (N, N) float64, even in both axes
    inv_r = inv[:, : N // 2 + 1]
    return inv_r.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype), N


def unmasked_solve(f: torch.Tensor, physics: Physics, backend: str | None = None) -> torch.Tensor:
    """u = A^-1 f with zero Dirichlet ring. f: (B, L, L) -> (B, L, L), same dtype and device.

    backend "scipy" (default on CPU): pocketfft's real DST-I, multithreaded: measured 2-4x faster here than
    torch's FFT of the odd extension. backend "torch" (default on CUDA): rfft2 of the odd extension.
    """
    backend = backend or ("scipy" if f.device.type == "cpu" else "torch")
    L = physics.lattice
    if backend == "scipy":
        a = f.detach().numpy()
        inv = _dst_inverse_eigenvalues(L, physics.diffusion, physics.decay, a.dtype.str)
        w = fft_workers()
        u = sfft.dstn(a, type=1, axes=(1, 2), workers=w)  # a new array: scaled and transformed in place
        u *= inv
        u = sfft.dstn(u, type=1, axes=(1, 2), workers=w, overwrite_x=True)
        return torch.from_numpy(u.astype(a.dtype, copy=False))
    inv_r, _, N = _spectrum(L, physics.diffusion, physics.decay, str(f.device), f.dtype)
    ext = torch.zeros((f.shape[0], N, N), dtype=f.dtype, device=f.device)
    # odd extension about index 0 and L+1 (the absorbing ring) in both axes
    ext[:, 1 : L + 1, 1 : L + 1] = f
    ext[:, L + 2 :, 1 : L + 1] = -f.flip(1)
    ext[:, 1 : L + 1, L + 2 :] = -f.flip(2)
    ext[:, L + 2 :, L + 2 :] = f.flip(1).flip(2)
    u = torch.fft.irfft2(torch.fft.rfft2(ext) * inv_r, s=(N, N))
    return u[:, 1 : L + 1, 1 : L + 1]


@functools.lru_cache(maxsize=16)
def _dst_inverse_eigenvalues(L: int, D: float, gamma: float, dtype: str = "<f8") -> np.ndarray:
    """1 / lambda_{k1,k2} in the DST-I basis, with the (2(L+1))^2 normalisation of two unnormalised DST-Is.

    Computed in float64, returned in the field's dtype: a float64 table would promote a float32 solve's second
    DST to float64 (measured at L = 512: 15.8 -> 12.9 ms a sample with the cast, max error unchanged)."""
    c = 2.0 * np.cos(np.pi * np.arange(1, L + 1) / (L + 1)) - 2.0
    lam = D * (c[:, None] + c[None, :]) - gamma
    inv = (1.0 / (lam * (2.0 * (L + 1)) ** 2)).astype(dtype)
    inv.setflags(write=False)  # cached: shared by every solve
    return inv


def _disc_boundary(physics: Physics, configs: Configs, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample s's disc pixels as flat indices (sorted, unique), their imposed values (max over overlapping
    discs), and the mask of B: those with a free 4-neighbour (neighbours outside the lattice are not free).

    Works on the ~R^2 * K disc pixels and one (L+2)^2 bool occupancy grid, never on (n, L, L) float fields:
    at L = 512 the full-lattice masks took ~1.5 ms a sample and memory bandwidth that a second solver shares."""
    L = physics.lattice
    flat, _, which = disc_index(physics, configs, s)
    vals = configs.sample(s)[1][which]
    order = np.lexsort((vals, flat))  # by pixel, then value: the last of each run of a pixel is its max
    flat, vals = flat[order], vals[order]
    last = np.ones(len(flat), bool)
    last[:-1] = flat[1:] != flat[:-1]
    flat, vals = flat[last], vals[last]
    r, c = flat // L + 1, flat % L + 1  # in the grid padded by the ring outside the lattice
    occ = np.ones((L + 2, L + 2), bool)
    occ[1:-1, 1:-1] = False
    occ[r, c] = True
    inner = occ[r - 1, c] & occ[r + 1, c] & occ[r, c - 1] & occ[r, c + 1]
    return flat, vals, ~inner


def _green(rows_p, cols_p, rows_q, cols_q, g_flat: torch.Tensor, N: int) -> torch.Tensor:
    """Dirichlet Green's function G[p, q] by the method of images (index tensors broadcast; g_flat is the
    (N*N,) periodic table, read with flat `take`, ~2x faster than 2-D advanced indexing). Rows and columns lie in
    [0, L), so |p - q| < N and p + q + 2 <= 2L < N: with g even, no index needs a modulo (a third faster)."""
    di, si = (rows_p - rows_q).abs_() * N, (rows_p + rows_q + 2) * N
    dj, sj = (cols_p - cols_q).abs_(), cols_p + cols_q + 2
    return g_flat.take(di + dj) - g_flat.take(si + dj) - g_flat.take(di + sj) + g_flat.take(si + sj)


def solve_fast(physics: Physics, configs: Configs, device="cpu", dtype=torch.float64) -> torch.Tensor:
    device = torch.device(device)
    L, n = physics.lattice, len(configs)
    if physics.source_model == "production":
        alpha = torch.as_tensor(paint(physics, configs, "sum", np.float64), dtype=dtype, device=device)
        return unmasked_solve(-physics.decay * alpha, physics)

    _, g, N = _spectrum(L, physics.diffusion, physics.decay, str(device), dtype)
    g_flat = g.reshape(-1)  # (N*N,) periodic Green's table
    discs = [_disc_boundary(physics, configs, s) for s in range(n)]  # (flat, values, on B) per sample
    src = torch.zeros((n, L * L), dtype=dtype, device=device)  # point sources on B, zero elsewhere
    for s, (flat, vals, on_b) in enumerate(discs):
        # one system per sample, of its own size: padding a batch to its largest B cost ~4x in Cholesky
        bt = torch.as_tensor(flat[on_b], device=device)
        r, c = bt // L, bt % L
        G = _green(r[:, None], c[:, None], r[None, :], c[None, :], g_flat, N)  # (k, k)
        # -G is symmetric positive definite (A is negative definite), so Cholesky is exact and cheaper than LU
        rhs = torch.as_tensor(vals[on_b], dtype=dtype, device=device).unsqueeze(-1)
        src[s, bt] = torch.cholesky_solve(rhs, torch.linalg.cholesky(-G)).squeeze(-1).neg_()  # strengths f
    u = unmasked_solve(src.reshape(n, L, L), physics).reshape(n * L * L)
    at = torch.as_tensor(np.concatenate([s * L * L + flat for s, (flat, _, _) in enumerate(discs)]), device=device)
    u[at] = torch.as_tensor(np.concatenate([v for _, v, _ in discs]), dtype=dtype, device=device)  # disc values
    return u.reshape(n, L, L)
