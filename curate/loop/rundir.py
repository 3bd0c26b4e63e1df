"""The run directory: its layout (the one place that knows it), config, rounds.jsonl and atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffcurate.common.errors import InputError, hint
from diffcurate.common.files import atomic_path, atomic_text
from diffcurate.curate.loop.config import RunConfig, RunOverrides

if TYPE_CHECKING:
    from diffcurate.model.train import TrainConfig

CONFIG = "config.toml"
PIPELINED = "(pipelined)"  # actor suffix of steps run ahead, during the previous round
ROUNDS = "rounds.jsonl"
LOCK = "run.lock"
MEMBER_SEED_STEP = 1000  # ensemble member m trains with seed + 1000 m (loop trainers and estimators alike)


@dataclass(frozen=True)
class RoundFiles:
    """The state of one round, RUN_DIR/state/round-NNN/: each step's result (written atomically before the next
    step starts), the trainers' work folders and the step timings."""

    dir: Path

    @property
    def pool(self) -> Path:  # generate: the candidates (configurations, families, ids, redrawn)
        return self.dir / "pool.npz"

    @property
    def pool_y(self) -> Path:  # solve: the candidates' solved fields
        return self.dir / "pool_y.npy"

    @property
    def scores(self) -> Path:  # score: one score per candidate
        return self.dir / "scores.npy"

    @property
    def mined(self) -> Path:  # mine: mutants of the top-scored candidates, with parents and scores
        return self.dir / "mined.npz"

    @property
    def embed(self) -> Path:  # embed: the surrogate's features of the candidates and the training set
        return self.dir / "embed.npz"

    @property
    def selection(self) -> Path:  # select: the picked rows
        return self.dir / "selection.json"

    @property
    def meta(self) -> Path:  # add (round 0: the initial sets): what the round added and solved
        return self.dir / "meta.json"

    @property
    def fit(self) -> Path:  # train: epochs, best epoch, speed
        return self.dir / "fit.json"

    @property
    def eval(self) -> Path:  # evaluate: the test metrics and per-sample errors
        return self.dir / "eval.json"

    @property
    def timing(self) -> Path:  # when each step ran, on which actor
        return self.dir / "timing.json"

    @property
    def started(self) -> Path:  # the config's result fields the round started under (loop/health.py)
        return self.dir / "started.json"

    def train(self, m: int = 0) -> Path:
        """The work folder (last.pt, best.pt, train.jsonl) of ensemble member m (0: the surrogate), written by a
        trainer on the driver's node; a trainer elsewhere works in its own temp folder."""
        return self.dir / ("train" if m == 0 else f"train-member-{m}")

    def train_log(self, m: int = 0) -> Path:
        """Member m's epochs (one JSON object each), written by the trainer or, from what it returned, the driver."""
        return self.train(m) / "train.jsonl"


def _under_root(*parts: str, doc: str | None = None) -> property:
    """A fixed path of a run directory, as a property of `RunPaths`."""
    return property(lambda self: self.root.joinpath(*parts), doc=doc)


@dataclass
class RunPaths:
    root: Path

    config = _under_root(CONFIG)
    store = _under_root("store")
    rounds = _under_root(ROUNDS)
    lock = _under_root(
        LOCK, doc="Held by the one `curate run` of the directory (`run_lock`); its text is the holder's pid."
    )
    checkpoints = _under_root("checkpoints")
    actors = _under_root("state", "actors.json", doc="Where each actor ran, one entry per `curate run`.")
    report = _under_root("report")

    def checkpoint(self, k: int) -> Path:
        return self.checkpoints / f"round-{k:03d}.pt"

    def round_checkpoints(self, k: int) -> list[Path]:
        """Every checkpoint of round k that exists: the surrogate, ensemble members, the inverse net."""
        return sorted(self.checkpoints.glob(f"round-{k:03d}*.pt"))

    def member(self, k: int, m: int) -> Path:
        """Ensemble member m >= 1 of round k (member 0 is the surrogate itself, `checkpoint(k)`)."""
        return self.checkpoint(k) if m == 0 else self.checkpoints / f"round-{k:03d}-member-{m}.pt"

    def inverse(self, k: int) -> Path:
        """The inverse net of round k (the `inverse` estimator)."""
        return self.checkpoints / f"round-{k:03d}-inverse.pt"

    def state(self, k: int) -> Path:
        return self.round(k).dir

    def round(self, k: int) -> RoundFiles:
        return RoundFiles(self.root / "state" / f"round-{k:03d}")

    def estimator(self, name: str) -> Path:
        """The calibration of ground-truth-free estimator `name`."""
        return self.root / "estimators" / f"{name}.json"


def member_train_config(cfg: RunConfig, m: int) -> TrainConfig:
    """Member m's training config: the run's, with its own seed (m = 0 is the surrogate)."""
    return cfg.train if m == 0 else replace(cfg.train, seed=cfg.seed + MEMBER_SEED_STEP * m)


def round_train_config(cfg: RunConfig, m: int, n_train: int) -> TrainConfig:
    """Member m's training config for a round on n_train samples: at least the run's `round_steps` optimiser steps."""
    tc = member_train_config(cfg, m)
    if cfg.round_steps and n_train:
        need = -(-cfg.round_steps * tc.batch_size // n_train)  # ceil(steps x batch / n)
        tc = replace(tc, epochs=max(tc.epochs, need))
    return tc


@contextlib.contextmanager
def run_lock(root: Path, wait: bool = True) -> Iterator[None]:
    """One `curate run` per run directory: an exclusive flock on RUN_DIR/run.lock, held for the whole run and
    released by the kernel when the process dies (a kill -9 leaves nothing stale). A second run waits, with one
    line naming the holder's pid, or with `wait` False is refused before it changes anything."""
    from diffcurate.curate.store.lock import hold_exclusive

    fd = hold_exclusive(
        RunPaths(root).lock,
        wait,
        refused=lambda holder: f"{root} is in use by another `curate run` (pid {holder}); let it end or stop it",
        waiting=lambda holder: f"waiting for the other `curate run` of {root} (pid {holder}) to end",
    )
    try:
        yield
    finally:
        os.close(fd)  # and with it the lock


def atomic_npy(path: Path, a: np.ndarray) -> None:
    with atomic_path(path, make_parent=True) as tmp, tmp.open("wb") as fh:
        np.save(fh, a)


def atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, make_parent=True) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)


def read_rounds(root: Path) -> list[dict]:
    """Completed rounds; a torn last line (killed mid-append) is ignored and rewritten by the next append."""
    path = RunPaths(root).rounds
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return [r for i, r in enumerate(out) if r.get("round") == i]


def torn_rounds(root: Path) -> bool:
    """Whether rounds.jsonl holds more than its readable records (a line torn by a kill mid-append)."""
    path = RunPaths(root).rounds
    if not path.exists():
        return False
    return len([x for x in path.read_text().splitlines() if x.strip()]) != len(read_rounds(root))


def round_folders(root: Path) -> list[int]:
    """The round numbers k of the folders state/round-k that exist."""
    state = RunPaths(root).state(0).parent
    if not state.is_dir():
        return []
    return sorted(int(p.name[6:]) for p in state.glob("round-*") if p.is_dir() and p.name[6:].isdigit())


def append_round(root: Path, record: dict) -> None:
    done = read_rounds(root)
    lines = [json.dumps(r) for r in done + [record]]
    atomic_text(RunPaths(root).rounds, "\n".join(lines) + "\n")


def load_run(root: Path) -> RunConfig:
    """The run's config as written; commands that read a run use `health.load_checked_run`, which also checks it
    against the run's store."""
    root = Path(root)
    if not RunPaths(root).config.is_file():
        raise InputError(f"{root} is not a run directory (no {CONFIG}); create one with {hint('init', root)}")
    return RunConfig.load(RunPaths(root).config)


def init_run(root: Path, cfg: RunConfig) -> RunPaths:
    """Write RUN_DIR/config.toml (the initial sets are made by the first `curate run`, or by `init` itself).

    Re-initialising with the same config is a no-op; with another config it is refused."""
    from diffcurate.curate.store.env import is_store

    root = Path(root)
    cfg.validate()
    paths = RunPaths(root)
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory")
    inside = next((p for p in root.resolve().parents if is_store(p)), None)
    if inside is not None or is_store(root):
        raise InputError(f"{root} is inside the store {inside or root}; a run directory holds its own store")
    if paths.config.exists():
        if RunConfig.load(paths.config).to_dict() != cfg.to_dict():
            raise InputError(f"{root} already holds a run with another config; choose a new directory")
        return paths
    if root.exists() and any(root.iterdir()):
        raise InputError(f"{root} is not empty and holds no run config")
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    cfg.save(paths.config)
    return paths


def initial_requests(cfg: RunConfig) -> list[tuple]:
    """(split, sampler, seed, count, strata) of the fixed test sets, then the initial train and val sets.

    The test requests come first and depend on `data.test_seed` alone, so `fill`, which plans requests in order
    and redraws a later request's configuration that an earlier one claims, gives one config the same test split
    for every run seed, disjoint from everything the run trains on."""
    lo, hi = cfg.strata
    d = cfg.data
    reqs = []
    for f, fam in enumerate(d.test_families):
        for c in range(lo, hi + 1):
            reqs.append(("test", fam, d.test_seed * 1000 + f * 100 + c, d.test_per_cell, (c, c)))
    for f, fam in enumerate(d.held_out_families, start=len(d.test_families)):
        for c in range(lo, hi + 1):
            reqs.append(("test", fam, d.test_seed * 1000 + f * 100 + c, d.held_out_per_cell, (c, c)))
    reqs += [
        ("train", d.sampler, cfg.sub_seed("initial"), d.initial, (lo, hi)),
        ("val", d.sampler, cfg.sub_seed("val"), d.val, (lo, hi)),
    ]
    return [r for r in reqs if r[3] > 0]


def apply_overrides(root: Path, cfg: RunConfig, overrides: RunOverrides) -> tuple[RunConfig, bool]:
    """`curate run`'s overrides, and whether the config file should record them (strategy, acquisition, workers,
    trainers, training workers and stops do; where to find Ray and its dashboard do not). Strategy/acquisition may change only
    before the first acquisition round, so that one run directory never mixes strategies. The caller saves the
    config once its checks pass, so that the file stays the run's truth."""
    changed = False
    done = read_rounds(root)
    for f in fields(overrides):
        key, how, v = f.name, f.metadata, getattr(overrides, f.name)
        table = getattr(cfg, how["table"]) if how["table"] else cfg
        if v is None or (how["table"] and getattr(table, key) == v):
            continue
        if how["fixed"] and len(done) > 1:
            raise InputError(
                f"{root} already ran acquisition rounds with {key} "
                f"{getattr(table, key)!r}; start a new run directory for {v!r}"
            )
        setattr(table, key, v)
        changed = changed or how["recorded"]
    if changed:
        cfg.validate()
    return cfg, changed
