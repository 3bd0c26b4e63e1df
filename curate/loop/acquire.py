"""The acquisition steps of a round (generate, solve, score, mine, embed, pick, add): functions of the round's
context and k (`RunContext`). Each writes one `RoundFiles` file of round k and reads only files of earlier steps,
so each can be run, and tested, on its own; `steps.py` puts them in order."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from diffcurate.common.files import atomic_json
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
from diffcurate.curate.loop.context import RunContext
from diffcurate.curate.loop.rundir import (
    atomic_npy,
    atomic_npz,
)
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.model.checkpoint import Blob


def generate_pool(c: RunContext, k: int) -> None:
    """pool.npz: the pool of round k, indices 0, 1, ... of (sampler, seed of round k), passing over ids the
    store holds (the test splits, earlier picks) and drawing on until the pool is full; the number passed
    over is kept as `redrawn`."""
    import ray

    cfg, files = c.cfg, c.paths.round(k)
    with Store(c.paths.store, readonly=True) as st:
        have = set(st.ids())
    parts, n, start, redrawn = [], 0, 0, 0
    while n < cfg.data.pool:
        stop = start + cfg.data.pool - n
        drawn, fams, ids = ray.get(
            c.gens[0].configs.remote(cfg.data.sampler, cfg.sub_seed("pool", k), start, stop, tuple(cfg.strata))
        )
        keep = np.array([i not in have for i in ids], bool)
        have.update(ids)  # a configuration drawn twice within the pool counts once
        redrawn += int((~keep).sum())
        parts.append((drawn[np.flatnonzero(keep)], fams, ids, keep))
        n, start = n + int(keep.sum()), stop
    pool = parts[0][0] if len(parts) == 1 else c.problem.concat(c.physics, [p[0] for p in parts])
    atomic_npz(
        files.pool,
        **c.problem.to_arrays(c.physics, pool),
        families=np.concatenate([np.array(f)[keep] for _, f, _, keep in parts]),
        ids=np.concatenate([np.array(i)[keep] for _, _, i, keep in parts]),
        redrawn=np.array(redrawn),
    )


def solve_pool(c: RunContext, k: int) -> None:
    """pool_y.npy: the pool's solved fields."""
    atomic_npy(c.paths.round(k).pool_y, c.solve(c.pool(k)))


def score_pool(c: RunContext, k: int) -> None:
    """scores.npy: every candidate scored with the model of round k-1."""
    files = c.paths.round(k)
    y = np.load(files.pool_y) if c.solving_pool(k) else None
    atomic_npy(files.scores, c.score(k, c.pool(k), y))


def mine(c: RunContext, k: int) -> None:
    """mined.npz: mutants of the top-scored candidates that are new (not stored, not in the pool), solved if
    the pool is, and scored like the pool; with each one's parent id and mutation."""
    a, files = c.cfg.acquisition, c.paths.round(k)
    pool, solve_pool = c.pool(k), c.solving_pool(k)
    scores = np.load(files.scores)
    with np.load(files.pool) as z:
        pool_ids = z["ids"].tolist()
    rng = np.random.default_rng(c.cfg.sub_seed("mine", k))
    parents = np.argsort(-scores, kind="stable")[: a.mine_parents]
    mutants, parent, how = c.problem.mutate(c.physics, pool, parents, a.mine_per_parent, rng, tuple(c.cfg.strata))
    with Store(c.paths.store, readonly=True) as st:
        seen = set(st.ids()) | set(pool_ids)
    keep = []
    for s, sid in enumerate(c.problem.sample_ids(c.physics, mutants)):
        if sid not in seen:
            seen.add(sid)
            keep.append(s)
    mutants, parent, how = mutants[keep], parent[keep], [how[i] for i in keep]
    y = (
        c.solve(mutants)
        if solve_pool and len(mutants)
        else np.zeros((len(mutants), *c.problem.grid(c.physics)), np.float32)
    )
    s = c.score(k, mutants, y if solve_pool else None) if len(mutants) else np.zeros(0)
    atomic_npz(
        files.mined,
        **c.problem.to_arrays(c.physics, mutants),
        parent=np.array([pool_ids[i] for i in parent], dtype=str),
        mutation=np.array(how, dtype=str),
        y=y,
        scores=s,
    )


def embed(c: RunContext, k: int) -> None:
    """embed.npz: the surrogate's bottleneck features of the candidates and of the training set (lcmd,
    coreset and ewd pick in that space)."""
    import ray

    ckpt, configs = str(c.paths.checkpoint(k - 1)), c.candidates(k).configs
    with Store(c.paths.store, readonly=True) as st:
        train = st.configs("train")
    fp, ft = ray.get(c.trainer.embed.remote(Blob.of(ckpt), c.task, configs, train))
    atomic_npz(c.paths.round(k).embed, pool=fp, train=ft)


def pick(c: RunContext, k: int) -> None:
    """selection.json: the rows the strategy picks, seeded by (seed, k)."""
    a, files, cand = c.cfg.acquisition, c.paths.round(k), c.candidates(k)
    rng = np.random.default_rng(c.cfg.sub_seed("select", k))
    if needs_network_features(a.strategy):
        with np.load(files.embed) as z:
            feats = NetFeatures(z["pool"], z["train"])
    elif needs_descriptors(a.strategy):
        feats = Descriptors(config_descriptors(c.task, cand.configs, cand.families))
    else:
        feats = config_features(c.task, cand.configs)
    acq = a
    if STRATEGIES[a.strategy].scores_once and k > 1:  # round 1's allocation, fixed from then on
        first = json.loads(c.paths.round(1).selection.read_text())
        acq = replace(a, allocation=first["allocation"])
    strata = c.problem.strata(c.physics, cand.configs)
    sel = select(a.strategy, cand.scores, strata, feats, a.budget_at(k), acq, rng)
    picked = {"index": sel.index.tolist(), "cluster": sel.cluster.tolist(), "how": sel.how}
    extra = {k: v for k, v in (("allocation", sel.allocation), ("fit", sel.fit)) if v}
    atomic_json(files.selection, {**picked, **extra})


def add(c: RunContext, k: int) -> None:
    """meta.json: the picks (solved now unless the pool was) go into the store with their provenance."""
    a, files, cand = c.cfg.acquisition, c.paths.round(k), c.candidates(k)
    sel = json.loads(files.selection.read_text())
    idx = np.array(sel["index"], np.int64)
    use_scores, solve_pool = c.scoring(k), c.solving_pool(k)
    chosen = cand.configs[idx]
    if solve_pool:
        y, solves = cand.y[idx], len(cand.configs)
    else:
        y, solves = c.solve(chosen), len(idx)
    scores = cand.scores[idx] if use_scores else None
    prov = [
        {
            "strategy": a.strategy,
            "acquisition": a.acquisition if use_scores else None,
            "cluster": int(cluster),
            "how": how,
            **cand.provenance[i],
        }
        for i, cluster, how in zip(idx, sel["cluster"], sel["how"], strict=True)
    ]
    with Store(c.paths.store) as st:
        st.add(
            chosen,
            y,
            split="train",
            sampler=[cand.families[i] for i in idx],
            round=k,
            scores=scores,
            provenance=prov,
            physics=c.physics,
        )
    by = {}  # picks per stratum
    for s in c.problem.strata(c.physics, chosen).tolist():
        by[str(s)] = by.get(str(s), 0) + 1
    mined = int(sum(1 for i in idx if cand.provenance[i]))
    atomic_json(files.meta, {"solves": solves, "added": len(idx), "added_by_sources": by, "mined": mined})


def added_line(c: RunContext, k: int) -> str:
    """What the add step says once it has run."""
    files = c.paths.round(k)
    with np.load(files.pool) as z:
        n = len(z["ids"])
    if files.mined.exists():
        with np.load(files.mined) as z:
            n += len(z["parent"])
    added = int(json.loads(files.meta.read_text())["added"])
    return f"round {k}: added {added} of {n} candidates ({c.strategy})"
