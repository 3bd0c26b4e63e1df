"""Seeded samplers of two-valued permeability fields for the Darcy problem.

Every family returns a binary medium: True where a takes the high value (12) and False where it takes the low
one (3). `grf` is the FNO paper's data: the sign of a Gaussian random field mu ~ N(0, (-Lap + tau^2 I)^(-alpha))
with zero-Neumann walls, drawn from its cosine series as the paper's GRF.m does. The edge families are media
that the FNO data rarely or never holds: a connected channel, few inclusions, layers, a threshold off zero
(mostly low or mostly high). Two families no pool draws test generalisation: a checkerboard and cracks.

A stratum is the tenth of the domain that is high: 0 for a high fraction below 0.1, ..., 9 from 0.9.
Medium i depends only on (seed, sampler, i, size): a draw outside the requested strata is drawn again from
the next attempt's stream; after `ATTEMPTS` draws, the last one's threshold moves to the quantile that puts its
high fraction at the middle of a stratum of the range, drawn from the same stream (a faint random field added to
the latent breaks its ties).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from diffcurate.common.errors import InputError

STRATA = (0, 9)  # tenths of high permeability
ATTEMPTS = 64  # draws per medium before the threshold moves
# `mixed`: the FNO data most of the time, each edge family a tenth
MIXTURE = {"grf": 0.6, "channel": 0.1, "inclusions": 0.1, "layered": 0.1, "offset": 0.1}
HELD_OUT = ("checker", "cracks")

# name -> fn(rng, s, tau, alpha) -> a latent field (s, s) float64; the medium is latent >= 0
FAMILIES: dict[str, Callable[[np.random.Generator, int, float, float], np.ndarray]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    def deco(fn):
        FAMILIES[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return deco


def grf(rng: np.random.Generator, s: int, tau: float = 3.0, alpha: float = 2.0) -> np.ndarray:
    """mu (s, s): a draw of N(0, (-Lap + tau^2 I)^(-alpha)) with zero-Neumann walls on the unit square, from its
    cosine series (the eigenfunctions cos(pi k1 x) cos(pi k2 y), eigenvalues pi^2 |k|^2), the mean mode removed,
    on the cell centres of an s x s grid; the coefficient scaling of the FNO data's GRF.m."""
    from scipy.fft import idctn

    k = np.arange(s)
    k1, k2 = np.meshgrid(k, k, indexing="ij")
    coef = tau ** (alpha - 1) * (np.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha / 2)
    modes = s * coef * rng.standard_normal((s, s))
    modes[0, 0] = 0.0
    return idctn(modes, norm="ortho")


def _coords(s: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, s)
    return np.meshgrid(t, t, indexing="ij")  # (x rows, y cols), each (s, s)


@register("grf", "the FNO data: a = 12 where a Gaussian random field (tau 3, alpha 2) is >= 0, else 3")
def _grf(rng, s, tau, alpha):
    return grf(rng, s, tau, alpha)


@register("channel", "the FNO data crossed wall to wall by a meandering high-permeability channel")
def _channel(rng, s, tau, alpha):
    mu = grf(rng, s, tau, alpha)
    x, y = _coords(s)
    along, across = (x, y) if rng.random() < 0.5 else (y, x)
    centre = rng.uniform(0.2, 0.8) + rng.uniform(0.0, 0.15) * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * along)
    width = rng.uniform(0.03, 0.08) + 0.5 / (s - 1)
    inside = np.abs(across - centre) <= width / 2
    return np.where(inside, np.abs(mu) + 1.0, mu)


@register("inclusions", "one value everywhere but 1-5 small discs of the other")
def _inclusions(rng, s, tau, alpha):
    x, y = _coords(s)
    background = -1.0 if rng.random() < 0.5 else 1.0
    out = np.full((s, s), background)
    for _ in range(int(rng.integers(1, 6))):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.12) + 0.5 / (s - 1)
        out[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = -background
    return out


@register("layered", "2-8 straight layers at a random angle, alternating 3 and 12")
def _layered(rng, s, tau, alpha):
    x, y = _coords(s)
    angle = rng.uniform(0, np.pi)
    t = x * np.cos(angle) + y * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    edges = np.sort(rng.uniform(0, 1, int(rng.integers(1, 8))))
    layer = np.searchsorted(edges, t)
    return np.where(layer % 2 == (0 if rng.random() < 0.5 else 1), 1.0, -1.0)


@register("offset", "the FNO data thresholded off zero: mostly 3 or mostly 12")
def _offset(rng, s, tau, alpha):
    mu = grf(rng, s, tau, alpha)
    q = rng.uniform(0.03, 0.25) if rng.random() < 0.5 else rng.uniform(0.75, 0.97)
    return mu - np.quantile(mu, q)


@register("checker", "a checkerboard of 2-6 blocks a side (held out)")
def _checker(rng, s, tau, alpha):
    x, y = _coords(s)
    n = int(rng.integers(2, 7))
    bi, bj = np.minimum((x * n).astype(int), n - 1), np.minimum((y * n).astype(int), n - 1)
    return np.where((bi + bj) % 2 == int(rng.integers(2)), 1.0, -1.0)


@register("cracks", "the FNO data cut by 1-4 thin straight low-permeability cracks (held out)")
def _cracks(rng, s, tau, alpha):
    mu = grf(rng, s, tau, alpha)
    x, y = _coords(s)
    for _ in range(int(rng.integers(1, 5))):
        angle, (cx, cy) = rng.uniform(0, np.pi), rng.uniform(0.2, 0.8, 2)
        dist = np.abs((x - cx) * np.sin(angle) - (y - cy) * np.cos(angle))
        along = np.abs((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle))
        crack = (dist <= 0.5 / (s - 1) + 0.01) & (along <= rng.uniform(0.15, 0.4))
        mu = np.where(crack, -np.abs(mu) - 1.0, mu)
    return mu


def sampler_names() -> list[str]:
    return [*FAMILIES, "mixed"]


def stratum_of(high: np.ndarray) -> np.ndarray:
    """(B,) int64: the tenth of each medium (B, s, s) bool that is high, 0..9."""
    frac = high.reshape(len(high), -1).mean(1)
    return np.minimum((frac * 10).astype(np.int64), 9)


def sample_media(
    name: str, s: int, seed: int, indices, strata: tuple[int, int] = STRATA, tau: float = 3.0, alpha: float = 2.0
) -> tuple[np.ndarray, list[str]]:
    """(B, s, s) bool media for the indices of (seed, sampler), and the family of each."""
    if name not in FAMILIES and name != "mixed":
        raise InputError(f"unknown sampler {name!r} (choose from {', '.join(sampler_names())})")
    lo, hi = strata
    if not STRATA[0] <= lo <= hi <= STRATA[1]:
        raise InputError(f"darcy strata are tenths of high permeability, {STRATA[0]}-{STRATA[1]}; got {lo}-{hi}")
    idx = np.asarray(indices, np.int64).ravel()
    out = np.zeros((len(idx), s, s), bool)
    families = []
    for b, i in enumerate(idx):
        out[b], family = _one(name, s, seed, int(i), (lo, hi), tau, alpha)
        families.append(family)
    return out, families


def _one(name, s, seed, i, strata, tau, alpha) -> tuple[np.ndarray, str]:
    lo, hi = strata
    for attempt in range(ATTEMPTS):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), i, attempt])
        family = name
        if name == "mixed":
            family = str(rng.choice(list(MIXTURE), p=list(MIXTURE.values())))
        latent = FAMILIES[family](rng, s, tau, alpha)
        high = latent >= 0
        if lo <= stratum_of(high[None])[0] <= hi:
            return high, family
    # the last draw, its threshold moved into the range; a faint random field breaks the ties of two-valued latents
    latent = latent + 1e-3 * grf(rng, s, tau, alpha)
    target = (rng.integers(lo, hi + 1) + 0.5) / 10
    return latent >= np.quantile(latent, 1.0 - target), family
