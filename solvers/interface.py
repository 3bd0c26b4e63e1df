"""What a problem is: the contract (`Problem`) between a PDE and the curation machinery, so that a user's
simulator can be curated like the built-in diffusion problem (docs/problems.md).

A problem owns its physics and nothing else: its parameters and presets, the named arrays of a configuration
(`schema`), seeded samplers, the solve, how a configuration becomes the network's input (`encode`), the regions
its metrics pool over, a small integer stratum per configuration (what allocations balance) and, optionally,
mutations, a residual and an independent reference solve. Configurations are the problem's own objects; the
core moves them as named arrays (`to_arrays` / `from_arrays`) and never looks inside.

Shapes: a batch holds B configurations; fields are (B, C, H, W) float32 with C the problem's channel counts
(`channels`), region masks (B, H, W) bool, strata (B,) int64, descriptors (B,) float64 each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from diffcurate.common.errors import InputError

OPTIONAL = ("mutate", "residual", "correct", "reference_solve")  # capabilities a problem may offer
Batch = Any  # a problem's batch of configurations: its own type, with len(batch) and batch[index]


@dataclass(frozen=True)
class ArraySpec:
    """One named array of a configuration: its dtype and per-sample shape. An axis named by a string is padded
    to the longest sample of a batch; `length` names the array that holds each sample's true length along the
    first axis (a ragged field: the diffusion problem's disc centres and values, by its `counts`)."""

    dtype: str
    shape: tuple[int | str, ...] = ()
    length: str | None = None
    doc: str = ""  # what the array holds, for dataset cards


@dataclass(frozen=True)
class ProblemPreset:
    """Named parameters, the range of strata the samplers draw from unless told otherwise, and the scale of the
    core's model, training and run presets that suit them (`curate init --problem NAME --preset NAME`)."""

    name: str
    params: Any
    strata: tuple[int, int]
    notes: str = field(default="", compare=False)
    scale: str = "small"  # the size of network, training and run it pairs with: paper, small or tiny


class Problem(ABC):
    """A PDE that diffcurate curates data for. Subclass it, implement the abstract methods, and register the
    class under the entry-point group `diffcurate.problems` (the name is the key)."""

    name: ClassVar[str]  # the registry key, recorded with every store, run and export
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""  # the source to cite for the physics, printed on dataset cards
    stratum: ClassVar[str] = "stratum"  # what a stratum counts, for tables ("sources")
    default_preset: ClassVar[str]  # the preset a new run of the problem takes unless told another
    channels: ClassVar[tuple[int, int]] = (1, 1)  # (C_in of encode, C_out of solve)
    mixtures: ClassVar[tuple[str, ...]] = ()  # samplers that draw from the others (each sample keeps its family)
    # the weight a true-error score gives the first region by default (`acquisition.sources_weight`): 1 counts
    # every pixel alike; diffusion's 0 leaves out its discs, whose values the input already holds
    first_region_weight: ClassVar[float] = 1.0

    # --- identity ---------------------------------------------------------------------------------------------

    @abstractmethod
    def presets(self) -> dict[str, ProblemPreset]: ...

    @abstractmethod
    def params_to_dict(self, params) -> dict:
        """Plain data (TOML, JSON): the [physics] table of a run config, a store's metadata."""

    @abstractmethod
    def params_from_dict(self, d: dict):
        """Inverse of `params_to_dict`; bad input is one `InputError`."""

    @abstractmethod
    def fingerprint(self, params) -> str:
        """A string that changes whenever the solution of some configuration would: part of every sample id,
        and what lets a store refuse samples of other parameters."""

    def scales(self, params) -> tuple[float, float]:
        """(x_scale, y_scale): typical magnitudes of x and y, which networks divide out (their config records
        them), so that a problem in any units trains with targets of order one."""
        return 1.0, 1.0

    # --- configurations ---------------------------------------------------------------------------------------

    @abstractmethod
    def grid(self, params) -> tuple[int, int]:
        """(H, W) of the fields this problem's parameters give."""

    @abstractmethod
    def schema(self, params) -> dict[str, ArraySpec]:
        """The named arrays of a configuration (store records, export columns and file loading follow it)."""

    @abstractmethod
    def to_arrays(self, params, configs) -> dict[str, np.ndarray]:
        """The batch as the schema's arrays, each (B, *shape)."""

    @abstractmethod
    def from_arrays(self, params, arrays: dict[str, np.ndarray]):
        """A batch from the schema's arrays (validated: a bad configuration is one `InputError`)."""

    def concat(self, params, parts: list):
        """One batch of several, through the schema's arrays (padded axes padded to the widest part)."""
        arrays = [self.to_arrays(params, p) for p in parts]
        out = {}
        for key, spec in self.schema(params).items():
            pieces = [a[key] for a in arrays]
            width = [max(p.shape[1 + i] for p in pieces) for i in range(len(spec.shape))]
            pad = [np.pad(p, [(0, 0), *[(0, w - s) for w, s in zip(width, p.shape[1:], strict=True)]]) for p in pieces]
            out[key] = np.concatenate(pad)
        return self.from_arrays(params, out)

    @abstractmethod
    def sample_ids(self, params, configs) -> list[str]:
        """One id per configuration, a function of the fingerprint and the configuration alone."""

    # --- samplers ---------------------------------------------------------------------------------------------

    @abstractmethod
    def samplers(self) -> dict[str, str]:
        """Sampler name -> one line of description, the held-out ones included."""

    def held_out(self) -> tuple[str, ...]:
        """Samplers that no pool draws: families the curated data must generalise to."""
        return ()

    def pool_sampler(self) -> str:
        """The sampler a run's pools draw by default: the first mixture, else the first family."""
        return self.mixtures[0] if self.mixtures else self.families()[0]

    def families(self) -> tuple[str, ...]:
        """The families pools draw: every sampler but the held-out ones and the mixtures (a run's test split
        takes each of them, by default)."""
        return tuple(s for s in self.samplers() if s not in self.held_out() and s not in self.mixtures)

    @abstractmethod
    def sample(self, params, sampler: str, seed: int, indices, strata: tuple[int, int] | None = None):
        """(configurations, the family of each): configuration i depends only on (seed, sampler, i), so any
        split of the indices over workers gives the same data. `strata`: draw only from that range of strata
        (None: the problem's default range)."""

    # --- physics and the model's view -------------------------------------------------------------------------

    @abstractmethod
    def solve(self, params, configs, device: str = "cpu") -> np.ndarray:
        """(B, C_out, H, W) float32 targets. Runs in the solver actors, batched; may be slow, may use a GPU."""

    @abstractmethod
    def encode(self, params, configs) -> np.ndarray:
        """(B, C_in, H, W) float32: the network's input."""

    @abstractmethod
    def regions(self, params, configs, y: np.ndarray) -> dict[str, np.ndarray]:
        """Named (B, H, W) bool masks that metrics pool their errors over (besides every pixel)."""

    @abstractmethod
    def strata(self, params, configs) -> np.ndarray:
        """(B,) int64: the stratum of each configuration, what every allocation balances."""

    def descriptors(self, params, configs) -> dict[str, np.ndarray]:
        """Named (B,) float64 features of each configuration (strategies that pick in feature space, reports)."""
        return {}

    def field_docs(self, params) -> dict[str, str]:
        """What x, y and each configuration array hold (dataset cards): by default their shapes and the
        schema's `doc` strings."""
        (h, w), (c_in, c_out) = self.grid(params), self.channels
        shape = lambda c: f"({h}, {w})" if c == 1 else f"({c}, {h}, {w})"  # noqa: E731
        out = {
            "x": f"float32 {shape(c_in)}: the network's input (`encode`)",
            "y": f"float32 {shape(c_out)}: the solution",
        }
        for key, spec in self.schema(params).items():
            out[key] = f"{spec.dtype} {tuple(spec.shape)}" + (f": {spec.doc}" if spec.doc else "")
        return out

    def features(self, params, configs) -> np.ndarray:
        """(B, D) float64 features that tell configurations apart, for picks kept diverse (k-means on z-scored
        columns): by default the stratum and the descriptors."""
        cols = [self.strata(params, configs).astype(np.float64), *self.descriptors(params, configs).values()]
        return np.column_stack(cols)

    # --- optional capabilities (see OPTIONAL) ---------------------------------------------------------------

    def capabilities(self) -> tuple[str, ...]:
        """The optional methods this problem implements."""
        return tuple(n for n in OPTIONAL if getattr(type(self), n, None) is not getattr(Problem, n, None))

    def mutate(self, params, configs, parents: np.ndarray, per_parent: int, rng: np.random.Generator, strata=None):
        """(mutants, the parent row of each, a name for each mutation): hard-case mining. Mutants stay within
        `strata` (lo, hi) (None: the problem's default range)."""
        raise NotImplementedError

    def residual(self, params, configs, y_pred: np.ndarray) -> np.ndarray:
        """(B, C_out, H, W) float64: the discrete operator's residual of predictions y_pred (B, C_out, H, W),
        zero for the exact solution (the `residual-l1` estimator and acquisition)."""
        raise NotImplementedError

    def residual_offset(self, params, y_pred: np.ndarray) -> np.ndarray:
        """(B,) float64 added to the mean |residual| of each prediction: what the residual cannot see (for
        diffusion, the amplitude that normalised targets hide). Zero unless a problem says otherwise."""
        return np.zeros(len(y_pred))

    def correct(self, params, configs, y_pred: np.ndarray, iterations: int | None) -> np.ndarray:
        """(B, C_out, H, W) float64: the error u - y_pred of predictions, estimated from their residual by
        `iterations` steps of an iterative solve of the correction problem, or (None) exactly, by a full solve
        (the `residual` estimator and acquisition, and `residual-exact`)."""
        raise NotImplementedError

    def reference_solve(self, params, configs) -> np.ndarray:
        """(B, C_out, H, W) float64 by an independent method: what tests hold `solve` against."""
        raise NotImplementedError


def require(problem: Problem, capability: str, who: str) -> None:
    """One line when `who` (a strategy, an estimator) needs a capability the problem lacks."""
    if capability not in problem.capabilities():
        raise InputError(f"{who} needs the problem's `{capability}`, which problem {problem.name!r} does not offer")


@dataclass(frozen=True)
class Task:
    """A problem with its parameters: what a store's samples, a dataset and a checkpoint are of. The core
    holds one where it needs the problem's view of data (encode, regions, strata, ids), so that the parameters
    never travel without the problem that reads them."""

    problem: Problem
    params: Any

    @property
    def name(self) -> str:
        return self.problem.name

    @property
    def grid(self) -> tuple[int, int]:
        return self.problem.grid(self.params)

    def params_dict(self) -> dict:
        return self.problem.params_to_dict(self.params)

    def fingerprint(self) -> str:
        return self.problem.fingerprint(self.params)

    def preset(self) -> str | None:
        """The problem's preset with these parameters, if any (for messages and checkpoints)."""
        return next((n for n, p in self.problem.presets().items() if p.params == self.params), None)

    def encode(self, configs) -> np.ndarray:
        return self.problem.encode(self.params, configs)  # (B, C_in, H, W) float32

    def strata(self, configs) -> np.ndarray:
        return self.problem.strata(self.params, configs)  # (B,) int64

    def regions(self, configs, y: np.ndarray) -> dict[str, np.ndarray]:
        return self.problem.regions(self.params, configs, y)  # name -> (B, H, W) bool

    def sample_ids(self, configs) -> list[str]:
        return self.problem.sample_ids(self.params, configs)

    def from_arrays(self, arrays: dict[str, np.ndarray]):
        return self.problem.from_arrays(self.params, arrays)

    def to_arrays(self, configs) -> dict[str, np.ndarray]:
        return self.problem.to_arrays(self.params, configs)
