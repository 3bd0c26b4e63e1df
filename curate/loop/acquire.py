"""The acquisition steps of a round (generate, solve, score, mine, embed, pick, add), as methods of `Runner` (a
mixin: the round's table and loop live in runner.py). Each writes one `RoundFiles` file of round k and reads only
files of earlier steps, so each can be run, and tested, on its own."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from diffcurate.common.files import atomic_json
from diffcurate.curate.acquisition.mining import mutate
from diffcurate.curate.acquisition.ranker import (
    STRATEGIES,
    Descriptors,
    NetFeatures,
    config_descriptors,
    config_features,
    needs_descriptors,
    needs_network_features,
    select,
)
from diffcurate.curate.cluster.actors import ScoreJob
from diffcurate.curate.cluster.dispatch import solve_ordered
from diffcurate.curate.loop.rundir import (
    RoundFiles,
    atomic_npy,
    atomic_npz,
)
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.model.checkpoint import Blob
from diffcurate.solvers.problem import Configs


@dataclass
class Candidates:
    """What a round picks from: the pool, then the mined mutants (if any), with their solved fields (when the
    pool is solved), scores (when the strategy scores) and provenance ({} for pool rows)."""

    configs: Configs
    families: list[str]
    y: np.ndarray | None
    scores: np.ndarray | None
    provenance: list[dict]

    @classmethod
    def load(cls, files: RoundFiles, solved: bool, scored: bool) -> Candidates:
        with np.load(files.pool) as z:
            pool = Configs(z["centers"], z["values"], z["counts"])
            fams = z["families"].tolist()
        y = np.load(files.pool_y) if solved else None
        scores = np.load(files.scores) if scored else None
        prov: list[dict] = [{} for _ in range(len(pool))]
        if not files.mined.exists():
            return cls(pool, fams, y, scores, prov)
        with np.load(files.mined) as z:
            mutants = Configs(z["centers"], z["values"], z["counts"])
            prov += [{"parent": str(p), "mutation": str(m)} for p, m in zip(z["parent"], z["mutation"], strict=True)]
            y = np.concatenate([y, z["y"]]) if y is not None else None
            scores = np.concatenate([scores, z["scores"]]) if scores is not None else None
        return cls(Configs.concat([pool, mutants]), fams + ["mutant"] * len(mutants), y, scores, prov)


class Acquire:
    """Round k's acquisition steps; `Runner` provides the config, paths, actors and the step predicates."""

    def generate_pool(self, k: int) -> None:
        """pool.npz: the pool of round k, indices 0, 1, ... of (sampler, seed of round k), passing over ids the
        store holds (the test splits, earlier picks) and drawing on until the pool is full; the number passed
        over is kept as `redrawn`."""
        import ray

        cfg, files = self.cfg, self.paths.round(k)
        with Store(self.paths.store, readonly=True) as st:
            have = set(st.ids())
        parts, n, start, redrawn = [], 0, 0, 0
        while n < cfg.data.pool:
            stop = start + cfg.data.pool - n
            drawn, fams, ids = ray.get(
                self.gens[0].configs.remote(cfg.data.sampler, cfg.sub_seed("pool", k), start, stop, tuple(cfg.sources))
            )
            keep = np.array([i not in have for i in ids], bool)
            have.update(ids)  # a configuration drawn twice within the pool counts once
            redrawn += int((~keep).sum())
            parts.append((drawn[np.flatnonzero(keep)], fams, ids, keep))
            n, start = n + int(keep.sum()), stop
        pool = parts[0][0] if len(parts) == 1 else Configs.concat([p[0] for p in parts])
        atomic_npz(
            files.pool,
            centers=pool.centers,
            values=pool.values,
            counts=pool.counts,
            families=np.concatenate([np.array(f)[keep] for _, f, _, keep in parts]),
            ids=np.concatenate([np.array(i)[keep] for _, _, i, keep in parts]),
            redrawn=np.array(redrawn),
        )

    def solve_pool(self, k: int) -> None:
        """pool_y.npy: the pool's solved fields."""
        atomic_npy(self.paths.round(k).pool_y, self._solve(self._pool(k)))

    def score_pool(self, k: int) -> None:
        """scores.npy: every candidate scored with the model of round k-1."""
        files = self.paths.round(k)
        y = np.load(files.pool_y) if self.solving_pool(k) else None
        atomic_npy(files.scores, self._score(k, self._pool(k), y))

    def mine(self, k: int) -> None:
        """mined.npz: mutants of the top-scored candidates that are new (not stored, not in the pool), solved if
        the pool is, and scored like the pool; with each one's parent id and mutation."""
        a, files = self.cfg.acquisition, self.paths.round(k)
        pool, solve_pool = self._pool(k), self.solving_pool(k)
        scores = np.load(files.scores)
        with np.load(files.pool) as z:
            pool_ids = z["ids"].tolist()
        rng = np.random.default_rng(self.cfg.sub_seed("mine", k))
        parents = np.argsort(-scores, kind="stable")[: a.mine_parents]
        mutants, parent, how = mutate(pool, self.physics, parents, a.mine_per_parent, tuple(self.cfg.sources), rng)
        with Store(self.paths.store, readonly=True) as st:
            seen = set(st.ids()) | set(pool_ids)
        keep = []
        for s in range(len(mutants)):
            sid = mutants.sample_id(s, self.physics)
            if sid not in seen:
                seen.add(sid)
                keep.append(s)
        mutants, parent, how = mutants[keep], parent[keep], [how[i] for i in keep]
        L = self.physics.lattice
        y = self._solve(mutants) if solve_pool and len(mutants) else np.zeros((len(mutants), L, L), np.float32)
        s = self._score(k, mutants, y if solve_pool else None) if len(mutants) else np.zeros(0)
        atomic_npz(
            files.mined,
            centers=mutants.centers,
            values=mutants.values,
            counts=mutants.counts,
            parent=np.array([pool_ids[i] for i in parent], dtype=str),
            mutation=np.array(how, dtype=str),
            y=y,
            scores=s,
        )

    def embed(self, k: int) -> None:
        """embed.npz: the surrogate's bottleneck features of the candidates and of the training set (lcmd,
        coreset and ewd pick in that space)."""
        import ray

        ckpt, configs = str(self.paths.checkpoint(k - 1)), self._candidates(k).configs
        with Store(self.paths.store, readonly=True) as st:
            train = st.configs("train")
        fp, ft = ray.get(self.trainer.embed.remote(Blob.of(ckpt), self.physics, configs, train))
        atomic_npz(self.paths.round(k).embed, pool=fp, train=ft)

    def pick(self, k: int) -> None:
        """selection.json: the rows the strategy picks, seeded by (seed, k)."""
        a, files, cand = self.cfg.acquisition, self.paths.round(k), self._candidates(k)
        rng = np.random.default_rng(self.cfg.sub_seed("select", k))
        if needs_network_features(a.strategy):
            with np.load(files.embed) as z:
                feats = NetFeatures(z["pool"], z["train"])
        elif needs_descriptors(a.strategy):
            feats = Descriptors(config_descriptors(self.physics, cand.configs, cand.families))
        else:
            feats = config_features(self.physics, cand.configs)
        acq = a
        if STRATEGIES[a.strategy].scores_once and k > 1:  # round 1's allocation, fixed from then on
            first = json.loads(self.paths.round(1).selection.read_text())
            acq = replace(a, allocation=first["allocation"])
        sel = select(a.strategy, cand.scores, cand.configs.counts, feats, a.budget_at(k), acq, rng)
        picked = {"index": sel.index.tolist(), "cluster": sel.cluster.tolist(), "how": sel.how}
        extra = {k: v for k, v in (("allocation", sel.allocation), ("fit", sel.fit)) if v}
        atomic_json(files.selection, {**picked, **extra})

    def add(self, k: int) -> None:
        """meta.json: the picks (solved now unless the pool was) go into the store with their provenance."""
        a, files, cand = self.cfg.acquisition, self.paths.round(k), self._candidates(k)
        sel = json.loads(files.selection.read_text())
        idx = np.array(sel["index"], np.int64)
        use_scores, solve_pool = self.scoring(k), self.solving_pool(k)
        chosen = cand.configs[idx]
        if solve_pool:
            y, solves = cand.y[idx], len(cand.configs)
        else:
            y, solves = self._solve(chosen), len(idx)
        scores = cand.scores[idx] if use_scores else None
        prov = [
            {
                "strategy": a.strategy,
                "acquisition": a.acquisition if use_scores else None,
                "cluster": int(c),
                "how": h,
                **cand.provenance[i],
            }
            for i, c, h in zip(idx, sel["cluster"], sel["how"], strict=True)
        ]
        with Store(self.paths.store) as st:
            st.add(
                chosen,
                y,
                split="train",
                sampler=[cand.families[i] for i in idx],
                round=k,
                scores=scores,
                provenance=prov,
                physics=self.physics,
            )
        by = {}
        for c in chosen.counts.tolist():
            by[str(c)] = by.get(str(c), 0) + 1
        mined = int(sum(1 for i in idx if cand.provenance[i]))
        atomic_json(files.meta, {"solves": solves, "added": len(idx), "added_by_sources": by, "mined": mined})

    def _pool(self, k: int) -> Configs:
        with np.load(self.paths.round(k).pool) as z:
            return Configs(z["centers"], z["values"], z["counts"])

    def _candidates(self, k: int) -> Candidates:
        return Candidates.load(self.paths.round(k), self.solving_pool(k), self.scoring(k))

    def _candidate_count(self, k: int) -> int:
        files = self.paths.round(k)
        with np.load(files.pool) as z:
            n = len(z["counts"])
        if files.mined.exists():
            with np.load(files.mined) as z:
                n += len(z["counts"])
        return n

    def _added(self, k: int) -> int:
        return int(json.loads(self.paths.round(k).meta.read_text())["added"])

    def _score(self, k: int, configs: Configs, y: np.ndarray | None) -> np.ndarray:
        """(n,) float64 scores of candidates with the model of round k-1: the true weighted MAE against the
        solved fields `y` on the trainer actor, or (y None) a ground-truth-free estimate in MAE units."""
        import ray

        a = self.cfg.acquisition
        ckpt = str(self.paths.checkpoint(k - 1))
        if y is not None:
            job = ScoreJob(Blob.of(ckpt), self.physics, configs, y, a.sources_weight)
            s = ray.get(self.trainer.score.remote(job))
        else:
            from diffcurate.curate.loop.estimate import score_candidates

            s = score_candidates(Path(ckpt), self.physics, configs, a.acquisition)
        return np.asarray(s, np.float64)

    def _solve(self, configs: Configs, on_chunk=None) -> np.ndarray:
        """Solve on the solver actors (the one dispatcher, `dispatch.solve_ordered`); (n, L, L) float32 in order.
        `on_chunk(offset)` runs after each chunk lands."""
        return solve_ordered(self.solvers, configs, self.physics, on_chunk=on_chunk)[0]
