"""The built-in Darcy problem: steady flow through a two-valued random medium, the neural-operator field's
benchmark (Li et al., Fourier Neural Operator, ICLR 2021, section 5.2), as a `Problem`.

-div(a grad u) = f on (0, 1)^2 with f = 1 and u = 0 on the boundary, on an s x s grid of nodes with the
harmonic-mean five-point scheme (darcy_solver.py). A configuration is the coefficient a on every node, 3 or 12,
stored as uint8; x is a and y is u, each on all s^2 nodes. Samplers: darcy_media.py.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.solvers import darcy_media as media
from diffcurate.solvers.interface import ArraySpec, Problem, ProblemPreset

U_UNIT = 0.0737  # max u of -Lap u = 1 on the unit square with u = 0 on its walls (to 3 digits)


@dataclass(frozen=True)
class Medium:
    """The parameters that decide the solution of a configuration (and so the identity of a sample)."""

    size: int  # s: grid nodes per side, the walls included
    low: int = 3  # a where the field is below its threshold
    high: int = 12  # a where it is above
    forcing: float = 1.0  # f
    tau: float = 3.0  # the random field's inverse length scale
    alpha: float = 2.0  # and its smoothness

    def __post_init__(self) -> None:
        if self.size < 8:
            raise InputError(f"darcy: size must be >= 8, got {self.size}")
        if not (isinstance(self.low, int) and isinstance(self.high, int) and 1 <= self.low < self.high <= 255):
            raise InputError("darcy: low and high must be integers with 1 <= low < high <= 255 (uint8 storage)")
        for name in ("forcing", "tau", "alpha"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"darcy: {name} must be > 0, got {v}")


@dataclass
class Media:
    """A batch of configurations: a (B, s, s) uint8, each node low or high."""

    a: np.ndarray

    def __len__(self) -> int:
        return int(self.a.shape[0])

    def __getitem__(self, idx) -> Media:
        return Media(self.a[np.atleast_1d(np.arange(len(self))[idx])])

    def high(self, params: Medium) -> np.ndarray:
        return self.a == params.high  # (B, s, s) bool


def _preset(name: str, size: int, notes: str, scale: str) -> ProblemPreset:
    return ProblemPreset(name, Medium(size), media.STRATA, notes, scale=scale)


PRESETS = {
    p.name: p
    for p in (
        _preset("tiny", 32, "32 x 32 nodes: for tests", "tiny"),
        _preset("small", 64, "64 x 64 nodes: trains on a CPU in minutes", "small"),
        _preset("s85", 85, "85 x 85 nodes, the FNO paper's training resolution, solved directly", "small"),
        _preset("paper", 421, "421 x 421 nodes, the FNO paper's data (which it subsampled to 85)", "paper"),
    )
}


class Darcy(Problem):
    name = "darcy"
    description = "steady Darcy flow -div(a grad u) = 1 through a two-valued random medium (the FNO benchmark)"
    citation = (
        "Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya, A. Stuart, A. Anandkumar, Fourier Neural "
        "Operator for Parametric Partial Differential Equations, ICLR (2021)"
    )
    stratum = "high tenths"
    default_preset = "small"
    channels = (1, 1)
    mixtures = ("mixed",)

    # --- identity ---------------------------------------------------------------------------------------------

    def presets(self) -> dict[str, ProblemPreset]:
        return dict(PRESETS)

    def params_to_dict(self, params: Medium) -> dict:
        return asdict(params)

    def params_from_dict(self, d: dict) -> Medium:
        names = [f.name for f in fields(Medium)]
        if not isinstance(d, dict) or set(d) != set(names):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise InputError(f"needs exactly {', '.join(names)}; got {got}")
        try:
            return Medium(
                int(d["size"]), int(d["low"]), int(d["high"]), float(d["forcing"]), float(d["tau"]), float(d["alpha"])
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"darcy: bad parameters {d!r}: {e}") from None

    def fingerprint(self, params: Medium) -> str:
        p = params
        return json.dumps(["darcy", p.size, p.low, p.high, repr(float(p.forcing)), repr(float(p.tau)), repr(p.alpha)])

    def scales(self, params: Medium) -> tuple[float, float]:
        """x is up to `high`; u is about U_UNIT f / a for a medium of one value a, so a's geometric mean."""
        return float(params.high), U_UNIT * params.forcing / math.sqrt(params.low * params.high)

    # --- configurations ---------------------------------------------------------------------------------------

    def grid(self, params: Medium) -> tuple[int, int]:
        return params.size, params.size

    def schema(self, params: Medium) -> dict[str, ArraySpec]:
        s = params.size
        return {"a": ArraySpec("uint8", (s, s), doc=f"the permeability on every node, {params.low} or {params.high}")}

    def field_docs(self, params: Medium) -> dict[str, str]:
        s = params.size
        return {
            "x": f"float32 ({s}, {s}): the permeability a on every node (x_ij = (i, j) / {s - 1}), {params.low} or "
            f"{params.high}",
            "y": f"float32 ({s}, {s}): the pressure u of -div(a grad u) = {params.forcing:g}, u = 0 on the walls "
            "(harmonic-mean five-point scheme)",
            "a": f"uint8 ({s}, {s}): the permeability a, as x",
        }

    def to_arrays(self, params: Medium, configs: Media) -> dict[str, np.ndarray]:
        return {"a": configs.a}

    def from_arrays(self, params: Medium, arrays: dict[str, np.ndarray]) -> Media:
        a = np.asarray(arrays["a"])
        s = params.size
        if a.ndim != 3 or a.shape[1:] != (s, s):
            raise InputError(f"darcy: a must have shape (n, {s}, {s}), got {a.shape}")
        bad = (a != params.low) & (a != params.high)
        if bad.any():
            b = int(np.nonzero(bad.any((1, 2)))[0][0])
            raise InputError(f"darcy: sample {b}: a must be {params.low} or {params.high} on every node")
        return Media(a.astype(np.uint8, copy=False))

    def concat(self, params: Medium, parts: list[Media]) -> Media:
        return Media(np.concatenate([p.a for p in parts]))

    def sample_ids(self, params: Medium, configs: Media) -> list[str]:
        head = self.fingerprint(params).encode()
        return [hashlib.sha256(head + np.ascontiguousarray(a).tobytes()).hexdigest()[:24] for a in configs.a]

    # --- samplers ---------------------------------------------------------------------------------------------

    def samplers(self) -> dict[str, str]:
        return {**media.DESCRIPTIONS, "mixed": "grf 60 %, each other pool family 10 % (each sample keeps its family)"}

    def held_out(self) -> tuple[str, ...]:
        return media.HELD_OUT

    def sample(self, params: Medium, sampler: str, seed: int, indices, strata=None):
        high, families = media.sample_media(
            sampler, params.size, seed, indices, tuple(strata or media.STRATA), params.tau, params.alpha
        )
        a = np.where(high, params.high, params.low).astype(np.uint8)
        return Media(a), families

    # --- physics and the model's view -------------------------------------------------------------------------

    def solve(self, params: Medium, configs: Media, device: str = "cpu") -> np.ndarray:
        from diffcurate.solvers.darcy_solver import solve_one

        out = np.zeros((len(configs), 1, params.size, params.size), np.float32)
        for b, a in enumerate(configs.a):
            out[b, 0] = solve_one(a.astype(np.float64), params.forcing)
        return out

    def reference_solve(self, params: Medium, configs: Media) -> np.ndarray:
        from diffcurate.solvers.darcy_solver import reference_solve

        return np.stack([reference_solve(a.astype(np.float64), params.forcing) for a in configs.a])[:, None]

    def encode(self, params: Medium, configs: Media) -> np.ndarray:
        return configs.a[:, None].astype(np.float32)  # (B, 1, s, s)

    def regions(self, params: Medium, configs: Media, y: np.ndarray) -> dict[str, np.ndarray]:
        """interface: nodes with a neighbour of the other value, where u bends; high, low: the other nodes."""
        high = configs.high(params)
        jump = _interface(high)
        return {"interface": jump, "high": high & ~jump, "low": ~high & ~jump}

    def strata(self, params: Medium, configs: Media) -> np.ndarray:
        return media.stratum_of(configs.high(params))

    def descriptors(self, params: Medium, configs: Media) -> dict[str, np.ndarray]:
        """The high fraction; the connected high and low clusters; the interface's share of the nodes; whether
        high permeability connects opposite walls."""
        from scipy import ndimage

        high = configs.high(params)  # (B, s, s) bool
        out = {
            "high": high.mean((1, 2)),
            "high_clusters": np.zeros(len(configs)),
            "low_clusters": np.zeros(len(configs)),
            "interface": _interface(high).mean((1, 2)),
            "percolates": np.zeros(len(configs)),
        }
        for b, h in enumerate(high):  # connected components, one medium at a time
            labels, out["high_clusters"][b] = ndimage.label(h)
            out["low_clusters"][b] = ndimage.label(~h)[1]
            spans = set(labels[0]) & set(labels[-1]) | set(labels[:, 0]) & set(labels[:, -1])
            out["percolates"][b] = float(bool(spans - {0}))
        return out

    # --- optional capabilities --------------------------------------------------------------------------------

    def mutate(self, params: Medium, configs: Media, parents, per_parent: int, rng, strata=None):
        """Each mutant flips a disc of its parent (radius 2-15 % of the side) to the other value; one that
        leaves the strata range tries a smaller disc, and at last a single node flipped the way that keeps it in."""
        lo, hi = strata or media.STRATA
        rows = np.repeat(np.asarray(parents, np.int64), per_parent)
        a = configs.a[rows].copy()
        s = params.size
        ii, jj = np.mgrid[:s, :s]
        for b in range(len(a)):
            parent = a[b].copy()
            for r in np.linspace(0.15, 0.02, 6) * s:
                ci, cj = rng.integers(0, s, 2)
                disc = (ii - ci) ** 2 + (jj - cj) ** 2 <= max(r, 1.0) ** 2
                value = params.high if rng.random() < 0.5 else params.low
                a[b] = np.where(disc, value, parent)
                if lo <= media.stratum_of(a[b][None] == params.high)[0] <= hi and (a[b] != parent).any():
                    break
            else:
                a[b] = _flip_one(parent, params, (lo, hi), rng)
        return Media(a), rows, ["flip"] * len(a)

    def residual(self, params: Medium, configs: Media, y_pred: np.ndarray) -> np.ndarray:
        """f - A u of each prediction at interior nodes, -u on the walls: (B, 1, s, s) float64."""
        from diffcurate.solvers.darcy_solver import residual

        out = np.zeros(y_pred.shape, np.float64)
        for b, a in enumerate(configs.a):
            out[b, 0] = residual(a.astype(np.float64), params.forcing, y_pred[b, 0])
        return out

    def correct(self, params: Medium, configs: Media, y_pred: np.ndarray, iterations: int | None) -> np.ndarray:
        """u - y_pred from the residual: A e = r solved exactly (None) or by Jacobi-preconditioned CG steps."""
        from diffcurate.solvers.darcy_solver import correction

        out = np.zeros(y_pred.shape, np.float64)
        for b, a in enumerate(configs.a):
            out[b, 0] = correction(a.astype(np.float64), params.forcing, y_pred[b, 0], iterations)
        return out


def _interface(high: np.ndarray) -> np.ndarray:
    """(B, s, s) bool: nodes with a 4-neighbour of the other value."""
    out = np.zeros_like(high)
    d0 = high[:, 1:] != high[:, :-1]
    d1 = high[:, :, 1:] != high[:, :, :-1]
    out[:, 1:] |= d0
    out[:, :-1] |= d0
    out[:, :, 1:] |= d1
    out[:, :, :-1] |= d1
    return out


def _flip_one(parent: np.ndarray, params: Medium, strata: tuple[int, int], rng) -> np.ndarray:
    """The parent with one node flipped: towards high if that keeps the stratum in range, else towards low."""
    lo, hi = strata
    out = parent.copy()
    for frm, to in ((params.low, params.high), (params.high, params.low)):
        where = np.argwhere(parent == frm)
        if len(where):
            i, j = where[rng.integers(len(where))]
            out[i, j] = to
            if lo <= media.stratum_of(out[None] == params.high)[0] <= hi:
                return out
            out[i, j] = frm
    return out
