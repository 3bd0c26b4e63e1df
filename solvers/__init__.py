"""diffcurate physics and solvers: numpy, scipy and torch only (no training, storage, Ray or CLI).

Configurations, physics and sample ids import without torch or scipy (a generator actor, `curate info` and
the CLI's start-up need only those); the solvers register when the registry is first asked for them."""

from diffcurate.solvers.problem import PRESETS, Configs, Physics, ProblemError, paint, resolve_physics


def __getattr__(name: str):
    if name in ("SOLVERS", "solve"):
        from diffcurate.solvers import registry

        registry.load_solvers()
        return getattr(registry, name)
    raise AttributeError(f"module 'solvers' has no attribute {name!r}")


__all__ = ["PRESETS", "SOLVERS", "Configs", "Physics", "ProblemError", "paint", "resolve_physics", "solve"]
