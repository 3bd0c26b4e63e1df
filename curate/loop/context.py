"""What every step of a round receives (`RunContext`): the run's config and paths, the actors, which rounds have
which steps, and the reads the steps share. The steps are plain functions of (context, k) (`steps.py`), so each
can be run, and tested, on its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffcurate.curate.acquisition.ranker import ACQUISITIONS, needs_network_features, needs_scores
from diffcurate.curate.cluster.actors import ScoreJob
from diffcurate.curate.cluster.dispatch import solve_ordered
from diffcurate.curate.loop.config import RunConfig
from diffcurate.curate.loop.rundir import RunPaths
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.model.checkpoint import Blob
from diffcurate.solvers.interface import Batch, Problem, Task
from diffcurate.solvers.plugins import get_problem


@dataclass
class Candidates:
    """What a round picks from: the pool, then the mined mutants (if any), with their solved fields (when the
    pool is solved), scores (when the strategy scores) and provenance ({} for pool rows)."""

    configs: Batch
    families: list[str]
    y: np.ndarray | None
    scores: np.ndarray | None
    provenance: list[dict]

    @classmethod
    def load(cls, c: RunContext, k: int) -> Candidates:
        files, solved, scored = c.paths.round(k), c.solving_pool(k), c.scoring(k)
        with np.load(files.pool) as z:
            pool = c.configs_in(z)
            fams = z["families"].tolist()
        y = np.load(files.pool_y) if solved else None
        scores = np.load(files.scores) if scored else None
        prov: list[dict] = [{} for _ in range(len(pool))]
        if not files.mined.exists():
            return cls(pool, fams, y, scores, prov)
        with np.load(files.mined) as z:
            mutants = c.configs_in(z)
            prov += [{"parent": str(p), "mutation": str(m)} for p, m in zip(z["parent"], z["mutation"], strict=True)]
            y = np.concatenate([y, z["y"]]) if y is not None else None
            scores = np.concatenate([scores, z["scores"]]) if scores is not None else None
        return cls(c.problem.concat(c.physics, [pool, mutants]), fams + ["mutant"] * len(mutants), y, scores, prov)


@dataclass
class RunContext:
    """One `curate run` on a cluster: the run directory, its config, the actors (made once, reused every round)
    and how the trainers train (`train_workers`: Ray Train workers per model, or None: the trainer actors)."""

    root: Path  # absolute: the actors may run in another working directory (a joined cluster, another node)
    cfg: RunConfig
    gens: list
    solvers: list
    trainers: list  # the surrogate's first (it scores, evaluates and feeds the ranker), then ensemble members
    log: Callable[[str], None] = print
    show_progress: bool = True
    train_workers: object = None
    _test_ref: object = field(default=None, repr=False)  # the test split in the object store, once per run

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.root)

    @property
    def physics(self):
        """The problem's parameters (the run's [physics])."""
        return self.cfg.physics

    @property
    def task(self) -> Task:
        return Task(self.problem, self.cfg.physics)

    @property
    def problem(self) -> Problem:
        return get_problem(self.cfg.problem)

    def configs_in(self, z) -> Batch:
        """The configurations an npz of the round's state holds (its arrays named by the problem's schema)."""
        return self.problem.from_arrays(self.physics, {key: z[key] for key in self.problem.schema(self.physics)})

    @property
    def trainer(self):
        return self.trainers[0]

    @property
    def strategy(self) -> str:
        return self.cfg.acquisition.strategy

    @property
    def trainers_name(self) -> str:
        return "trainer" if len(self.trainers) == 1 else f"trainers x{len(self.trainers)}"

    # --- which rounds have which steps ----------------------------------------------------------------------

    def first_round(self, k: int) -> bool:
        return k == 0

    def acquiring(self, k: int) -> bool:
        return k > 0

    def scoring(self, k: int) -> bool:
        return k > 0 and needs_scores(self.strategy, k)

    def solving_pool(self, k: int) -> bool:
        return self.scoring(k) and ACQUISITIONS[self.cfg.acquisition.acquisition].needs_solutions

    def mining(self, k: int) -> bool:
        return self.scoring(k) and self.cfg.acquisition.mine_parents > 0

    def embedding(self, k: int) -> bool:
        return k > 0 and needs_network_features(self.strategy)

    def always(self, k: int) -> bool:
        return True

    # --- what the steps read --------------------------------------------------------------------------------

    def pool(self, k: int):
        with np.load(self.paths.round(k).pool) as z:
            return self.configs_in(z)

    def candidates(self, k: int) -> Candidates:
        return Candidates.load(self, k)

    def solve(self, configs: Batch) -> np.ndarray:
        """(n, H, W) float32 solved fields, in order, on the solver actors (the one dispatcher)."""
        return solve_ordered(self.solvers, configs, self.task.grid)[0]

    def score(self, k: int, configs: Batch, y: np.ndarray | None) -> np.ndarray:
        """(n,) float64 scores of candidates with the model of round k-1: the true weighted MAE against the
        solved fields `y` on the trainer actor, or (y None) a ground-truth-free estimate in MAE units on the
        driver."""
        import ray

        a = self.cfg.acquisition
        ckpt = str(self.paths.checkpoint(k - 1))
        if y is not None:
            job = ScoreJob(Blob.of(ckpt), self.task, configs, y, a.sources_weight)
            s = ray.get(self.trainer.score.remote(job))
        else:
            from diffcurate.curate.loop.estimate import score_candidates

            s = score_candidates(Path(ckpt), self.task, configs, a.acquisition)
        return np.asarray(s, np.float64)

    def scores_on(self, k: int) -> str:
        """Where round k's scores are computed: the trainer against solutions, else the driver's estimate."""
        return "trainer" if self.solving_pool(k) else "driver"

    def solved(self, split: str, with_samplers: bool = False):
        """A split of the store as arrays for the actors (`Solved`), in the store's id order."""
        from diffcurate.curate.cluster.actors import Solved

        with Store(self.paths.store, readonly=True) as st:
            ids = st.ids(split)
            cfg, y, headers = st.get(ids)
        samplers = tuple(h["sampler"] for h in headers) if with_samplers else ()
        return Solved(cfg, y, samplers, tuple(ids) if with_samplers else ())

    def test_set(self):
        """The test split in the object store (put once per `curate run`: the split never changes)."""
        import ray

        if self._test_ref is None:
            self._test_ref = ray.put(self.solved("test", with_samplers=True))
        return self._test_ref
