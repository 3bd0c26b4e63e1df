"""One interface for every solver: (physics, configs) -> (B, L, L) target fields, behind a name registry."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from diffcurate.common.device import resolve_device
from diffcurate.solvers.problem import Configs, Physics, ProblemError
from diffcurate.solvers.threads import set_threads  # noqa: F401  (re-exported for the actors)

# name -> fn(physics, configs, device, dtype) -> (B, L, L) tensor of *unnormalised* fields u
SOLVERS: dict[str, Callable[..., torch.Tensor]] = {}


def load_solvers() -> None:
    """Register the solvers (on first use, not at `import diffcurate.solvers`: torch and scipy take ~2 s to
    import, and most processes that use configurations never solve)."""
    if SOLVERS:
        return
    from diffcurate.solvers import fast, reference, timestep

    SOLVERS.update(fast=fast.solve_fast, reference=reference.solve_reference, timestep=timestep.solve_timestep)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in table:
        raise ProblemError(f"unknown dtype {dtype!r} (choose float32 or float64)")
    return table[dtype]


def normalise(u: torch.Tensor, physics: Physics) -> torch.Tensor:
    """The stored target: u itself (`fixed`) or u / max(u) per sample (`production`)."""
    if physics.source_model == "production":
        peak = u.amax(dim=(-2, -1), keepdim=True)
        return u / torch.where(peak > 0, peak, torch.ones_like(peak))
    return u


def check_request(
    solver: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float64"
) -> tuple[torch.device, torch.dtype]:
    """ProblemError for an unknown solver, device or dtype (callers check before they start a progress bar)."""
    load_solvers()
    if solver not in SOLVERS:
        raise ProblemError(f"unknown solver {solver!r} (choose from {', '.join(SOLVERS)})")
    return (resolve_device(device) if isinstance(device, str) else device), resolve_dtype(dtype)


def solve(
    physics: Physics,
    configs: Configs,
    solver: str = "fast",
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float64",
    batch_size: int = 16,
    normalised: bool = True,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Solve every configuration; returns (n, L, L) numpy in `dtype`. Validates the configurations first."""
    dev, dt = check_request(solver, device, dtype)
    configs.validate(physics)
    out = np.empty((len(configs), physics.lattice, physics.lattice), dtype=torch.empty(0, dtype=dt).numpy().dtype)
    for start in range(0, len(configs), max(1, batch_size)):
        part = configs[start : start + batch_size]
        u = SOLVERS[solver](physics, part, device=dev, dtype=dt)
        if normalised:
            u = normalise(u, physics)
        out[start : start + len(part)] = u.cpu().numpy()
        if progress:
            progress(len(part))
    return out
