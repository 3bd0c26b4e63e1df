"""The ranker: candidate scores -> a budget per stratum -> a diverse pick within each stratum.

A stratum is the small integer a problem gives each configuration (`Problem.strata`; the number of sources for
the diffusion problem).

Pure numpy and deterministic given its rng, so that it is tested on synthetic scores. Plain top-K by error
over-picks the hardest strata (many sources: their errors are largest) and pays for it on the others; `al` therefore
spends the budget in two stages:

1. across strata: share = floor x equal share + (1 - floor) x share proportional to each stratum's mean
   candidate score, capped by the candidates available (largest-remainder rounding, budget exact);
2. within a stratum: `exploration` of its share at random, the rest by k-means over the configuration
   features of the stratum's top `candidates_factor` x share candidates, taking the best-scored member of each
   cluster, so near-duplicate configurations are not all taken.

`strata` allocates over richer descriptors than the count (family, crowding, walls, source values), adapted each
round: the candidates' scores are fitted by their descriptors and picks are drawn in proportion to the fitted
score^beta.

`ewd` (error-weighted diversity) is "highest error" and "diverse" in one step, in the surrogate's learned space:
BADGE-style k-means++ seeding on the bottleneck features scaled by each candidate's score, so a pick is likely in
proportion to its squared distance, in error-scaled feature space, from the picks so far.

Baselines: `random`, `uniform-per-stratum`, `topk`, `stratified` (random within each stratum, the budget split
by a given allocation: the strongest non-adaptive baseline when the allocation is the one a strategy ended with),
`count-prior` (the budget split in proportion to the first acquisition round's mean score per stratum, then fixed:
the allocation a user could make by hand after one round), the peers `lcmd` / `coreset` (bmdal-reg, on the surrogate's
bottleneck features; acquisition/peers.py), which need no scores and solve only what they pick, and `sbal` (AL4PDE's power
sampling: p proportional to score^beta, without replacement).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from diffcurate.solvers.plugins import as_task


@dataclass
class Selection:
    index: np.ndarray  # (B,) int64 rows of the pool
    cluster: np.ndarray  # (B,) int64 cluster within its stratum (-1: random / not clustered)
    how: list[str]  # per pick: "exploit", "explore" or "random"
    allocation: dict[str, float] | None = None  # the shares by stratum the pick followed, where one did
    fit: dict | None = None  # strata: the descriptor model of log(score) (R^2, standardised weights)


@dataclass(frozen=True)
class Acquisition:
    """How candidates are scored. `needs_solutions`: the whole pool is solved before scoring (its cost counts)."""

    name: str
    needs_solutions: bool
    description: str


ACQUISITIONS: dict[str, Acquisition] = {
    "true-error": Acquisition("true-error", True, "per-sample MAE of the model against the solved candidate"),
    # ground-truth-free error estimators (model/estimators/), scored by diffcurate.curate.loop.estimate.score_candidates
    "residual": Acquisition("residual", False, "estimated MAE from the PDE residual (a few CG correction steps)"),
    "residual-l1": Acquisition("residual-l1", False, "estimated MAE from the PDE residual's L1 norm"),
    "ensemble": Acquisition("ensemble", False, "estimated MAE from the disagreement of K seeded models"),
    "mc-dropout": Acquisition("mc-dropout", False, "estimated MAE from dropout-sampled passes (needs dropout > 0)"),
    "inverse": Acquisition("inverse", False, "estimated MAE from an inverse net's reconstruction of x"),
    "tod": Acquisition("tod", False, "estimated MAE from rounds k-1 vs k-2 disagreement (from round 2 on)"),
}


def config_features(task, configs) -> np.ndarray:
    """(n, D) float64 features that tell configurations apart, for picks kept diverse: the problem's `features`
    (`task`: a `Task`, or a diffusion Physics)."""
    task = as_task(task)
    return np.asarray(task.problem.features(task.params, configs), np.float64)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
    """Labels (n,) of k-means with k-means++ seeding on z-scored features (scipy's kmeans2); k <= n."""
    from scipy.cluster.vq import kmeans2

    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    if k >= len(x):  # every row its own cluster
        return np.arange(len(x), dtype=np.int64)
    with warnings.catch_warnings():  # an empty cluster is fine here: the pick takes the next best by score
        warnings.simplefilter("ignore", UserWarning)
        _, labels = kmeans2(x, k, iter=iters, minit="++", rng=rng)
    return labels.astype(np.int64)


def allocate(budget: int, weight: dict[int, float], available: dict[int, int], floor: float) -> dict[int, int]:
    """Integer budget per stratum: floor x equal share + (1 - floor) x share by weight, capped by what is
    available; sums to min(budget, total available) exactly."""
    groups = sorted(available)
    budget = min(budget, sum(available.values()))
    total_w = sum(max(weight.get(g, 0.0), 0.0) for g in groups)
    want = {
        g: floor / len(groups)
        + (1 - floor) * (max(weight.get(g, 0.0), 0.0) / total_w if total_w > 0 else 1 / len(groups))
        for g in groups
    }
    alloc = dict.fromkeys(groups, 0)
    free = set(groups)
    left = budget
    while left > 0 and free:
        share = sum(want[g] for g in free)
        target = {g: left * want[g] / share if share > 0 else left / len(free) for g in free}
        capped = [g for g in free if alloc[g] + target[g] >= available[g]]
        if capped:  # fill the capped strata and spread the rest again
            for g in capped:
                left -= available[g] - alloc[g]
                alloc[g] = available[g]
                free.discard(g)
            continue
        floors = {g: math.floor(target[g]) for g in free}
        for g in free:
            alloc[g] += floors[g]
        rest = left - sum(floors.values())
        for g in sorted(free, key=lambda g: (-(target[g] - floors[g]), g))[:rest]:
            alloc[g] += 1
        left = 0
    return alloc


def diverse_pick(scores, feats, k: int, exploration: float, factor: float, diversity: str, rng) -> Selection:
    """k rows of one group: the exploited ones spread over clusters of the top candidates, the rest random."""
    n = len(scores)
    k = min(k, n)
    n_explore = int(round(exploration * k))
    n_exploit = k - n_explore
    order = np.argsort(-scores, kind="stable")
    chosen, cluster, how = [], [], []
    if n_exploit:
        top = order[: min(n, max(n_exploit, math.ceil(factor * n_exploit)))]
        if diversity == "kmeans" and len(top) > n_exploit:
            labels = kmeans(feats[top], n_exploit, rng)
            for j in range(n_exploit):
                members = top[labels == j]
                if len(members):
                    chosen.append(int(members[np.argmax(scores[members])]))
                    cluster.append(j)
                    how.append("exploit")
            for r in top:  # clusters that ended empty: next best by score
                if len(chosen) == n_exploit:
                    break
                if r not in chosen:
                    chosen.append(int(r))
                    cluster.append(-1)
                    how.append("exploit")
        else:
            chosen += [int(r) for r in top[:n_exploit]]
            cluster += [-1] * n_exploit
            how += ["exploit"] * n_exploit
    rest = np.setdiff1d(np.arange(n), chosen)
    extra = rng.choice(rest, size=min(n_explore, len(rest)), replace=False) if n_explore else []
    chosen += [int(r) for r in extra]
    cluster += [-1] * len(extra)
    how += ["explore"] * len(extra)
    return Selection(np.array(chosen, np.int64), np.array(cluster, np.int64), how)


def _merge(parts: list[tuple[np.ndarray, Selection]]) -> Selection:
    idx = [rows[s.index] for rows, s in parts]
    return Selection(
        np.concatenate(idx) if idx else np.zeros(0, np.int64),
        np.concatenate([s.cluster for _, s in parts]) if parts else np.zeros(0, np.int64),
        [h for _, s in parts for h in s.how],
    )


def _al(scores, strata, feats, budget, acq, rng) -> Selection:
    groups = {int(c): np.nonzero(strata == c)[0] for c in np.unique(strata)}
    weight = {c: float(scores[rows].mean()) for c, rows in groups.items()}
    alloc = allocate(budget, weight, {c: len(r) for c, r in groups.items()}, acq.floor)
    parts = []
    for c, rows in groups.items():
        if alloc[c]:
            sel = diverse_pick(
                scores[rows], feats[rows], alloc[c], acq.exploration, acq.candidates_factor, acq.diversity, rng
            )
            parts.append((rows, sel))
    return _merge(parts)


def _topk(scores, strata, feats, budget, acq, rng) -> Selection:
    idx = np.argsort(-scores, kind="stable")[:budget]
    return Selection(idx.astype(np.int64), np.full(len(idx), -1), ["exploit"] * len(idx))


def _random(scores, strata, feats, budget, acq, rng) -> Selection:
    idx = rng.choice(len(strata), size=min(budget, len(strata)), replace=False)
    return Selection(np.sort(idx).astype(np.int64), np.full(len(idx), -1), ["random"] * len(idx))


def _uniform_per_stratum(scores, strata, feats, budget, acq, rng) -> Selection:
    groups = {int(c): np.nonzero(strata == c)[0] for c in np.unique(strata)}
    alloc = allocate(budget, {}, {c: len(r) for c, r in groups.items()}, 1.0)
    parts = []
    for c, rows in groups.items():
        pick = np.sort(rng.choice(len(rows), size=alloc[c], replace=False))
        parts.append((rows, Selection(pick, np.full(len(pick), -1), ["random"] * len(pick))))
    return _merge(parts)


def shares(weight: dict[int, float]) -> dict[str, float]:
    """Weights by stratum -> shares that sum to 1, keyed by the stratum as a string (TOML / JSON keys)."""
    total = sum(max(w, 0.0) for w in weight.values())
    return {str(c): (max(w, 0.0) / total if total > 0 else 1 / len(weight)) for c, w in sorted(weight.items())}


def _random_by_allocation(strata, budget, allocation: dict[str, float], rng) -> Selection:
    """`budget` random rows, split over strata by `allocation` (shares; strata it leaves out get none
    unless the others run out of candidates)."""
    groups = {int(c): np.nonzero(strata == c)[0] for c in np.unique(strata)}
    weight = {c: float(allocation.get(str(c), 0.0)) for c in groups}
    alloc = allocate(budget, weight, {c: len(r) for c, r in groups.items()}, 0.0)
    parts = []
    for c, rows in groups.items():
        pick = np.sort(rng.choice(len(rows), size=alloc[c], replace=False))
        parts.append((rows, Selection(pick, np.full(len(pick), -1), ["random"] * len(pick))))
    sel = _merge(parts)
    sel.allocation = {str(c): float(w) for c, w in sorted(allocation.items(), key=lambda kv: int(kv[0]))}
    return sel


def _stratified(scores, strata, feats, budget, acq, rng) -> Selection:
    return _random_by_allocation(strata, budget, acq.allocation, rng)


def _count_prior(scores, strata, feats, budget, acq, rng) -> Selection:
    """Round 1 (no allocation yet): shares in proportion to the mean score per stratum of the pool; the runner
    passes those shares back as `acq.allocation` in every later round, which then needs no scores."""
    if acq.allocation:
        return _random_by_allocation(strata, budget, acq.allocation, rng)
    weight = {int(c): float(scores[strata == c].mean()) for c in np.unique(strata)}
    return _random_by_allocation(strata, budget, shares(weight), rng)


def config_descriptors(task, configs, families: list[str]) -> np.ndarray:
    """(n, D) float64 descriptors that explain where a surrogate errs besides the stratum: the problem's
    `descriptors`, then a one-hot of each configuration's family (the problem's pool families and mined
    mutants). `task`: a `Task`, or a diffusion Physics."""
    task = as_task(task)
    d = task.problem.descriptors(task.params, configs)
    names = (*task.problem.families(), "mutant")
    fam = np.array([[float(f == name) for name in names] for f in families]).reshape(len(configs), -1)
    return np.column_stack([*d.values(), fam])


@dataclass
class Descriptors:
    """`config_descriptors` of the candidates: what the descriptor-allocation strategy reads instead of features."""

    x: np.ndarray


def _strata(scores, strata, feats: Descriptors, budget, acq, rng) -> Selection:
    """Adaptive allocation over descriptors: log(score) fitted by ridge least squares on the candidates'
    descriptors, then picks drawn without replacement with P proportional to the fitted score^beta (Gumbel
    top-k). The pool is a fresh draw of the sampler, so this importance-resamples the sampler's own parameters
    towards the regions where the model errs; one noisy score cannot pull a pick, a region's mean can. With the
    count as the only descriptor it is a score-weighted `stratified`."""
    x = feats.x
    mu, sd = x.mean(0), x.std(0)
    z = np.column_stack([np.ones(len(x)), (x - mu) / np.where(sd > 0, sd, 1.0)])  # (n, 13)
    t = np.log(np.maximum(scores, 1e-12))
    w = np.linalg.solve(z.T @ z + 1e-3 * len(z) * np.eye(z.shape[1]), z.T @ t)
    fitted = z @ w  # log of the expected score of each candidate's region
    r2 = 1.0 - ((t - fitted) ** 2).sum() / max(((t - t.mean()) ** 2).sum(), 1e-300)
    keys = acq.beta * fitted + rng.gumbel(size=len(t))
    idx = np.sort(np.argsort(-keys, kind="stable")[: min(budget, len(t))]).astype(np.int64)
    sel = Selection(idx, np.full(len(idx), -1), ["exploit"] * len(idx))
    sel.fit = {"r2": float(r2), "weights": [float(v) for v in w]}
    return sel


@dataclass
class NetFeatures:
    """The surrogate's bottleneck features of the pool (n, D) and of the current training set (m, D)."""

    pool: np.ndarray
    train: np.ndarray


def _peer(method: str) -> Callable[..., Selection]:
    def pick(scores, strata, feats: NetFeatures, budget, acq, rng) -> Selection:
        from diffcurate.curate.acquisition.peers import bmdal_select

        idx = np.sort(bmdal_select(feats.pool, feats.train, budget, method))
        return Selection(idx, np.full(len(idx), -1), ["exploit"] * len(idx))

    return pick


def _sbal(scores, strata, feats, budget, acq, rng) -> Selection:
    """Power sampling without replacement (Gumbel top-k): P(pick) proportional to score^beta."""
    k = min(budget, len(scores))
    logits = acq.beta * np.log(np.maximum(scores, 1e-300))
    keys = logits + rng.gumbel(size=len(scores))
    idx = np.sort(np.argsort(-keys, kind="stable")[:k]).astype(np.int64)
    return Selection(idx, np.full(len(idx), -1), ["exploit"] * len(idx))


def error_weighted_seeding(
    emb: np.ndarray, scores: np.ndarray, k: int, rng: np.random.Generator, power: float = 1.0
) -> np.ndarray:
    """k rows by k-means++ seeding on g_i = score_i^power * f_i / |f_i| (power 1: BADGE's gradient-embedding
    shape for a regression head): the first pick is the highest score, each next one is drawn with probability
    proportional to its squared distance from the nearest pick. Large-error rows are far from everything, so
    they are likely (about score^(2 power) far from the picks); near-duplicates of a pick are not."""
    n = len(scores)
    k = min(k, n)
    f = emb.astype(np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    s = np.maximum(scores, 0.0)
    g = f * (s / max(s.max(), 1e-300))[:, None] ** power  # (n, D), scores scaled to <= 1 first
    first = int(np.argmax(scores))
    chosen = [first]
    d2 = ((g - g[first]) ** 2).sum(1)
    d2[first] = 0.0
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # every row coincides with a pick: fall back to the best remaining scores
            rest = np.setdiff1d(np.argsort(-scores, kind="stable"), chosen, assume_unique=False)
            chosen += [int(r) for r in rest[: k - len(chosen)]]
            break
        j = int(rng.choice(n, p=d2 / total))
        chosen.append(j)
        d2 = np.minimum(d2, ((g - g[j]) ** 2).sum(1))
        d2[j] = 0.0
    return np.array(chosen, np.int64)


def _ewd(scores, strata, feats: NetFeatures, budget, acq, rng) -> Selection:
    n_explore = int(round(acq.exploration * min(budget, len(scores))))
    idx = error_weighted_seeding(feats.pool, scores, budget - n_explore, rng, acq.weight_power)
    rest = np.setdiff1d(np.arange(len(scores)), idx)
    extra = rng.choice(rest, size=min(n_explore, len(rest)), replace=False) if n_explore else np.zeros(0, np.int64)
    how = ["exploit"] * len(idx) + ["explore"] * len(extra)
    return Selection(np.concatenate([idx, extra]).astype(np.int64), np.full(len(idx) + len(extra), -1), how)


@dataclass(frozen=True)
class Strategy:
    """fn(scores, strata, features, budget, acquisition config, rng) -> Selection. `features` are the
    configuration features (`config_features`), or `NetFeatures` when `network_features` is set."""

    fn: Callable[..., Selection]
    needs_scores: bool
    network_features: bool = False
    scores_once: bool = False  # scores only in round 1; later rounds reuse round 1's allocation (count-prior)
    descriptors: bool = False  # reads `Descriptors` (config_descriptors) instead of the configuration features


STRATEGIES: dict[str, Strategy] = {
    "al": Strategy(_al, True),
    "topk": Strategy(_topk, True),
    "random": Strategy(_random, False),
    "uniform-per-stratum": Strategy(_uniform_per_stratum, False),
    # peers from bmdal-reg (acquisition/peers.py): diversity in the network's feature space, no scores or solves
    "lcmd": Strategy(_peer("lcmd"), False, True),
    "coreset": Strategy(_peer("coreset"), False, True),
    "sbal": Strategy(_sbal, True),
    "ewd": Strategy(_ewd, True, True),
    "stratified": Strategy(_stratified, False),
    "count-prior": Strategy(_count_prior, True, scores_once=True),
    "strata": Strategy(_strata, True, descriptors=True),
}


def select(strategy: str, scores, strata, feats, budget: int, acq, rng: np.random.Generator) -> Selection:
    """Spend `budget` on the pool. Strategies that need no scores ignore `scores` (may be None)."""
    strata = np.asarray(strata)
    scores = np.zeros(len(strata)) if scores is None else np.asarray(scores, np.float64)
    return STRATEGIES[strategy].fn(scores, strata, feats, budget, acq, rng)


def needs_scores(strategy: str, k: int = 1) -> bool:
    """Whether round k's candidates are scored for `strategy`."""
    st = STRATEGIES[strategy]
    return st.needs_scores and not (st.scores_once and k > 1)


def needs_network_features(strategy: str) -> bool:
    return STRATEGIES[strategy].network_features


def needs_descriptors(strategy: str) -> bool:
    return STRATEGIES[strategy].descriptors
