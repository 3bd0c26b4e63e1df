"""The protocol: sizes, pools, training, the strategy variants, and the job list of a study spec.

Every (arm, strategy, seed) is an ordinary run directory under --out; a run's seed sets its data, network init and
shuffle order; all strategies of a seed share the initial set and the candidate pools; every run of one config
shares the one test split (data.test_seed). Each round trains from scratch to convergence (the preset's stop =
plateau: until val MAE stalls, a cosine cool-down, best on validation).
"""

from __future__ import annotations

import json
from pathlib import Path

import tomllib

from diffcurate.solvers.diffusion import Diffusion

HARD_SOURCES = 15
HELD_OUT = list(Diffusion().held_out())  # the diffusion problem's families no pool draws
MIXED = list(Diffusion().families())  # and the families its pools' mixture draws
# problem -> (what the `hard` rows of the mixed test are, which they are: fn(sampler, stratum) -> bool mask)
HARD = {
    "diffusion": ("mixed test: >= 15 sources or clustered", lambda f, s: (s >= HARD_SOURCES) | (f == "clustered")),
    "darcy": ("mixed test: the edge families (not grf)", lambda f, s: f != "grf"),
}
SETS = {"mixed": ("mae", "p99", "hard"), "held_out": ("mae", "p99")}
BASELINES = ("random", "stratified")

# strategy -> acquisition overrides. `-field`: the score counts the field only (sources_weight 0), the error the
# surrogate can still learn; the ED-CNN's disc pixels carry most of its error and mostly count disc pixels.
VARIANTS: dict[str, dict] = {
    "random": {"strategy": "random"},
    # random within each source count, by the allocation the `stratified_from` strategy ended with on the same seed
    "stratified": {"strategy": "stratified"},
    # the same, copying sbal-residual's allocation: the informed non-adaptive baseline of that strategy
    "stratified-residual": {"strategy": "stratified"},
    # the same, copying the pool lever's allocation (sbal-residual-pool20000), on the protocol's pools
    "stratified-pool-lever": {"strategy": "stratified"},
    "count-prior": {"strategy": "count-prior", "sources_weight": 0.0},
    "al": {"strategy": "al", "acquisition": "true-error", "sources_weight": 1.0},
    "al-field": {"strategy": "al", "acquisition": "true-error", "sources_weight": 0.0},
    "ewd": {"strategy": "ewd", "sources_weight": 0.0, "exploration": 0.0},
    "ewd-mine": {"strategy": "ewd", "sources_weight": 0.0, "exploration": 0.0, "mine_parents": 100},
    # ewd with power sampling's sharpness (beta 4: weights score^2, D^2 ~ score^4)
    "ewd-p2-mine": {
        "strategy": "ewd",
        "sources_weight": 0.0,
        "exploration": 0.0,
        "mine_parents": 100,
        "weight_power": 2.0,
    },
    "al-field-mine": {"strategy": "al", "sources_weight": 0.0, "mine_parents": 100},
    "sbal": {"strategy": "sbal", "sources_weight": 0.0},
    "sbal-mine": {"strategy": "sbal", "sources_weight": 0.0, "mine_parents": 100},
    # the default strategy without ground truth: candidates scored by the calibrated PDE-residual estimator
    "sbal-residual": {"strategy": "sbal", "acquisition": "residual"},
    "lcmd": {"strategy": "lcmd"},
    # adaptive allocation over descriptors (family, crowding, walls, values, count), on the field-only score
    "strata": {"strategy": "strata", "sources_weight": 0.0},
}
PEERS = {"sbal", "lcmd", "coreset"}
# stratified copies -> the strategy whose final allocation they copy (`stratified` itself: spec["stratified_from"])
COPIES = {"stratified-residual": "sbal-residual", "stratified-pool-lever": "sbal-residual-pool20000"}


def copied_from(spec: dict, name: str) -> str | None:
    """The strategy a stratified copy takes its allocation from (None: `name` is no stratified copy)."""
    return spec.get("stratified_from") if name == "stratified" else COPIES.get(name)


def stratified_of(strategies, s: str) -> str | None:
    """The stratified baseline of strategy s among `strategies`: the copy of its own allocation if there is one,
    else `stratified`."""
    own = next((c for c, src in COPIES.items() if src == s and c in strategies), None)
    return own or ("stratified" if "stratified" in strategies else None)


def is_baseline(name: str) -> bool:
    return name in ("random", "count-prior") or name.startswith("stratified")


# the protocol of the study and of --quick alike (a study config may override it, e.g. for a smoke test)
PROTOCOL = {
    "initial": 100,
    "budget": 100,
    "growth": 2.0,
    "pool": 5000,
    "val": 100,
    "test_per_cell": 50,
    "held_out_per_cell": 13,
    "batch_size": 16,
}
QUICK = {
    "preset": "small",
    "rounds": 2,
    "bootstrap": 300,
    "sbal_beta": 4.0,
    "stratified_from": "sbal",
    "protocol": PROTOCOL,
    "arms": {"edcnn": {"model": "edcnn", "seeds": [0], "strategies": ["random", "sbal", "stratified", "count-prior"]}},
    "transfer": None,
    "control": [],
}


def peer(name: str) -> bool:
    return pool_of(name)[0].split("-b")[0] in PEERS


def pool_of(name: str) -> tuple[str, int | None]:
    """(strategy, pool size): `NAME-poolN` is strategy NAME drawing pools of N candidates instead of the
    protocol's (the first N' candidates of a round are the same for every pool size, so a larger pool holds the
    smaller one)."""
    base, sep, n = name.rpartition("-pool")
    return (base, int(n)) if sep and n.isdigit() and int(n) > 0 else (name, None)


def variant(name: str) -> dict:
    name = pool_of(name)[0]
    if name.startswith("sbal-b"):
        return {**VARIANTS["sbal"], "beta": float(name.removeprefix("sbal-b"))}
    if name not in VARIANTS:
        raise SystemExit(
            f"error: unknown strategy {name!r} (choose from {', '.join(VARIANTS)} or sbal-bBETA, each with an"
            " optional -poolN)"
        )
    return VARIANTS[name]


def default_variant() -> str | None:
    """The study's name for `curate run`'s default acquisition (strategy, score and their settings)."""
    from diffcurate.curate.loop.config import AcquisitionConfig

    a = AcquisitionConfig()
    for name, v in VARIANTS.items():
        if {"acquisition": "true-error", **v}.items() <= {k: getattr(a, k) for k in (*v, "acquisition")}.items():
            return name
    return None


def load_spec(config: Path | None, quick: bool, arms: list[str] | None = None) -> dict:
    """The study's spec; with `arms`, only those parts (arm names, and `transfer`): the first arm (with the
    control) always, since the others build on it, so that a study can run and be summarised in parts."""
    if not quick and not config:
        raise SystemExit("error: give --quick or --config FILE")
    spec = json.loads(json.dumps(QUICK))
    if config:
        spec.update(tomllib.loads(config.read_text()))
    if arms:
        unknown = sorted(set(arms) - {*spec["arms"], "transfer"})
        if unknown:
            raise SystemExit(f"error: --arms names no part of the study: {', '.join(unknown)}")
        first = first_arm(spec)
        spec["arms"] = {k: v for k, v in spec["arms"].items() if k == first or k in arms}
        spec["transfer"] = spec.get("transfer") if "transfer" in arms else None
    for arm in spec["arms"].values():
        for s in arm["strategies"]:
            if s != "best":
                variant(s)
    return spec


def first_arm(spec: dict) -> str:
    return next(iter(spec["arms"]))


def problem_name(spec: dict) -> str:
    """The problem a study is of (`problem = NAME` in its spec; diffusion by default)."""
    return spec.get("problem", "diffusion")


def families(spec: dict) -> tuple[list[str], list[str]]:
    """(the families the pools' mixture draws, the held-out ones) of the study's problem."""
    from diffcurate.solvers.plugins import get_problem

    p = get_problem(problem_name(spec))
    return list(p.families()), list(p.held_out())


def hard_rows(spec: dict, sampler, strata):
    """(n_test,) bool: the mixed test's hard rows, by the problem's rule (none for a problem without one)."""
    import numpy as np

    rule = HARD.get(problem_name(spec))
    return np.zeros(len(sampler), bool) if rule is None else np.asarray(rule[1](sampler, strata), bool)


def run_config(spec: dict, arm: dict, name: str, seed: int, allocation: dict | None = None):
    """The run config of one (arm, strategy, seed): the preset's, with the protocol's sizes and the variant."""
    from dataclasses import replace

    from diffcurate.curate.loop.config import DataConfig, default_config

    p = spec["protocol"]
    cfg = default_config(spec["preset"], arm["model"], problem=problem_name(spec))
    mixed, held_out = families(spec)
    cfg.model = replace(cfg.model, **arm.get("model_config", {}))
    cfg.seed, cfg.rounds = seed, spec["rounds"] + (arm.get("extend_random", 0) if name == "random" else 0)
    cfg.warm_start = False
    cfg.train = replace(cfg.train, batch_size=p["batch_size"], seed=seed, **spec.get("train", {}))
    cfg.data = DataConfig(
        initial=p["initial"],
        val=p["val"],
        pool=pool_of(name)[1] or p["pool"],
        test_per_cell=p["test_per_cell"],
        test_families=mixed,
        held_out_families=held_out,
        held_out_per_cell=p["held_out_per_cell"],
    )
    a = cfg.acquisition
    a.budget, a.budget_growth = p["budget"], p["growth"]
    a.acquisition = "true-error"  # the study's own baseline score, whatever `curate run` defaults to
    for k, v in variant(name).items():
        # a variant's sources_weight 0 leaves out the region the input holds; a problem without one keeps its own
        setattr(a, k, cfg.task.problem.first_region_weight if k == "sources_weight" and v == 0.0 else v)
    if a.strategy == "sbal" and "sbal_beta" in spec and not pool_of(name)[0].startswith("sbal-b"):
        a.beta = float(spec["sbal_beta"])
    if copied_from(spec, name):
        a.allocation = dict(allocation or {})
    cfg.ray.dashboard = False
    cfg.ray.trainer_threads = 1
    cfg.ray.pipeline = True
    return cfg


def jobs(spec: dict, best: str | None) -> list[tuple[str, str, int]]:
    """(arm, strategy, seed) of every run: the first arm's `stratified_from` runs first, then `stratified` (which
    copies their allocations), then the rest."""
    out = []
    for arm_name, arm in spec["arms"].items():
        fewer = arm.get("seeds_by_strategy", {})
        for seed in arm["seeds"]:
            for s in arm["strategies"]:
                if seed not in fewer.get(s, arm["seeds"]):
                    continue
                s = best if s == "best" else s
                if s is not None:
                    out.append((arm_name, s, seed))
    src = {spec.get("stratified_from"), *COPIES.values()}
    return sorted(out, key=lambda j: (j[0] != first_arm(spec), j[1] not in src, not j[1].startswith("stratified")))


def run_dir(out: Path, arm: str, name: str, seed: int) -> Path:
    return out / arm / f"{name}-s{seed}"


def schedule(spec: dict) -> list[int]:
    """Training sizes of the rounds: initial, then + budget x growth^(k-1)."""
    p = spec["protocol"]
    sizes = [p["initial"]]
    for k in range(1, spec["rounds"] + 1):
        sizes.append(sizes[-1] + round(p["budget"] * p["growth"] ** (k - 1)))
    return sizes
