"""The ranker on synthetic scores: exact budgets, floors, caps, diversity, strategies spending identically."""

import numpy as np
import pytest

from diffcurate.curate.acquisition.ranker import NetFeatures, allocate, config_features, diverse_pick, kmeans, select
from diffcurate.curate.loop.config import AcquisitionConfig
from diffcurate.solvers.problem import PRESETS
from diffcurate.solvers.sampling import sample_configs


def test_allocation_is_exact_respects_floor_and_follows_error():
    weight = {1: 0.001, 5: 0.01, 10: 0.05, 20: 0.2}
    avail = dict.fromkeys(weight, 1000)
    a = allocate(100, weight, avail, floor=0.5)
    assert sum(a.values()) == 100
    assert all(a[g] >= 0.5 * 100 / 4 - 1 for g in a)  # the floor: half of an equal share, up to rounding
    assert a[1] < a[5] < a[10] < a[20]  # the rest follows the error
    # floor 1 = equal shares; floor 0 = purely proportional to the weights
    assert allocate(100, weight, avail, floor=1.0) == dict.fromkeys(weight, 25)
    prop = allocate(1000, weight, avail, floor=0.0)
    assert prop[20] == pytest.approx(1000 * 0.2 / 0.261, abs=1)


def test_allocation_caps_by_availability_and_redistributes():
    a = allocate(100, {1: 1.0, 2: 1.0, 3: 1.0}, {1: 5, 2: 500, 3: 500}, floor=1.0)
    assert a[1] == 5 and a[2] + a[3] == 95 and abs(a[2] - a[3]) <= 1
    assert allocate(50, {1: 1.0}, {1: 10}, floor=0.5) == {1: 10}  # never more than available


def test_kmeans_separates_obvious_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(10, 0.1, (30, 2)), rng.normal((0, 10), 0.1, (30, 2))])
    labels = kmeans(x, 3, rng)
    assert len({tuple(np.unique(labels[i * 30 : (i + 1) * 30])) for i in range(3)}) == 3
    assert all(len(np.unique(labels[i * 30 : (i + 1) * 30])) == 1 for i in range(3))


def test_diverse_pick_avoids_near_duplicates():
    """Ten near-copies of one configuration have the top scores; top-K takes them all, the diverse pick one."""
    rng = np.random.default_rng(1)
    feats = np.concatenate([np.ones((10, 3)) + rng.normal(0, 1e-3, (10, 3)), rng.normal(0, 1, (90, 3)) * 5])
    scores = np.concatenate([np.full(10, 10.0) + rng.random(10), rng.random(90)])
    sel = diverse_pick(scores, feats, 5, exploration=0.0, factor=4.0, diversity="kmeans", rng=rng)
    assert len(sel.index) == len(set(sel.index.tolist())) == 5
    assert (sel.index < 10).sum() <= 2
    plain = diverse_pick(scores, feats, 5, exploration=0.0, factor=4.0, diversity="none", rng=rng)
    assert (plain.index < 10).all()


def test_exploration_share_is_random_and_counted():
    rng = np.random.default_rng(2)
    scores = np.arange(100.0)
    sel = diverse_pick(scores, rng.normal(size=(100, 2)), 10, exploration=0.3, factor=1.0, diversity="none", rng=rng)
    assert sel.how.count("explore") == 3 and sel.how.count("exploit") == 7
    assert set(sel.index[:7].tolist()) == set(range(93, 100))


@pytest.mark.parametrize("strategy", ["al", "topk", "random", "uniform-per-stratum"])
def test_every_strategy_spends_exactly_the_budget_without_duplicates(strategy):
    ph = PRESETS["small"].physics
    cfg, _ = sample_configs("mixed", ph, 0, range(500), (1, 20))
    rng = np.random.default_rng(3)
    scores = cfg.counts * 0.01 + rng.random(500) * 0.01  # error grows with the number of sources
    acq = AcquisitionConfig(budget=60)
    sel = select(strategy, scores, cfg.counts, config_features(ph, cfg), 60, acq, np.random.default_rng(4))
    assert len(sel.index) == 60 == len(set(sel.index.tolist()))
    assert len(sel.cluster) == len(sel.how) == 60
    if strategy == "uniform-per-stratum":
        per = np.bincount(cfg.counts[sel.index], minlength=21)[1:]
        assert per.max() - per.min() <= 1
    if strategy == "al":  # the floor keeps every count fed, the error share favours many sources
        per = np.bincount(cfg.counts[sel.index], minlength=21)[1:]
        assert per.min() >= 1 and per[15:].sum() > per[:5].sum()
    if strategy == "topk":
        assert cfg.counts[sel.index].min() >= 15


@pytest.mark.parametrize("strategy", ["lcmd", "coreset"])
def test_peer_strategies_fill_the_gaps_of_the_training_set(strategy):
    """bmdal-reg's LCMD / Core-Set in TP mode: with training features all in one blob, the pick goes to the
    three blobs the training set does not cover, spread over them, no duplicates."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    pool = np.concatenate([c + rng.normal(0, 0.5, (50, 2)) for c in centres])  # rows 0-49 lie in the covered blob
    train = centres[0] + rng.normal(0, 0.5, (40, 2))
    counts = np.ones(len(pool), np.int64)
    sel = select(strategy, None, counts, NetFeatures(pool, train), 6, AcquisitionConfig(budget=6), rng)
    assert len(set(sel.index.tolist())) == 6 and (sel.index >= 50).all()
    assert len(set((sel.index // 50).tolist())) == 3


def test_config_features_shape_and_meaning():
    ph = PRESETS["small"].physics
    cfg, _ = sample_configs("boundary", ph, 0, range(20), (3, 3))
    f = config_features(ph, cfg)
    assert f.shape == (20, 7) and (f[:, 6] == 3).all()
    assert np.allclose(f[:, 5], ph.radius / ph.lattice)  # boundary discs touch a wall


def test_stratified_follows_its_allocation_exactly_and_at_random_within_a_count():
    counts = np.repeat([1, 2, 3], 100)
    acq = AcquisitionConfig(strategy="stratified", allocation={"1": 0.1, "2": 0.3, "3": 0.6})
    sel = select("stratified", None, counts, None, 50, acq, np.random.default_rng(0))
    assert np.bincount(counts[sel.index], minlength=4)[1:].tolist() == [5, 15, 30]
    assert len(set(sel.index.tolist())) == 50 and set(sel.how) == {"random"}
    assert sel.allocation == {"1": 0.1, "2": 0.3, "3": 0.6}
    other = select("stratified", None, counts, None, 50, acq, np.random.default_rng(1))
    assert set(other.index.tolist()) != set(sel.index.tolist())  # random within a count, seeded
    # a count the allocation leaves out gets nothing until the others run out
    acq.allocation = {"1": 1.0}
    short = select("stratified", None, counts, None, 120, acq, np.random.default_rng(0))
    assert (counts[short.index] == 1).sum() == 100 and len(short.index) == 120


def test_count_prior_shares_follow_the_mean_score_per_count_then_stay_fixed():
    counts = np.repeat([1, 2], 50)
    scores = np.where(counts == 1, 0.01, 0.03)  # mean score 1 : 3
    acq = AcquisitionConfig(strategy="count-prior")
    first = select("count-prior", scores, counts, None, 40, acq, np.random.default_rng(0))
    assert first.allocation == pytest.approx({"1": 0.25, "2": 0.75})
    assert np.bincount(counts[first.index], minlength=3)[1:].tolist() == [10, 30]
    # later rounds: the runner passes round 1's shares back; the scores are not used (none are made)
    acq.allocation = first.allocation
    later = select("count-prior", None, counts, None, 20, acq, np.random.default_rng(0))
    assert np.bincount(counts[later.index], minlength=3)[1:].tolist() == [5, 15]


def test_strata_follows_the_regions_where_the_error_is_not_single_scores():
    """Scores planted as exp(0.1 count + clustered) with noise, plus one huge score on a one-source uniform
    candidate: the descriptor fit explains the scores, the picks concentrate on many sources and the clustered
    family, and the outlier (which sbal takes) does not pull a pick."""
    from diffcurate.curate.acquisition.ranker import Descriptors, config_descriptors

    ph = PRESETS["small"].physics
    configs, fams = sample_configs("mixed", ph, 3, range(1000), (1, 20))
    rng = np.random.default_rng(0)
    counts = configs.counts
    clustered = np.array([f == "clustered" for f in fams])
    scores = 0.01 * np.exp(0.1 * counts + 1.0 * clustered + rng.normal(0, 0.1, len(counts)))
    outlier = int(np.flatnonzero((counts == 1) & ~clustered)[0])
    scores[outlier] = 10 * scores.max()
    feats = Descriptors(config_descriptors(ph, configs, fams))
    acq = AcquisitionConfig(strategy="strata", beta=4.0)
    sel = select("strata", scores, counts, feats, 100, acq, np.random.default_rng(1))
    assert len(set(sel.index.tolist())) == 100 and sel.fit["r2"] > 0.8
    assert counts[sel.index].mean() > counts.mean() + 3
    assert clustered[sel.index].mean() > 1.5 * clustered.mean()
    assert outlier not in sel.index
    sb = select("sbal", scores, counts, None, 100, AcquisitionConfig(strategy="sbal"), np.random.default_rng(1))
    assert outlier in sb.index
