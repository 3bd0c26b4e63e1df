"""Which problems exist: the built-in ones, and those that installed packages declare under the entry-point
group `diffcurate.problems` (docs/problems.md); and `Guarded`, a problem whose every answer is checked against
its own declarations, so that a plugin's fault is one line naming the plugin and the method."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, version

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.solvers.darcy import Darcy
from diffcurate.solvers.diffusion import Diffusion
from diffcurate.solvers.interface import Problem, Task
from diffcurate.solvers.problem import Physics

GROUP = "diffcurate.problems"
BUILT_IN: dict[str, type[Problem]] = {"diffusion": Diffusion, "darcy": Darcy}


@dataclass(frozen=True)
class Found:
    """A problem the registry knows: where it comes from, and the problem itself or why it would not load."""

    name: str
    package: str
    version: str
    problem: Problem | None = None
    error: str | None = None


@functools.cache
def _own_version() -> str:
    try:
        return version("diffcurate")
    except PackageNotFoundError:
        return "0"


def find_problems() -> dict[str, Found]:
    """Every problem: the built-ins first, then each entry point of `GROUP` (one that fails to load, or names
    itself otherwise than its entry point, is kept with its error, so that listings can show it; a name taken
    already stays with its first holder)."""
    found = {n: Found(n, "diffcurate", _own_version(), cls()) for n, cls in BUILT_IN.items()}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        package = ep.dist.name if ep.dist is not None else "?"
        ver = ep.dist.version if ep.dist is not None else "?"
        if ep.name in found:  # a built-in's name, or one an earlier package took: the first keeps it
            continue
        try:
            cls = ep.load()
            problem = cls()
            if not isinstance(problem, Problem):
                raise TypeError(f"{ep.value} is not a diffcurate Problem")
            if problem.name != ep.name:
                raise TypeError(f"it calls itself {problem.name!r}, its entry point {ep.name!r}")
            found[ep.name] = Found(ep.name, package, ver, problem)
        except Exception as e:  # a broken plugin must not take the others down
            found[ep.name] = Found(ep.name, package, ver, error=f"{type(e).__name__}: {e}")
    return found


_LOADED: dict[str, Found] = {}  # the problems this process has used, loaded once


def _found(name: str) -> Found | None:
    if name not in _LOADED:
        if name in BUILT_IN:  # no plugin can take a built-in's name: no entry point to read
            _LOADED[name] = Found(name, "diffcurate", _own_version(), BUILT_IN[name]())
        else:
            f = find_problems().get(name)
            if f is None or f.problem is None:
                return f
            _LOADED[name] = f
    return _LOADED[name]


def get_problem(name: str, package: str | None = None) -> Problem:
    """The problem registered as `name` (loaded once per process); one InputError if it is not installed
    (naming the package that data recorded, when known) or does not load."""
    f = _found(name)
    if f is None:
        where = f" (from the package {package})" if package else ""
        raise InputError(
            f"problem {name!r}{where} is not installed; installed: {', '.join(find_problems())} (a plugin package "
            f"declares its problem under the entry-point group {GROUP})"
        )
    if f.problem is None:
        raise InputError(f"problem {name!r} ({f.package} {f.version}) does not load: {f.error}")
    return f.problem if name in BUILT_IN else Guarded(f.problem, f"{f.package} {f.version}")


def check_problem(name: str, params) -> None:
    """One line (InputError) if a plugin problem's answers break its declarations on a few configurations
    (`Guarded.check`); built-in problems are tested with the package."""
    problem = get_problem(name)
    if isinstance(problem, Guarded):
        problem.check(params)


def provenance(name: str) -> dict:
    """{name, package, version} of an installed problem: what stores, runs and exports record."""
    get_problem(name)
    f = _LOADED[name]
    return {"name": f.name, "package": f.package, "version": f.version}


class Guarded:
    """A problem whose answers are checked against its own declarations (`schema`, `channels`, `grid`): a
    method that raises, or answers with the wrong shape, dtype or channel count, or with NaN, is one InputError
    naming the problem and the method, before anything reaches a store."""

    def __init__(self, problem: Problem, package: str = "?"):
        self.problem, self.package = problem, package

    def _fail(self, method: str, why: str):
        return InputError(f"problem {self.problem.name!r} ({self.package}): {method} {why}")

    def _call(self, method: str, *args):
        try:
            return getattr(self.problem, method)(*args)
        except InputError:
            raise
        except Exception as e:
            raise self._fail(method, f"raised {type(e).__name__}: {e}") from None

    def _field(self, method: str, a, n: int, channels: int, grid: tuple[int, int], dtype) -> np.ndarray:
        if not isinstance(a, np.ndarray):
            raise self._fail(method, f"returned {type(a).__name__}, not a numpy array")
        want = (n, channels, *grid)
        if a.shape != want:
            raise self._fail(method, f"returned shape {a.shape}, expected {want} (B, C, H, W)")
        if a.dtype != dtype:
            raise self._fail(method, f"returned dtype {a.dtype}, expected {np.dtype(dtype)}")
        if not np.isfinite(a).all():
            raise self._fail(method, "returned NaN or inf")
        return a

    def sample(self, params, sampler: str, seed: int, indices, strata=None):
        configs, families = self._call("sample", params, sampler, seed, indices, strata)
        n = len(np.asarray(indices).ravel())
        arrays = self._call("to_arrays", params, configs)
        for key, spec in self.problem.schema(params).items():
            a = arrays.get(key) if isinstance(arrays, dict) else None
            if a is None:
                raise self._fail("sample", f"gave configurations without the schema's array {key!r}")
            fixed = tuple(d for d in spec.shape if isinstance(d, int))
            if len(a) != n or a.ndim != 1 + len(spec.shape) or a.dtype != np.dtype(spec.dtype):
                raise self._fail(
                    "sample",
                    f"gave {key!r} as {a.dtype} {a.shape}; the schema declares {spec.dtype} (B, *{spec.shape})",
                )
            if fixed and tuple(a.shape[1 + i] for i, d in enumerate(spec.shape) if isinstance(d, int)) != fixed:
                raise self._fail("sample", f"gave {key!r} of shape {a.shape}; the schema declares (B, *{spec.shape})")
        if len(families) != n:
            raise self._fail("sample", f"gave {len(families)} families for {n} configurations")
        return configs, families

    def solve(self, params, configs, device: str = "cpu") -> np.ndarray:
        y = self._call("solve", params, configs, device)
        return self._field("solve", y, len(configs), self.problem.channels[1], self.problem.grid(params), np.float32)

    def encode(self, params, configs) -> np.ndarray:
        x = self._call("encode", params, configs)
        return self._field("encode", x, len(configs), self.problem.channels[0], self.problem.grid(params), np.float32)

    def regions(self, params, configs, y) -> dict[str, np.ndarray]:
        r = self._call("regions", params, configs, y)
        want = (len(configs), *self.problem.grid(params))
        if not isinstance(r, dict) or any(
            not isinstance(m, np.ndarray) or m.dtype != bool or m.shape != want for m in r.values()
        ):
            raise self._fail("regions", f"must return {{name: {want} bool array}}")
        return r

    def sample_ids(self, params, configs) -> list[str]:
        ids = self._call("sample_ids", params, configs)
        if len(ids) != len(configs) or not all(isinstance(i, str) and i for i in ids):
            raise self._fail("sample_ids", f"returned {len(ids)} ids for {len(configs)} configurations")
        return list(ids)

    def from_arrays(self, params, arrays):
        return self._call("from_arrays", params, arrays)

    def to_arrays(self, params, configs) -> dict:
        return self._call("to_arrays", params, configs)

    def residual(self, params, configs, y_pred) -> np.ndarray:
        r = self._call("residual", params, configs, y_pred)
        return self._field("residual", r, len(configs), self.problem.channels[1], self.problem.grid(params), np.float64)

    def correct(self, params, configs, y_pred, iterations) -> np.ndarray:
        e = self._call("correct", params, configs, y_pred, iterations)
        return self._field("correct", e, len(configs), self.problem.channels[1], self.problem.grid(params), np.float64)

    def check(self, params) -> None:
        """A few configurations through every method the curation needs before anything is solved or written:
        what a run and `generate` ask of a plugin first, so that a fault is one line before any work."""
        sampler = self.problem.pool_sampler()
        configs, _ = self.sample(params, sampler, 0, range(2))
        configs = self.from_arrays(params, self.to_arrays(params, configs))
        self.sample_ids(params, configs)
        self.strata(params, configs)
        self.encode(params, configs)
        self.regions(params, configs, np.zeros((2, self.problem.channels[1], *self.problem.grid(params)), np.float32))

    def strata(self, params, configs) -> np.ndarray:
        s = self._call("strata", params, configs)
        if not isinstance(s, np.ndarray) or s.shape != (len(configs),) or s.dtype.kind not in "iu":
            raise self._fail(
                "strata",
                f"returned {getattr(s, 'dtype', type(s).__name__)} {getattr(s, 'shape', '')}, "
                f"expected ({len(configs)},) integers",
            )
        return s

    def __getattr__(self, name: str):  # everything else, unchecked
        if name.startswith("__") or "problem" not in self.__dict__:  # (unpickling: not set up yet)
            raise AttributeError(name)
        return getattr(self.problem, name)


def as_task(physics) -> Task | None:
    """A `Task` as it is, or the diffusion problem's task for a diffusion `Physics` (what code written for the
    diffusion problem alone passes); None stays None."""
    if physics is None or isinstance(physics, Task):
        return physics
    if isinstance(physics, Physics):
        return Task(get_problem("diffusion"), physics)
    raise InputError(f"expected a Task (a problem and its parameters), got {type(physics).__name__}")


def task_of(name: str, params: dict, package: str | None = None) -> Task:
    """The task of a problem's name and its parameters as plain data (a store's or checkpoint's record)."""
    problem = get_problem(name, package)
    return Task(problem, problem.params_from_dict(params))


def resolve_params(problem: str, preset: str | None, overrides: dict, strata: str | None) -> tuple:
    """(parameters, strata range, preset name) of a problem's preset (None: its default) for a command line: the
    diffusion problem's parameter overrides (`--lattice`, ...) applied to its preset; another problem takes its
    preset's parameters as they are, and such overrides are refused. `strata`: "MIN-MAX" (None: the preset's)."""
    from diffcurate.solvers.problem import parse_sources, resolve_physics

    p = get_problem(problem)
    name = preset or p.default_preset
    if isinstance(p, Diffusion):
        physics, lo_hi = resolve_physics(name, **overrides, sources=strata)
        return physics, lo_hi, name
    given = [f"--{k.replace('_', '-')}" for k, v in overrides.items() if v is not None]
    if given:
        raise InputError(
            f"{', '.join(given)} set the diffusion problem's parameters; problem {problem!r} takes its preset's"
        )
    presets = p.presets()
    if name not in presets:
        raise InputError(f"unknown preset {name!r} of problem {problem!r} (choose from {', '.join(presets)})")
    return presets[name].params, parse_sources(strata, least=0) if strata else tuple(presets[name].strata), name
