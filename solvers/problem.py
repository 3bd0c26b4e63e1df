"""The physics, defined once: lattice, discs, source models, painting, presets, input validation.

Everything that says what the steady diffusion-decay problem *is* lives here (docs/formats.md, "Physics"):

* an L x L lattice with unit spacing, u = 0 on the ring just outside it (absorbing boundary);
* K discs of radius R, disc k = pixels with (i-ci)^2 + (j-cj)^2 <= R^2, centre (row, col) fully inside;
* ``fixed`` (the paper's text): u = c_k on disc k (overlaps take the max), D*Lap(u) - gamma*u = 0 elsewhere;
* ``production`` (the authors' released code): D*Lap(u) - gamma*u + gamma*alpha = 0 on every pixel, with alpha the
  *sum* of the values of the discs covering a pixel; the stored target is u / max(u).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.solvers.interface import ProblemPreset

SOURCE_MODELS = ("fixed", "production")


class ProblemError(InputError):
    """Bad physics or configuration input."""


@dataclass(frozen=True)
class Physics:
    """The parameters that decide the solution of a configuration (and so the identity of a sample)."""

    lattice: int
    radius: int
    diffusion: float = 1.0
    decay: float = 1.0 / 400.0
    source_model: str = "fixed"

    def __post_init__(self) -> None:
        if self.lattice < 3:
            raise ProblemError(f"lattice must be >= 3, got {self.lattice}")
        if self.radius < 0 or 2 * self.radius + 1 > self.lattice:
            raise ProblemError(f"radius {self.radius} does not fit a {self.lattice}x{self.lattice} lattice")
        if not (self.diffusion > 0 and math.isfinite(self.diffusion)):
            raise ProblemError(f"diffusion must be > 0, got {self.diffusion}")
        if not (self.decay > 0 and math.isfinite(self.decay)):
            raise ProblemError(f"decay must be > 0, got {self.decay}")
        if self.source_model not in SOURCE_MODELS:
            raise ProblemError(f"unknown source model {self.source_model!r} (choose from {', '.join(SOURCE_MODELS)})")

    @property
    def diffusion_length(self) -> float:
        """l_D = sqrt(D / gamma), the decay length of a source's field (lattice units)."""
        return math.sqrt(self.diffusion / self.decay)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Physics:
        return cls(
            lattice=int(d["lattice"]),
            radius=int(d["radius"]),
            diffusion=float(d["diffusion"]),
            decay=float(d["decay"]),
            source_model=str(d["source_model"]),
        )

    def fingerprint(self) -> str:
        """A stable text form, used in sample ids and to refuse mixing stores of other physics."""
        return json.dumps(
            [self.lattice, self.radius, repr(float(self.diffusion)), repr(float(self.decay)), self.source_model]
        )


class Preset(ProblemPreset):
    """A named physics (`params`) plus the source-count range that sampling uses (`strata`)."""

    @property
    def physics(self) -> Physics:
        return self.params

    @property
    def sources(self) -> tuple[int, int]:
        return self.strata


def _preset(name: str, physics: Physics, sources: tuple[int, int], notes: str) -> Preset:
    """A diffusion preset, paired with the network, training and run presets of its own name (its `scale`)."""
    return Preset(name, physics, sources, notes, scale=name)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "paper",
            Physics(lattice=512, radius=5, diffusion=1.0, decay=1.0 / 400.0),
            (1, 20),
            "The seed paper: 512x512, R=5, D=1, gamma=1/400 (l_D=20), 1-20 sources.",
        ),
        _preset(
            "small",
            Physics(lattice=64, radius=2, diffusion=1.0, decay=1.0 / 64.0),
            (1, 20),
            "64x64, R=2, l_D=8: R/l_D=0.25 as in the paper, but the lattice is 8 diffusion lengths wide (paper: 25)"
            " and 20 sources cover it far more densely; trains on a CPU in minutes.",
        ),
        _preset(
            "tiny", Physics(32, 2, 1.0, 1.0 / 16.0), (1, 10), "32x32, R=2, l_D=4 (R/l_D=0.5), 1-10 sources: for tests."
        ),
    )
}


def parse_sources(text: str, least: int = 1) -> tuple[int, int]:
    """'1-20' -> (1, 20); '7-7' or '7' -> (7, 7). `least`: the smallest MIN (1 source; 0 is a stratum of other
    problems, whose own samplers then check the range)."""
    parts = str(text).strip().split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or hi is None or lo < least or hi < lo:
        raise ProblemError(f"--sources must look like MIN-MAX with {least} <= MIN <= MAX, got {text!r}")
    return lo, hi


def resolve_physics(
    preset: str = "small",
    lattice: int | None = None,
    radius: int | None = None,
    diffusion: float | None = None,
    decay: float | None = None,
    source_model: str | None = None,
    sources: str | None = None,
) -> tuple[Physics, tuple[int, int]]:
    """A preset with explicit overrides applied (every command takes the same options)."""
    if preset not in PRESETS:
        raise ProblemError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    ph = p.physics
    physics = Physics(
        lattice=ph.lattice if lattice is None else lattice,
        radius=ph.radius if radius is None else radius,
        diffusion=ph.diffusion if diffusion is None else diffusion,
        decay=ph.decay if decay is None else decay,
        source_model=ph.source_model if source_model is None else source_model,
    )
    return physics, (p.sources if sources is None else parse_sources(sources))


@functools.lru_cache(maxsize=32)
def disc_offsets(radius: int) -> np.ndarray:
    """(P, 2) int64 offsets (di, dj) of the pixels of a disc: di^2 + dj^2 <= R^2."""
    r = np.arange(-radius, radius + 1)
    di, dj = np.meshgrid(r, r, indexing="ij")
    keep = di**2 + dj**2 <= radius**2
    off = np.stack([di[keep], dj[keep]], axis=1).astype(np.int64)
    off.setflags(write=False)  # cached: shared by every caller
    return off


@dataclass
class Configs:
    """A batch of configurations. Rows k >= counts[s] are padding and ignored whatever they hold."""

    centers: np.ndarray  # (n, K, 2) int64, (row, col)
    values: np.ndarray  # (n, K) float64
    counts: np.ndarray  # (n,) int64

    def __post_init__(self) -> None:
        self.centers = np.asarray(self.centers)
        self.values = np.asarray(self.values)
        self.counts = np.asarray(self.counts)
        c, v, n = self.centers, self.values, self.counts
        if n.ndim != 1:
            raise ProblemError(f"counts must have shape (n,), got {n.shape}")
        if c.ndim != 3 or c.shape[2] != 2 or c.shape[0] != n.shape[0]:
            raise ProblemError(f"centers must have shape (n, K, 2) with n={n.shape[0]}, got {c.shape}")
        if v.shape != c.shape[:2]:
            raise ProblemError(f"values must have shape {c.shape[:2]} to match centers, got {v.shape}")
        for name, a in (("centers", c), ("counts", n)):
            if a.size and not np.issubdtype(a.dtype, np.integer):
                if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                    raise ProblemError(f"{name} must be integers")
        self.centers = c.astype(np.int64)
        self.values = v.astype(np.float64)
        self.counts = n.astype(np.int64)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def __getitem__(self, idx) -> Configs:
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return Configs(self.centers[idx], self.values[idx], self.counts[idx])

    def sample(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """The live (k, 2) centres and (k,) values of sample s."""
        k = int(self.counts[s])
        return self.centers[s, :k], self.values[s, :k]

    @staticmethod
    def from_lists(centers: list[np.ndarray], values: list[np.ndarray]) -> Configs:
        n = len(centers)
        kmax = max([len(c) for c in centers] + [1])
        c = np.zeros((n, kmax, 2), np.int64)
        v = np.zeros((n, kmax), np.float64)
        k = np.zeros(n, np.int64)
        for s, (cs, vs) in enumerate(zip(centers, values, strict=True)):
            k[s] = len(cs)
            c[s, : len(cs)] = cs
            v[s, : len(vs)] = vs
        return Configs(c, v, k)

    @staticmethod
    def concat(parts: list[Configs]) -> Configs:
        return Configs.from_lists(
            [p.sample(s)[0] for p in parts for s in range(len(p))],
            [p.sample(s)[1] for p in parts for s in range(len(p))],
        )

    def validate(self, physics: Physics) -> Configs:
        """Raise ProblemError naming the first sample that breaks the contract."""
        L, R = physics.lattice, physics.radius
        if self.centers.shape[1] < (self.counts.max() if len(self) else 0):
            raise ProblemError(f"centers hold K={self.centers.shape[1]} slots but counts ask for {self.counts.max()}")
        for s in range(len(self)):
            k = int(self.counts[s])
            if k < 1:
                raise ProblemError(f"sample {s} has {k} sources; at least 1 is required")
            c, v = self.sample(s)
            bad = np.nonzero((c < R).any(1) | (c > L - 1 - R).any(1))[0]
            if bad.size:
                ci, cj = c[bad[0]]
                raise ProblemError(
                    f"sample {s}: disc {bad[0]} at ({ci}, {cj}) is not fully inside the {L}x{L} lattice with R={R}"
                    f" (centres must lie in [{R}, {L - 1 - R}])"
                )
            if not np.all(np.isfinite(v)):
                raise ProblemError(f"sample {s}: source values must be finite")
            if physics.source_model == "fixed" and ((v < 0).any() or (v > 1).any()):
                raise ProblemError(f"sample {s}: source values must lie in [0, 1] for the fixed model")
            if physics.source_model == "production" and (v < 0).any():
                raise ProblemError(f"sample {s}: source values must be >= 0 for the production model")
        return self

    def sample_id(self, s: int, physics: Physics) -> str:
        """A stable id from physics and configuration: adding the same sample twice is a no-op.

        Discs are sorted so that the order in which they were listed does not matter."""
        c, v = self.sample(s)
        rows = sorted(zip(c[:, 0].tolist(), c[:, 1].tolist(), [repr(float(x)) for x in v], strict=True))
        h = hashlib.sha256((physics.fingerprint() + json.dumps(rows)).encode())
        return h.hexdigest()[:24]


def disc_index(physics: Physics, configs: Configs, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat pixel indices, row/col, and disc number of every (disc, pixel) pair of sample s."""
    off = disc_offsets(physics.radius)
    c, _ = configs.sample(s)
    rc = c[:, None, :] + off[None, :, :]  # (k, P, 2)
    rows, cols = rc[..., 0].ravel(), rc[..., 1].ravel()
    which = np.repeat(np.arange(len(c)), len(off))
    return rows * physics.lattice + cols, rows, which


def _scatter(physics: Physics, configs: Configs, reduce: str) -> np.ndarray:
    """(n, L*L) float64: the discs' values reduced per pixel ("amax": -inf off discs, "sum": 0 off discs).

    One vectorised scatter over the whole batch; padding rows (k >= counts[s]) never take part."""
    import torch  # here, not at the top: configs, ids and physics must stay importable without torch

    L, n, K = physics.lattice, len(configs), configs.centers.shape[1]
    off = disc_offsets(physics.radius)  # (P, 2)
    live = np.broadcast_to((np.arange(K)[None, :] < configs.counts[:, None])[:, :, None], (n, K, len(off)))
    rc = configs.centers[:, :, None, :] + off[None, None]  # (n, K, P, 2)
    flat = np.arange(n)[:, None, None] * L * L + rc[..., 0] * L + rc[..., 1]  # (n, K, P)
    vals = np.broadcast_to(configs.values[:, :, None], flat.shape)
    out = torch.full((n * L * L,), -np.inf if reduce == "amax" else 0.0, dtype=torch.float64)
    out.scatter_reduce_(0, torch.from_numpy(flat[live]), torch.from_numpy(vals[live]), reduce)
    return out.numpy().reshape(n, L * L)


def _disc_pixels(physics: Physics, configs: Configs) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel indices into (n, L*L), their disc's value): every pixel of every live disc, with repeats where
    discs overlap."""
    L, n, K = physics.lattice, len(configs), configs.centers.shape[1]
    off = disc_offsets(physics.radius)  # (P, 2)
    live = np.broadcast_to((np.arange(K)[None, :] < configs.counts[:, None])[:, :, None], (n, K, len(off)))
    rc = configs.centers[:, :, None, :] + off[None, None]  # (n, K, P, 2)
    flat = np.arange(n)[:, None, None] * L * L + rc[..., 0] * L + rc[..., 1]  # (n, K, P)
    return flat[live], np.broadcast_to(configs.values[:, :, None], flat.shape)[live]


def paint(physics: Physics, configs: Configs, mode: str | None = None, dtype=np.float32) -> np.ndarray:
    """Input images x, (n, L, L) float32 (the network's input; solvers ask for float64): disc values painted
    with max (`fixed`) or summed (`production`, where x is the production density alpha)."""
    x = _painted(physics, configs, mode, np.dtype(dtype) == np.float32, "cpu")
    return x.numpy().reshape(-1, physics.lattice, physics.lattice).astype(dtype, copy=False)


def paint_tensor(physics: Physics, configs: Configs, device=None):
    """x (n, 1, L, L) float32 painted where it is used (on the GPU, say) from the configurations alone: `paint`'s
    values, so that a data loader ships y and the configurations (a few dozen numbers) instead of x."""
    L = physics.lattice
    return _painted(physics, configs, None, True, device or "cpu").view(-1, 1, L, L).float()  # (n, 1, L, L)


def _painted(physics: Physics, configs: Configs, mode: str | None, single: bool, device):
    """The flat (n * L * L,) image on `device`. Only the disc pixels are touched, on a zeroed image: source
    values are >= 0 (Physics and the samplers check), so the max over the discs and 0 is the max over the discs;
    max commutes with rounding, so a `single` (float32) image is painted in float32 and equals the float64 one
    cast; sums add in float64."""
    import torch  # here, not at the top: configs, ids and physics must stay importable without torch

    mode = mode or ("max" if physics.source_model == "fixed" else "sum")
    work = torch.float32 if mode == "max" and single else torch.float64
    flat, vals = _disc_pixels(physics, configs)  # computed on the CPU: a few hundred indices per sample
    out = torch.zeros(len(configs) * physics.lattice**2, dtype=work, device=device)
    index, src = torch.from_numpy(flat).to(device), torch.from_numpy(vals).to(device, work)
    return out.scatter_reduce_(0, index, src, "amax" if mode == "max" else "sum")


def disc_mask(physics: Physics, configs: Configs) -> np.ndarray:
    """(n, L, L) bool: pixels covered by at least one disc (the paper's 'sources' region)."""
    L = physics.lattice
    mask = np.zeros(len(configs) * L * L, bool)
    mask[_disc_pixels(physics, configs)[0]] = True
    return mask.reshape(-1, L, L)


def fixed_values(physics: Physics, configs: Configs) -> np.ndarray:
    """(n, L, L) float64: the imposed value on disc pixels (max over overlapping discs), NaN elsewhere."""
    out = _scatter(physics, configs, "amax")
    out[np.isneginf(out)] = np.nan
    return out.reshape(-1, physics.lattice, physics.lattice)
