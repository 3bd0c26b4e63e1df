"""Steady heat conduction in an insulated square plate, heated uniformly and cooled by disc-shaped sinks: a
diffcurate problem in one file, with its own scipy solver (docs/problems.md walks through it).

On an n x n grid of unit spacing, with the sinks' pixels held at T = 0 and no flux through the plate's edges,
every other pixel p satisfies  sum over its in-plate neighbours q of (T_p - T_q) = h,  the 5-point form of
-Lap(T) = h with insulated walls. A configuration is the sinks' centres (K of them, ragged) and the heating h.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.solvers.interface import ArraySpec, Problem, ProblemPreset


@dataclass(frozen=True)
class Plate:
    size: int  # n: pixels per side
    radius: int  # of each sink disc, in pixels

    def __post_init__(self) -> None:
        if self.size < 4 or not 0 <= self.radius < self.size // 2:
            raise InputError(f"a plate needs size >= 4 and 0 <= radius < size / 2, got {self}")


@dataclass
class Sinks:
    """A batch of configurations: centres (B, K, 2) int64 padded, count (B,) int64, heating (B,) float64."""

    centers: np.ndarray
    count: np.ndarray
    heating: np.ndarray

    def __len__(self) -> int:
        return len(self.count)

    def __getitem__(self, idx) -> Sinks:
        return Sinks(self.centers[idx], self.count[idx], self.heating[idx])


def _mask(plate: Plate, sinks: Sinks) -> np.ndarray:
    """(B, n, n) bool: the sinks' pixels."""
    n, r = plate.size, plate.radius
    ii, jj = np.mgrid[:n, :n]
    out = np.zeros((len(sinks), n, n), bool)
    for b in range(len(sinks)):
        for ci, cj in sinks.centers[b, : sinks.count[b]]:
            out[b] |= (ii - ci) ** 2 + (jj - cj) ** 2 <= r * r
    return out


def _operator(cold: np.ndarray):
    """The sparse matrix of the free pixels' equations (a 5-point graph Laplacian with the cold pixels removed)
    and each free pixel's row number (-1 for cold pixels)."""
    import scipy.sparse as sp

    n = cold.shape[0]
    row = -np.ones((n, n), np.int64)
    free = ~cold
    row[free] = np.arange(free.sum())
    rows, cols, vals = [], [], []
    diag = np.zeros(free.sum())
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        a = np.zeros((n, n), bool)  # free pixels with an in-plate neighbour in this direction
        a[max(0, -di) : n - max(0, di), max(0, -dj) : n - max(0, dj)] = True
        a &= free
        i, j = np.nonzero(a)
        diag[row[i, j]] += 1
        nb = row[i + di, j + dj]
        keep = nb >= 0  # a cold neighbour contributes T = 0
        rows.append(row[i, j][keep])
        cols.append(nb[keep])
        vals.append(-np.ones(keep.sum()))
    m = free.sum()
    a = sp.coo_matrix(
        (np.concatenate([*vals, diag]), (np.concatenate([*rows, np.arange(m)]), np.concatenate([*cols, np.arange(m)]))),
        shape=(m, m),
    )
    return a.tocsr(), row


class Heat(Problem):
    name = "heat"
    description = "steady heat conduction in an insulated plate, uniformly heated, cooled by K disc sinks"
    stratum = "sinks"
    default_preset = "tiny"
    channels = (2, 1)  # in: the sinks' mask and the heating; out: the temperature

    def presets(self) -> dict[str, ProblemPreset]:
        return {
            "tiny": ProblemPreset("tiny", Plate(16, 1), (1, 4), "16 x 16, sinks of radius 1: for tests", scale="tiny"),
            "small": ProblemPreset("small", Plate(32, 2), (1, 6), "32 x 32, sinks of radius 2"),
        }

    def params_to_dict(self, params: Plate) -> dict:
        return asdict(params)

    def params_from_dict(self, d: dict) -> Plate:
        try:
            return Plate(int(d["size"]), int(d["radius"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"bad plate {d!r}: {e}") from None

    def fingerprint(self, params: Plate) -> str:
        return json.dumps(["heat", params.size, params.radius])

    def grid(self, params: Plate) -> tuple[int, int]:
        return params.size, params.size

    def schema(self, params: Plate) -> dict[str, ArraySpec]:
        return {
            "centers": ArraySpec("int64", ("K", 2), length="count"),
            "count": ArraySpec("int64"),
            "heating": ArraySpec("float64"),
        }

    def to_arrays(self, params: Plate, configs: Sinks) -> dict[str, np.ndarray]:
        return {"centers": configs.centers, "count": configs.count, "heating": configs.heating}

    def from_arrays(self, params: Plate, arrays: dict[str, np.ndarray]) -> Sinks:
        s = Sinks(
            np.asarray(arrays["centers"], np.int64),
            np.asarray(arrays["count"], np.int64),
            np.asarray(arrays["heating"], np.float64),
        )
        inside = (s.centers >= 0) & (s.centers < params.size)
        live = np.arange(s.centers.shape[1])[None] < s.count[:, None]
        if (s.count < 1).any() or not inside.all(-1)[live].all() or not (s.heating > 0).all():
            raise InputError("heat: every configuration needs >= 1 sink inside the plate and heating > 0")
        return s

    def sample_ids(self, params: Plate, configs: Sinks) -> list[str]:
        out = []
        for b in range(len(configs)):
            sinks = sorted(map(tuple, configs.centers[b, : configs.count[b]].tolist()))
            text = self.fingerprint(params) + json.dumps([sinks, repr(float(configs.heating[b]))])
            out.append(hashlib.sha256(text.encode()).hexdigest()[:24])
        return out

    def samplers(self) -> dict[str, str]:
        return {
            "scattered": "sinks uniform over the plate",
            "clustered": "sinks within a few radii of one point",
            "edge": "sinks along one wall (held out)",
        }

    def held_out(self) -> tuple[str, ...]:
        return ("edge",)

    def sample(self, params: Plate, sampler: str, seed: int, indices, strata=None):
        if sampler not in self.samplers():
            raise InputError(f"heat: unknown sampler {sampler!r} (choose from {', '.join(self.samplers())})")
        lo, hi = strata or (1, 4)
        n, r = params.size, params.radius
        idx = np.asarray(indices, np.int64).ravel()
        centers = np.zeros((len(idx), hi, 2), np.int64)
        count, heating = np.zeros(len(idx), np.int64), np.zeros(len(idx))
        for b, i in enumerate(idx):
            rng = np.random.default_rng([int(seed), zlib.crc32(sampler.encode()), int(i)])
            k = int(rng.integers(lo, hi + 1))
            if sampler == "scattered":
                c = rng.integers(r, n - r, size=(k, 2))
            elif sampler == "clustered":
                c = np.clip(
                    rng.integers(r, n - r, size=2) + rng.integers(-3 * r - 1, 3 * r + 2, size=(k, 2)), r, n - r - 1
                )
            else:
                c = np.stack([np.full(k, r), rng.integers(r, n - r, size=k)], 1)
            centers[b, :k], count[b], heating[b] = c, k, rng.uniform(0.5, 2.0)
        return Sinks(centers, count, heating), [sampler] * len(idx)

    def solve(self, params: Plate, configs: Sinks, device: str = "cpu") -> np.ndarray:
        from scipy.sparse.linalg import spsolve

        cold = _mask(params, configs)
        out = np.zeros((len(configs), 1, params.size, params.size), np.float32)
        for b in range(len(configs)):
            a, row = _operator(cold[b])
            t = spsolve(a.tocsc(), np.full(a.shape[0], configs.heating[b]))
            out[b, 0][row >= 0] = t[row[row >= 0]]
        return out

    def reference_solve(self, params: Plate, configs: Sinks) -> np.ndarray:
        """Dense Gaussian elimination on the equations assembled pixel by pixel: independent of `_operator`."""
        n = params.size
        cold = _mask(params, configs)
        out = np.zeros((len(configs), 1, n, n))
        for b in range(len(configs)):
            free = [(i, j) for i in range(n) for j in range(n) if not cold[b, i, j]]
            at = {p: k for k, p in enumerate(free)}
            a = np.zeros((len(free), len(free)))
            for (i, j), k in at.items():
                for q in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                    if 0 <= q[0] < n and 0 <= q[1] < n:
                        a[k, k] += 1
                        if q in at:
                            a[k, at[q]] -= 1
            t = np.linalg.solve(a, np.full(len(free), configs.heating[b]))
            for (i, j), k in at.items():
                out[b, 0, i, j] = t[k]
        return out

    def encode(self, params: Plate, configs: Sinks) -> np.ndarray:
        cold = _mask(params, configs)
        heat = (~cold) * configs.heating[:, None, None]
        return np.stack([cold, heat], 1).astype(np.float32)  # (B, 2, n, n)

    def regions(self, params: Plate, configs: Sinks, y: np.ndarray) -> dict[str, np.ndarray]:
        cold = _mask(params, configs)
        return {"sinks": cold, "plate": ~cold}

    def strata(self, params: Plate, configs: Sinks) -> np.ndarray:
        return configs.count.astype(np.int64)

    def descriptors(self, params: Plate, configs: Sinks) -> dict[str, np.ndarray]:
        spread = [configs.centers[b, : configs.count[b]].std(0).mean() / params.size for b in range(len(configs))]
        return {"sinks": configs.count.astype(np.float64), "spread": np.array(spread), "heating": configs.heating}

    def mutate(self, params: Plate, configs: Sinks, parents: np.ndarray, per_parent: int, rng, strata=None):
        """Each mutant moves one sink of its parent by up to 2 radii."""
        kids = configs[np.repeat(parents, per_parent)]
        kids = Sinks(kids.centers.copy(), kids.count.copy(), kids.heating.copy())
        step = max(1, 2 * params.radius)
        for b in range(len(kids)):
            s = int(rng.integers(kids.count[b]))
            kids.centers[b, s] = np.clip(
                kids.centers[b, s] + rng.integers(-step, step + 1, 2), params.radius, params.size - params.radius - 1
            )
        return kids, np.repeat(parents, per_parent), ["move"] * len(kids)

    def residual(self, params: Plate, configs: Sinks, y_pred: np.ndarray) -> np.ndarray:
        cold = _mask(params, configs)
        out = np.zeros(y_pred.shape, np.float64)
        for b in range(len(configs)):
            a, row = _operator(cold[b])
            t = np.asarray(y_pred[b, 0], np.float64)
            r = a @ t[row >= 0] - configs.heating[b]
            out[b, 0][row >= 0] = r
            out[b, 0][cold[b]] = t[cold[b]]  # the sinks' imposed T = 0
        return out
