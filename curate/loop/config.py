"""The run's typed config (dataclasses) <-> RUN_DIR/config.toml. Configuration is data: every random choice of
a run comes from `seed` (or the fixed `data.test_seed`) recorded here, and checkpoints carry their own model
and training config."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w
import tomllib

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_text
from diffcurate.common.typed import build_typed

if TYPE_CHECKING:
    from diffcurate.model.nets import EDCNNConfig, UNetConfig
    from diffcurate.model.train import TrainConfig

    ModelConfig = EDCNNConfig | UNetConfig

DEFAULT_PROBLEM = "diffusion"


def _families() -> list[str]:
    """The default problem's families: the test split's samplers (a run of another problem: its own, set by
    `default_config`)."""
    from diffcurate.solvers.plugins import get_problem

    return list(get_problem(DEFAULT_PROBLEM).families())


@dataclass
class DataConfig:
    """Sizes and samplers of the initial sets and of each round's candidate pool."""

    initial: int = 200  # initial training set: a small seeded random set
    sampler: str = "mixed"  # initial set and candidate pools (a problem's default: `Problem.pool_sampler`)
    val: int = 100  # early stopping
    test_per_cell: int = 3  # test set: this many per (family, stratum), every family of the problem
    test_families: list[str] = field(default_factory=_families)  # samplers of the test split
    test_seed: int = 2024  # fixed across runs so strategies are compared on one test set
    pool: int = 1000  # candidates proposed per round
    held_out_families: list[str] = field(default_factory=list)  # test samplers no pool draws (ring, ...): apart
    held_out_per_cell: int = 0  # held-out test samples per (family, stratum)


@dataclass
class AcquisitionConfig:
    """How the round's budget is spent (the ranker)."""

    strategy: str = "sbal"  # a name of the ranker's STRATEGIES (random, stratified, count-prior, sbal, ewd, ...)
    acquisition: str = "residual"  # how candidates are scored (the ranker's ACQUISITIONS; docs/study.md)
    budget: int = 100  # samples added in round 1
    budget_growth: float = 1.0  # round k adds budget x growth^(k-1): 2.0 doubles the set each round from 100
    floor: float = 0.5  # each stratum gets at least floor x its equal share of the budget
    exploration: float = 0.1  # share of each count's budget taken at random
    diversity: str = "kmeans"  # kmeans | none: near-duplicate candidates are not all taken
    candidates_factor: float = 3.0  # diversity clusters the top factor x budget candidates of a stratum
    sources_weight: float = 0.0  # score = weighted MAE: the problem's first region x this, others x 1 (a new run: the problem's first_region_weight, 0 for diffusion's discs)
    beta: float = 4.0  # sbal, strata: P(pick) proportional to (fitted) score^beta
    weight_power: float = 1.0  # ewd: features scaled by score^power (1: BADGE; 2: picks ~ score^4 like sbal beta 4)
    mine_parents: int = 0  # hard-case mining: mutate the top N scored candidates (0: off)
    mine_per_parent: int = 4  # mutants per parent, scored like the pool and added to the candidates
    allocation: dict[str, float] = field(default_factory=dict)  # stratified: budget shares by stratum {"1" = 0.1, ..}

    def budget_at(self, k: int) -> int:
        """Samples added in round k >= 1."""
        return max(1, round(self.budget * self.budget_growth ** (k - 1)))


@dataclass
class RayConfig:
    """Cluster and actor resources."""

    address: str = ""  # empty: start a local cluster
    workers: int = 2  # solver actors
    solver_cpus: float = 0.5  # CPUs per solver actor
    solver_gpus: float = 0.0  # GPUs per solver actor (0: solve on the CPU)
    trainers: int = 1  # M trainer actors: the surrogate and M-1 ensemble members, trained in parallel
    trainer_cpus: float = 1.0  # per trainer
    trainer_gpus: float = -1.0  # -1: one GPU if the cluster has one, else CPU
    trainer_threads: int = 0  # torch threads in the trainer; 0 = all cores of its node
    train_workers: int = 1  # N > 1: each model trains on N Ray Train workers (DDP), each with trainer_cpus or a share of the free CPUs (+1 GPU)
    dashboard: bool = True  # start Ray's dashboard (local cluster)
    dashboard_host: str = "127.0.0.1"  # the dashboard's bind address: loopback unless you open it
    num_cpus: int = 0  # local cluster size; 0 = all cores
    pipeline: bool = True  # solve round k+1's pool while round k trains (same picks, less wall time)
    actor_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources every actor asks for


@dataclass
class RunConfig:
    """The whole run, parsed once from config.toml into typed parts: `physics` the problem's parameters (for
    diffusion a Physics), `model` the network's config (EDCNNConfig / UNetConfig), `train` a TrainConfig;
    `to_dict` writes back the same TOML tables."""

    preset: str
    physics: Any
    strata: list[int]  # the range [lo, hi] of strata the run draws (for diffusion: source counts)
    model: ModelConfig
    train: TrainConfig
    problem: str = DEFAULT_PROBLEM  # the problem (`curate problems`) whose parameters [physics] holds
    seed: int = 0  # every random choice of the run: initial set, pools, picks (train.seed: init and shuffle)
    rounds: int = 5  # acquisition rounds after round 0
    max_solves: int = 0  # stop when the solve budget is spent (0: no limit)
    target_p99: float = 0.0  # stop when the test p99 per-sample MAE reaches this (0: never)
    warm_start: bool = True  # each round starts from the previous round's weights
    round_steps: int = 0  # each round trains at least this many optimiser steps (train.epochs is raised to fit)
    data: DataConfig = field(default_factory=DataConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def sub_seed(self, *parts) -> int:
        """A seed for one random choice of the run (pool of round k, initial set, ...), derived from `seed`."""
        h = hashlib.sha256(repr((self.seed, *parts)).encode()).digest()
        return int.from_bytes(h[:4], "little")

    def to_dict(self) -> dict:
        """Plain data in the TOML's layout: the typed parts as their own tables, None values left out."""
        from diffcurate.model.nets import config_to_dict

        typed = {
            "physics": self.task.params_dict(),
            "model": config_to_dict(self.model),
            "train": self.train.to_dict(),
        }
        d = {f.name: typed[f.name] if f.name in typed else getattr(self, f.name) for f in fields(self)}
        return _drop_none({k: asdict(v) if is_dataclass(v) else v for k, v in d.items()})

    @property
    def task(self):
        """The run's problem with its parameters (`solvers.interface.Task`)."""
        from diffcurate.solvers.interface import Task
        from diffcurate.solvers.plugins import get_problem

        return Task(get_problem(self.problem), self.physics)

    def save(self, path: Path) -> None:
        atomic_text(path, HEADER + tomli_w.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """Parse and type every table once; unknown keys and values of the wrong type are one InputError."""
        from diffcurate.model.nets import config_from_dict
        from diffcurate.model.train import TrainConfig

        d = dict(d)
        for old, new in _RENAMED.items():  # config.toml files written with a field's earlier name
            if old in d and new not in d:
                d[new] = d.pop(old)
        acq = d.get("acquisition")
        if isinstance(acq, dict) and acq.get("strategy") in RENAMED_STRATEGIES:
            d["acquisition"] = {**acq, "strategy": RENAMED_STRATEGIES[acq["strategy"]]}
        missing = [k for k in ("preset", "physics", "strata", "model", "train") if k not in d]
        if missing:
            raise InputError(f"bad run config: missing {', '.join(f'[{k}]' for k in missing)}")
        subs = {"data": DataConfig, "acquisition": AcquisitionConfig, "ray": RayConfig}
        try:
            for key, sub in subs.items():
                d[key] = build_typed(sub, d.get(key, {}), key)
            d["physics"] = _physics(d.get("problem", DEFAULT_PROBLEM), d["physics"])
            d["model"] = config_from_dict(d["model"])
            d["train"] = TrainConfig.from_dict(d["train"])
            return build_typed(cls, d, "config")
        except TypeError as e:
            raise InputError(f"bad run config: {e}") from None

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        if not path.is_file():
            raise InputError(f"{path}: no such config file")
        try:
            d = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: not valid TOML ({e})") from None
        cfg = cls.from_dict(d)
        cfg.validate()
        return cfg

    def validate(self) -> RunConfig:
        from diffcurate.curate.acquisition.ranker import ACQUISITIONS, STRATEGIES
        from diffcurate.solvers.interface import require
        from diffcurate.solvers.plugins import get_problem

        problem = get_problem(self.problem)
        grid = problem.grid(self.physics)
        self.model.check(grid[0])
        if (self.model.in_channels, self.model.out_channels) != tuple(problem.channels):
            raise InputError(
                f"[model] in_channels, out_channels = {self.model.in_channels}, {self.model.out_channels}, but problem "
                f"{problem.name!r} encodes {problem.channels[0]} and solves {problem.channels[1]} channels"
            )
        self.train.loss_specs()
        a = self.acquisition
        if a.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {a.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if a.acquisition not in ACQUISITIONS:
            raise InputError(f"unknown acquisition {a.acquisition!r} (choose from {', '.join(ACQUISITIONS)})")
        last = a.budget_at(max(1, self.rounds))
        if a.budget < 1 or not a.budget_growth > 0 or self.data.pool < last:
            raise InputError(
                f"need 1 <= budget of every round <= pool, got budget {a.budget} (last round {last}),"
                f" pool {self.data.pool}"
            )
        if a.strategy == "stratified" and not a.allocation:
            raise InputError("strategy stratified needs acquisition.allocation (shares by stratum)")
        if a.strategy == "count-prior" and a.allocation:
            raise InputError("strategy count-prior finds its allocation in round 1; leave acquisition.allocation out")
        bad = [c for c, w in a.allocation.items() if not (c.isdigit() and isinstance(w, int | float) and w >= 0)]
        if bad or (a.allocation and not sum(a.allocation.values()) > 0):
            raise InputError(f"acquisition.allocation needs strata as keys and shares >= 0, got {bad}")
        if a.mine_parents < 0 or a.mine_per_parent < 1:
            raise InputError("need mine_parents >= 0 and mine_per_parent >= 1")
        if a.mine_parents:
            require(problem, "mutate", "mining (acquisition.mine_parents)")
        from diffcurate.model.estimators import ESTIMATORS
        from diffcurate.solvers.interface import OPTIONAL

        for need in ESTIMATORS[a.acquisition].needs if a.acquisition in ESTIMATORS else ():
            if need in OPTIONAL:
                require(problem, need, f"acquisition {a.acquisition!r}")
        names = problem.samplers()
        unknown = [
            f for f in [*self.data.test_families, *self.data.held_out_families, self.data.sampler] if f not in names
        ]
        if unknown:
            raise InputError(f"unknown samplers {unknown} (choose from {', '.join(names)})")
        if not (0 <= a.floor <= 1 and 0 <= a.exploration <= 1):
            raise InputError("floor and exploration must lie in [0, 1]")
        if len(self.strata) != 2 or not 0 <= self.strata[0] <= self.strata[1]:
            raise InputError(f"bad strata range {self.strata} (need [lo, hi] with 0 <= lo <= hi)")
        if self.ray.trainers < 1:
            raise InputError(f"need at least 1 trainer, got ray.trainers = {self.ray.trainers}")
        if self.ray.train_workers < 1:
            raise InputError(f"need at least 1 training worker, got ray.train_workers = {self.ray.train_workers}")
        bad = {k: v for k, v in self.ray.actor_resources.items() if not v > 0}
        if bad:
            raise InputError(f"ray.actor_resources must be positive amounts, got {bad}")
        if self.data.initial < 2 or self.data.val < 1:
            raise InputError("need at least 2 initial training samples and 1 validation sample")
        return self


HEADER = "# diffcurate run config: every random choice of the run derives from `seed` (and data.test_seed).\n"


def _drop_none(d):
    """TOML has no null: None values are left out and come back as the field's default."""
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


# top-level fields of config.toml files written with an earlier name, and their names now
_RENAMED = {"min_steps": "round_steps", "sources": "strata"}
# strategies of config.toml files written with an earlier name, and their names now
RENAMED_STRATEGIES = {"uniform-per-count": "uniform-per-stratum"}


def _physics(problem: str, d):
    """The [physics] table, read by the run's problem (`Problem.params_from_dict`)."""
    from diffcurate.solvers.plugins import get_problem

    try:
        return get_problem(problem).params_from_dict(d)
    except InputError as e:
        raise InputError(f"bad run config: [physics] {e}") from None


def _override(
    table: str, help: str, recorded: bool = True, fixed: bool = False, flag: str = "", min: float | None = None
):
    """A field of `RunOverrides`: the config table it changes ("" for the top level), whether config.toml records
    the change, whether it is fixed once acquisition rounds have run, and its `curate run` option (`flag`, by
    default --the-name; the help, which may name {strategies} and {acquisitions}; the least value)."""
    cli = {"help": help, "flag": flag, "min": min}
    return field(default=None, metadata={"table": table, "recorded": recorded, "fixed": fixed, "cli": cli})


@dataclass
class RunOverrides:
    """What `curate run` may change in a run's config (None: leave it), each field with the table it changes, the
    one list that `apply_overrides` and the command's options follow. Strategy and acquisition only before the
    first acquisition round; changing only where to find Ray or its dashboard does not rewrite config.toml."""

    strategy: str | None = _override("acquisition", "One of: {strategies}.", fixed=True)
    acquisition: str | None = _override("acquisition", "How candidates are scored: {acquisitions}.", fixed=True)
    address: str | None = _override("ray", "Join an existing Ray cluster (auto or HOST:PORT).", recorded=False)
    dashboard: bool | None = _override("ray", "Ray dashboard.", recorded=False, flag="--dashboard/--no-dashboard")
    dashboard_host: str | None = _override("ray", "Dashboard bind address.", recorded=False)
    workers: int | None = _override("ray", "Solver actors.", min=1)
    trainers: int | None = _override("ray", "Trainer actors: the surrogate + ensemble members.", min=1)
    train_workers: int | None = _override(
        "ray", "Ray Train workers per model (data-parallel DDP; 1: one actor).", min=1
    )
    max_solves: int | None = _override("", "Stop at this many solves.", min=1)
    target_p99: float | None = _override("", "Stop when test p99 <= E.")


# what a curation run of each preset sets on top of the preset's physics, model and [train] (`MODEL_PRESETS`,
# `TRAIN_PRESETS`), as tables of config.toml: each round's training (from scratch on `small`, the protocol of the
# study, docs/study.md), data sizes, acquisition. `tiny` is scaled down so that tests run rounds in seconds (one
# solver actor: a tiny round's solves take less than starting a second one).
RUN_PRESETS: dict[str, dict] = {
    "paper": {"data": {"initial": 2000, "val": 200, "test_per_cell": 5, "pool": 2000}, "acquisition": {"budget": 500}},
    "small": {"warm_start": False},
    "tiny": {
        "train": {"epochs": 3},
        "rounds": 2,
        "acquisition": {"budget": 20},
        "data": {"initial": 40, "val": 20, "test_per_cell": 2, "pool": 80},
        "ray": {"workers": 1},
    },
}


def default_config(preset: str | None = None, arch: str = "edcnn", problem: str = DEFAULT_PROBLEM) -> RunConfig:
    """The run config of one of a problem's presets (None: the problem's default): its parameters and strata,
    with the network, training and run presets of its scale, read as a config file is (`RunConfig.from_dict`)."""
    from diffcurate.model.estimators.registry import default_estimator
    from diffcurate.model.nets import default_model_config, fit_to_problem
    from diffcurate.model.train import default_train_config
    from diffcurate.solvers.plugins import get_problem

    p = get_problem(problem)
    presets = p.presets()
    preset = preset or p.default_preset
    if preset not in presets:
        raise InputError(f"unknown preset {preset!r} of problem {problem!r} (choose from {', '.join(presets)})")
    chosen = presets[preset]
    score = default_estimator(p)  # the ground-truth-free score the problem supports best
    model = fit_to_problem(default_model_config(chosen.scale, arch), p, chosen.params)
    base = RunConfig(
        preset=preset,
        physics=chosen.params,
        strata=list(chosen.strata),
        model=model,
        train=default_train_config(chosen.scale),
        problem=problem,
        data=DataConfig(sampler=p.pool_sampler(), test_families=list(p.families())),
        acquisition=AcquisitionConfig(acquisition=score, sources_weight=p.first_region_weight),
    ).to_dict()
    for key, v in RUN_PRESETS[chosen.scale].items():
        base[key] = {**base.get(key, {}), **v} if isinstance(v, dict) else v
    return RunConfig.from_dict(base)
