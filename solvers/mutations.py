"""The diffusion problem's mutations (`Problem.mutate`), for hard-case mining beyond the pool: the top-scored
candidates become configurations no sampler draws.

A random pool only holds what its samplers produce; the surrogate's worst cases may lie next to them. Each parent
(a high-scoring candidate) gives `per_parent` mutants, each made by one mutation from a registry. Every mutant is
a valid configuration (discs fully inside the lattice, source count within the run's range) and records its
parent and mutation, which the store keeps as provenance like any other sample's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from diffcurate.solvers.problem import Configs, Physics

# name -> fn(rng, physics, centers (k, 2) int64, values (k,), sources (lo, hi)) -> (centers, values), or None
# when the mutation does not apply (e.g. `add` at the largest source count)
Mutation = Callable[[np.random.Generator, Physics, np.ndarray, np.ndarray, tuple[int, int]], tuple | None]


def _inside(c: np.ndarray, physics: Physics) -> np.ndarray:
    R, L = physics.radius, physics.lattice
    return np.clip(np.rint(c), R, L - 1 - R).astype(np.int64)


def _move(rng, physics, c, v, sources):
    """Move one to all sources by about one diffusion length, each in its own direction."""
    k = len(c)
    which = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)
    phi = rng.uniform(0, 2 * np.pi, size=len(which))
    step = physics.diffusion_length * rng.uniform(0.5, 1.5, size=len(which))
    c = c.astype(float)
    c[which] += step[:, None] * np.stack([np.cos(phi), np.sin(phi)], 1)
    return _inside(c, physics), v


def _pull(rng, physics, c, v, sources):
    """Pull every source towards the centroid (crowding)."""
    if len(c) < 2:
        return None
    m = c.mean(0)
    return _inside(m + rng.uniform(0.2, 0.7) * (c - m), physics), v


def _add(rng, physics, c, v, sources):
    """One more source, near an existing one (within a diffusion length)."""
    if len(c) >= sources[1]:
        return None
    near = c[rng.integers(len(c))] + rng.uniform(-1, 1, size=2) * physics.diffusion_length
    return np.concatenate([c, _inside(near[None], physics)]), np.append(v, 1.0 - rng.random())


def _drop(rng, physics, c, v, sources):
    """One source fewer (the value-1 source stays if it can)."""
    if len(c) <= sources[0]:
        return None
    keep = np.ones(len(c), bool)
    cand = np.nonzero(v < v.max())[0] if (v < v.max()).any() else np.arange(len(c))
    keep[rng.choice(cand)] = False
    return c[keep], v[keep]


def _wall(rng, physics, c, v, sources):
    """Push one to all discs against their nearest wall (touching it)."""
    R, L = physics.radius, physics.lattice
    c = c.copy()
    which = rng.choice(len(c), size=int(rng.integers(1, len(c) + 1)), replace=False)
    for s in which:
        d = np.array([c[s, 0] - R, L - 1 - R - c[s, 0], c[s, 1] - R, L - 1 - R - c[s, 1]])
        w = int(np.argmin(d))
        c[s, w // 2] = R if w % 2 == 0 else L - 1 - R
    return c, v


def _values(rng, physics, c, v, sources):
    """Resample the values: U(0, 1], one of them 1 (the samplers' rule)."""
    v = 1.0 - rng.random(len(c))
    v[rng.integers(len(c))] = 1.0
    return c, v


MUTATIONS: dict[str, Mutation] = {
    "move": _move,
    "pull": _pull,
    "add": _add,
    "drop": _drop,
    "wall": _wall,
    "values": _values,
}


def mutate(
    configs: Configs,
    physics: Physics,
    parents: np.ndarray,
    per_parent: int,
    sources: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[Configs, np.ndarray, list[str]]:
    """`per_parent` mutants of each parent row: (mutants, parent row of each (m,) int64, mutation of each)."""
    names = list(MUTATIONS)
    cs, vs, parent, how = [], [], [], []
    for p in np.asarray(parents, np.int64):
        c0, v0 = configs.sample(int(p))
        for _ in range(per_parent):
            for name in rng.permutation(names):  # the first mutation that applies
                out = MUTATIONS[str(name)](rng, physics, c0.astype(np.int64), v0.astype(np.float64), sources)
                if out is not None:
                    cs.append(out[0])
                    vs.append(out[1])
                    parent.append(int(p))
                    how.append(str(name))
                    break
    if not cs:
        return (
            Configs(np.zeros((0, 1, 2), np.int64), np.zeros((0, 1)), np.zeros(0, np.int64)),
            np.zeros(0, np.int64),
            [],
        )
    return Configs.from_lists(cs, vs).validate(physics), np.array(parent, np.int64), how
