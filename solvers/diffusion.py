"""The built-in problem: steady diffusion-decay around disc sources (the seed paper's), as a `Problem`. Every
method delegates to the physics modules (problem.py, sampling.py, the solvers), so the problem behind the
interface is the one the rest of solvers/ defines: the same ids, samples and fields."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.solvers.interface import ArraySpec, Problem, ProblemPreset
from diffcurate.solvers.problem import PRESETS, Configs, Physics, disc_mask, paint

DEFAULT_SOURCES = (1, 20)  # the seed paper's range of source counts
# field pixels with lo <= y < hi (r1 closes at 1 and takes anything above: y is normalised to <= 1)
BANDS = {"r1": (0.2, float("inf")), "r2": (0.1, 0.2), "r3": (0.05, 0.1)}


def paper_regions(mask: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The seed paper's regions of fields y (B, H, W) with disc pixels `mask` (B, H, W) bool: sources, field,
    and the field's bands r1..r3 of y, exactly as if compared in double precision."""
    y = np.asarray(y)
    at = (lambda c: c) if y.dtype != np.float32 else _float32_bound
    field = ~mask
    out = {"sources": mask, "field": field}
    out.update({r: field & (y >= at(lo)) & (y < at(hi)) for r, (lo, hi) in BANDS.items()})
    return out


def _float32_bound(c: float) -> np.float32:
    """The least float32 >= c: for float32 y, y >= c and y < c in double precision are y >= it and y < it."""
    b = np.float32(c)
    return b if float(b) >= c else np.nextafter(b, np.float32(np.inf))


class Diffusion(Problem):
    name = "diffusion"
    description = "steady diffusion-decay around K disc sources (Toledo-Marin, Glazier and Fox, 2023)"
    citation = (
        "J. Q. Toledo-Marin, J. A. Glazier, G. Fox, Analyzing the Performance of Deep Encoder-Decoder Networks as "
        "Surrogates for a Diffusion Equation, arXiv:2302.03786 (2023)"
    )
    stratum = "sources"
    default_preset = "small"
    channels = (1, 1)
    mixtures = ("mixed",)  # the paper's uniform family and the edge cases, blended (sampling.MIXTURE)
    first_region_weight = 0.0  # true-error scores leave out the discs, whose values are the input

    def presets(self) -> dict[str, ProblemPreset]:
        return dict(PRESETS)

    def params_to_dict(self, params: Physics) -> dict:
        return params.to_dict()

    def params_from_dict(self, d: dict) -> Physics:
        """Exactly Physics' fields, numbers where numbers belong."""
        names = [f.name for f in fields(Physics)]
        if not isinstance(d, dict) or set(d) != set(names):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise InputError(f"needs exactly {', '.join(names)}; got {got}")
        try:
            return Physics.from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(str(e)) from None

    def fingerprint(self, params: Physics) -> str:
        return params.fingerprint()

    def grid(self, params: Physics) -> tuple[int, int]:
        return params.lattice, params.lattice

    def schema(self, params: Physics) -> dict[str, ArraySpec]:
        return {
            "centers": ArraySpec("int64", ("K", 2), length="counts"),  # (row, col) of each disc
            "values": ArraySpec("float64", ("K",), length="counts"),  # its source value
            "counts": ArraySpec("int64"),  # K, the number of discs
        }

    def field_docs(self, params: Physics) -> dict[str, str]:
        L = params.lattice
        return {
            "x": f"float32 ({L}, {L}): the sources painted on the lattice (disc pixels = the source value, else 0)",
            "y": f"float32 ({L}, {L}): the steady state u of D Lap u - gamma u = 0 with u = c on the discs "
            f"({params.source_model} sources), dimensionless, in [0, 1]",
            "centers": "int64 (K, 2): disc centres (row, col) in lattice units, rows >= counts are padding",
            "values": "float64 (K,): the source values c_k in [0, 1]",
            "counts": "int64: the number of sources",
        }

    def to_arrays(self, params: Physics, configs: Configs) -> dict[str, np.ndarray]:
        return {"centers": configs.centers, "values": configs.values, "counts": configs.counts}

    def from_arrays(self, params: Physics, arrays: dict[str, np.ndarray]) -> Configs:
        return Configs(arrays["centers"], arrays["values"], arrays["counts"]).validate(params)

    def concat(self, params: Physics, parts: list[Configs]) -> Configs:
        return Configs.concat(parts)

    def sample_ids(self, params: Physics, configs: Configs) -> list[str]:
        return [configs.sample_id(s, params) for s in range(len(configs))]

    def samplers(self) -> dict[str, str]:
        from diffcurate.solvers.sampling import DESCRIPTIONS

        return dict(DESCRIPTIONS)

    def held_out(self) -> tuple[str, ...]:
        from diffcurate.solvers.sampling import HELD_OUT

        return tuple(HELD_OUT)

    def sample(self, params: Physics, sampler: str, seed: int, indices, strata=None):
        from diffcurate.solvers.sampling import sample_configs

        return sample_configs(sampler, params, seed, indices, tuple(strata or DEFAULT_SOURCES))

    def solve(self, params: Physics, configs: Configs, device: str = "cpu") -> np.ndarray:
        from diffcurate.solvers.registry import solve

        # the exact FFT solver, the batch in one pass; (B, 1, L, L) float32
        return solve(params, configs, "fast", device=device, dtype="float32", batch_size=max(1, len(configs)))[:, None]

    def reference_solve(self, params: Physics, configs: Configs) -> np.ndarray:
        from diffcurate.solvers.registry import solve

        return solve(params, configs, "reference", dtype="float64")[:, None]  # sparse direct, float64

    def encode(self, params: Physics, configs: Configs) -> np.ndarray:
        return paint(params, configs)[:, None]  # (B, 1, L, L) float32: the source values on their discs

    def regions(self, params: Physics, configs: Configs, y: np.ndarray) -> dict[str, np.ndarray]:
        """sources: the disc pixels; field: every other pixel; r1..r3: field pixels in bands of y."""
        return paper_regions(disc_mask(params, configs), y[:, 0])

    def strata(self, params: Physics, configs: Configs) -> np.ndarray:
        return configs.counts.astype(np.int64)

    def descriptors(self, params: Physics, configs: Configs) -> dict[str, np.ndarray]:
        """Where a surrogate errs besides its stratum: the number of sources and its square, the mean
        nearest-neighbour distance between discs and the nearest disc's distance to a wall (in diffusion
        lengths), the spread and the sum of the source values."""
        lD, L = params.diffusion_length, params.lattice
        names = ("sources", "sources_squared", "nearest", "wall", "value_spread", "value_sum")
        out = {name: np.zeros(len(configs)) for name in names}
        for s in range(len(configs)):
            c, v = configs.sample(s)
            c = c.astype(float)
            k = len(c)
            d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(k) * 2 * L
            nn = d.min(1).mean() / lD if k > 1 else L / lD
            row = (k, k * k, min(nn, L / lD), np.minimum(c, L - 1 - c).min() / lD, v.std(), v.sum())
            for name, value in zip(names, row, strict=True):
                out[name][s] = value
        return out

    def features(self, params: Physics, configs: Configs) -> np.ndarray:
        """(n, 7): centroid (2), spread, mean value, nearest-neighbour distance, distance of the nearest disc to a
        wall, number of sources; lengths / L."""
        L = params.lattice
        out = np.zeros((len(configs), 7))
        for s in range(len(configs)):
            c, v = configs.sample(s)
            c = c.astype(float)
            d = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)) + np.eye(len(c)) * 2 * L
            wall = np.minimum(c, L - 1 - c).min()
            out[s] = [
                *c.mean(0) / L,
                c.std(0).mean() / L,
                v.mean(),
                d.min() / L if len(c) > 1 else 1.0,
                wall / L,
                len(c),
            ]
        return out

    def mutate(self, params: Physics, configs: Configs, parents, per_parent: int, rng, strata=None):
        """Move, pull together, add or drop a disc, push discs to a wall, or draw new values (mutations.py)."""
        from diffcurate.solvers.mutations import mutate

        return mutate(configs, params, parents, per_parent, tuple(strata or DEFAULT_SOURCES), rng)

    def residual(self, params: Physics, configs: Configs, y_pred: np.ndarray) -> np.ndarray:
        """The discrete problem's per-pixel residual of predicted fields (for production sources in normalised
        units, the amplitude fitted by least squares: correction.py)."""
        from diffcurate.solvers.correction import residual_field

        return residual_field(params, configs, y_pred[:, 0]).numpy()[:, None]  # (B, 1, L, L) float64

    def residual_offset(self, params: Physics, y_pred: np.ndarray) -> np.ndarray:
        from diffcurate.solvers.correction import scale_term

        return scale_term(params, y_pred[:, 0])

    def correct(self, params: Physics, configs: Configs, y_pred: np.ndarray, iterations: int | None) -> np.ndarray:
        """The error from the residual by preconditioned conjugate gradients (correction.py), or by one fast
        solve in float64 (iterations None)."""
        from diffcurate.solvers.correction import estimated_error

        return estimated_error(params, configs, y_pred[:, 0], iterations)[:, None]  # (B, 1, L, L) float64
