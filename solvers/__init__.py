"""diffcurate physics and solvers: numpy, scipy and torch only (no training, storage, Ray or CLI)."""

from solvers import fast, reference, timestep  # noqa: F401  (register the solvers)
from solvers.problem import PRESETS, Configs, Physics, ProblemError, paint, resolve_physics
from solvers.registry import SOLVERS, solve

__all__ = ["PRESETS", "SOLVERS", "Configs", "Physics", "ProblemError", "paint", "resolve_physics", "solve"]
