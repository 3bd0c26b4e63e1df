"""Seeded samplers of configurations (a registry). Configuration i depends only on (seed, sampler, i), so any
split of the index range over parallel workers generates exactly the same dataset as one worker.

Every family draws the number of sources uniformly from the requested range and gives one source the value 1
and the others U(0, 1] (the paper's rule), except `sparse-values`. The edge-case families are the ones the
paper shows the surrogate fails on.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np

from diffcurate.solvers.problem import Configs, Physics, ProblemError, disc_offsets

# name -> fn(rng, physics, k) -> (centers (k, 2) int64, values (k,) float64)
SAMPLERS: dict[str, Callable[[np.random.Generator, Physics, int], tuple[np.ndarray, np.ndarray]]] = {}
DESCRIPTIONS: dict[str, str] = {}

# `mixed`: the paper's uniform family half of the time, each edge case an eighth.
MIXTURE = {"uniform": 0.5, "clustered": 0.125, "boundary": 0.125, "overlap": 0.125, "sparse-values": 0.125}


def register(name: str, description: str):
    def deco(fn):
        SAMPLERS[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return deco


def _values(rng: np.random.Generator, k: int) -> np.ndarray:
    v = 1.0 - rng.random(k)  # U(0, 1]
    v[rng.integers(k)] = 1.0
    return v


def _uniform_centers(rng: np.random.Generator, physics: Physics, k: int) -> np.ndarray:
    R, L = physics.radius, physics.lattice
    return rng.integers(R, L - R, size=(k, 2))


@register("uniform", "the paper's: centres uniform over the lattice (discs fully inside), values U(0,1], one = 1")
def _uniform(rng, physics, k):
    return _uniform_centers(rng, physics, k), _values(rng, k)


@register("clustered", "all sources within a box of +-1.5 diffusion lengths around one random point")
def _clustered(rng, physics, k):
    R, L = physics.radius, physics.lattice
    half = max(1, round(1.5 * physics.diffusion_length))
    lo = np.clip(rng.integers(R, L - R, size=2) - half, R, L - 1 - R)
    hi = np.clip(lo + 2 * half, R, L - 1 - R)
    return rng.integers(lo, hi + 1, size=(k, 2)), _values(rng, k)


@register("boundary", "every disc touches a wall of the lattice (the absorbing boundary)")
def _boundary(rng, physics, k):
    R, L = physics.radius, physics.lattice
    c = rng.integers(R, L - R, size=(k, 2))
    wall = rng.integers(4, size=k)  # 0 top, 1 bottom, 2 left, 3 right
    axis, end = wall // 2, wall % 2
    c[np.arange(k), axis] = np.where(end == 0, R, L - 1 - R)
    return c, _values(rng, k)


@register("overlap", "each disc shares at least one pixel with an earlier disc")
def _overlap(rng, physics, k):
    R, L = physics.radius, physics.lattice
    off = disc_offsets(R)
    c = np.empty((k, 2), np.int64)
    c[0] = rng.integers(R, L - R, size=2)
    for j in range(1, k):
        p = c[rng.integers(j)] + off[rng.integers(len(off))]  # a pixel of an earlier disc ...
        cand = p - off  # ... and every centre whose disc covers it
        cand = cand[((cand >= R) & (cand <= L - 1 - R)).all(1)]
        c[j] = cand[rng.integers(len(cand))]
    return c, _values(rng, k)


@register("sparse-values", "uniform centres, one value 1, the others U(0, 0.05]: most sources almost absorbing")
def _sparse_values(rng, physics, k):
    v = 0.05 * (1.0 - rng.random(k))
    v[rng.integers(k)] = 1.0
    return _uniform_centers(rng, physics, k), v


# Held-out families: arrangements no pool draws from (`mixed` never samples them), for testing how a curated
# set generalises to users' edge cases: geometry, crowding, walls.
HELD_OUT = ("ring", "grid", "crowd", "wall-row")


def _clip_centers(c: np.ndarray, physics: Physics) -> np.ndarray:
    R, L = physics.radius, physics.lattice
    return np.clip(np.rint(c), R, L - 1 - R).astype(np.int64)


@register("ring", "held out: sources evenly spaced on a circle of radius 1-3 diffusion lengths")
def _ring(rng, physics, k):
    L, ld = physics.lattice, physics.diffusion_length
    r = rng.uniform(1.0, 3.0) * ld
    r = min(r, (L - 1) / 2 - physics.radius)
    lo, hi = physics.radius + r, L - 1 - physics.radius - r
    centre = rng.uniform(lo, hi, size=2) if hi > lo else np.full(2, (L - 1) / 2)
    phi = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(k) / k
    return _clip_centers(centre + r * np.stack([np.cos(phi), np.sin(phi)], 1), physics), _values(rng, k)


@register("grid", "held out: sources on a regular square grid with spacing 0.5-1.5 diffusion lengths")
def _grid(rng, physics, k):
    side = int(np.ceil(np.sqrt(k)))
    step = rng.uniform(0.5, 1.5) * physics.diffusion_length
    span = step * (side - 1)
    R, L = physics.radius, physics.lattice
    origin = rng.uniform(R, max(R, L - 1 - R - span), size=2)
    ij = np.stack(np.divmod(np.arange(k), side), 1).astype(float)
    return _clip_centers(origin + step * ij, physics), _values(rng, k)


@register("crowd", "held out: all sources within half a diffusion length of one point (heavy overlap)")
def _crowd(rng, physics, k):
    R, L = physics.radius, physics.lattice
    centre = rng.uniform(R, L - 1 - R, size=2)
    spread = 0.5 * physics.diffusion_length
    return _clip_centers(centre + rng.uniform(-spread, spread, size=(k, 2)), physics), _values(rng, k)


@register("wall-row", "held out: discs packed side by side along one wall (rows of touching discs)")
def _wall_row(rng, physics, k):
    R, L = physics.radius, physics.lattice
    pitch = 2 * R + 1
    per_row = max(1, (L - 2 * R) // pitch)
    start = rng.integers(0, max(1, per_row - min(k, per_row) + 1))
    slot = start + np.arange(k)
    along = R + (slot % per_row) * pitch
    across = R + (slot // per_row) * pitch
    c = np.stack([across, along], 1)
    wall = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
    if wall in (1, 3):
        c[:, 0] = L - 1 - c[:, 0]
    if wall in (2, 3):
        c = c[:, ::-1]
    return _clip_centers(c, physics), _values(rng, k)


DESCRIPTIONS["mixed"] = "weighted mixture: " + ", ".join(f"{n} {w:g}" for n, w in MIXTURE.items())


def _rng(seed: int, name: str, i: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(i)])


def sample_one(name: str, physics: Physics, seed: int, i: int, sources: tuple[int, int]):
    """Configuration i of sampler `name`: (centers, values, family actually used)."""
    rng = _rng(seed, name, i)
    family = name
    if name == "mixed":
        names = list(MIXTURE)
        family = names[rng.choice(len(names), p=np.array(list(MIXTURE.values())))]
    k = int(rng.integers(sources[0], sources[1] + 1))
    c, v = SAMPLERS[family](rng, physics, k)
    return c, v, family


def sample_configs(
    name: str, physics: Physics, seed: int, indices, sources: tuple[int, int] = (1, 20)
) -> tuple[Configs, list[str]]:
    """Configurations for the given indices of (seed, sampler), and the family of each."""
    if name not in SAMPLERS and name != "mixed":
        raise ProblemError(f"unknown sampler {name!r} (choose from {', '.join(sampler_names())})")
    lo, hi = sources
    if lo < 1 or hi < lo:
        raise ProblemError(f"bad source range {lo}-{hi}")
    draws = [sample_one(name, physics, seed, i, sources) for i in np.asarray(indices).ravel()]
    configs = Configs.from_lists([d[0] for d in draws], [d[1] for d in draws])
    return configs, [d[2] for d in draws]


def sampler_names() -> list[str]:
    return [*SAMPLERS, "mixed"]
