"""Acquisition on synthetic scores and features: ewd and sbal pick diverse, error-weighted, seeded sets; mining
makes valid configurations inside the lattice with provenance; the study's --extra-test runs on a small file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, tiny_configs

from diffcurate.curate.acquisition.ranker import NetFeatures, error_weighted_seeding, select
from diffcurate.curate.loop.config import AcquisitionConfig, RunOverrides
from diffcurate.solvers.mutations import MUTATIONS, mutate
from diffcurate.solvers.problem import PRESETS, Configs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.study.protocol import MIXED, load_spec, peer, pool_of, run_config  # noqa: E402


def _clusters(rng, n_per=50):
    """Five well-separated clusters in 8-D; cluster 0 holds 50 near-copies with the highest scores."""
    centres = rng.normal(0, 10, (5, 8))
    feats = np.concatenate([c + rng.normal(0, 0.01 if i == 0 else 1.0, (n_per, 8)) for i, c in enumerate(centres)])
    labels = np.repeat(np.arange(5), n_per)
    scores = np.where(labels == 0, 1.0, rng.uniform(0.1, 0.5, len(labels)))
    return feats, scores, labels


def test_ewd_is_diverse_weighted_and_seeded():
    rng = np.random.default_rng(0)
    feats, scores, labels = _clusters(rng)
    acq = AcquisitionConfig(strategy="ewd", exploration=0.0)
    net = NetFeatures(feats, feats[:3])
    counts = np.ones(len(scores), np.int64)
    sel = select("ewd", scores, counts, net, 10, acq, np.random.default_rng(1))
    picked = sel.index
    assert len(set(picked.tolist())) == 10  # no candidate twice
    assert int(picked[0]) == int(np.argmax(scores))  # the first pick is the highest error
    assert (labels[picked] == 0).sum() <= 2  # top-K would take 10 near-copies of cluster 0; ewd takes 1-2
    assert len(set(labels[picked].tolist())) >= 4  # and covers the other clusters
    topk = select("topk", scores, counts, net, 10, acq, np.random.default_rng(1)).index
    assert set(labels[topk].tolist()) == {0}
    again = select("ewd", scores, counts, net, 10, acq, np.random.default_rng(1)).index
    other = select("ewd", scores, counts, net, 10, acq, np.random.default_rng(2)).index
    assert np.array_equal(picked, again) and not np.array_equal(picked, other)


def test_ewd_prefers_high_error_among_equally_spread_candidates():
    """Distinct candidates with scores from 0 to 1: the error-weighted seeding takes mostly the high half, and a
    larger weight power sharpens it."""
    rng = np.random.default_rng(3)
    feats = rng.normal(0, 1, (400, 16))
    scores = np.linspace(0.0, 1.0, 400)
    top = [
        np.mean(error_weighted_seeding(feats, scores, 40, np.random.default_rng(s), power=p) >= 200)
        for p in (1.0, 2.0)
        for s in range(5)
    ]
    assert np.mean(top[:5]) > 0.65 and np.mean(top[5:]) > np.mean(top[:5])


def test_sbal_power_sampling_follows_score_to_the_beta():
    scores = np.linspace(0.01, 1.0, 200)
    counts = np.ones(200, np.int64)
    acq = AcquisitionConfig(strategy="sbal", beta=4.0)
    hits = np.zeros(200)
    for s in range(200):
        sel = select("sbal", scores, counts, None, 20, acq, np.random.default_rng(s))
        assert len(set(sel.index.tolist())) == 20  # without replacement
        hits[sel.index] += 1
    assert hits[150:].sum() > 4 * hits[:100].sum()  # weighted towards high error
    assert np.corrcoef(hits, scores**4)[0, 1] > 0.8
    flat = np.zeros(200)
    for s in range(100):  # beta 0: uniform
        flat[select("sbal", scores, counts, None, 20, AcquisitionConfig(beta=0.0), np.random.default_rng(s)).index] += 1
    assert flat[150:].sum() < 1.5 * flat[:50].sum()
    a = select("sbal", scores, counts, None, 20, acq, np.random.default_rng(9)).index
    assert np.array_equal(a, select("sbal", scores, counts, None, 20, acq, np.random.default_rng(9)).index)


def test_mutants_are_valid_configurations_with_parents():
    cfg = tiny_configs(30, seed=4)
    lo, hi = PRESETS["tiny"].sources
    parents = np.arange(0, 30, 3)
    mutants, parent, how = mutate(cfg, TINY, parents, 5, (lo, hi), np.random.default_rng(0))
    assert len(mutants) == len(parent) == len(how) == 50
    mutants.validate(TINY)  # discs fully inside the lattice, values in [0, 1]
    assert ((mutants.counts >= lo) & (mutants.counts <= hi)).all()
    assert set(parent.tolist()) == set(parents.tolist()) and set(how) <= set(MUTATIONS)
    assert len(set(how)) >= 4  # the registry's mutations are all used
    ids = {mutants.sample_id(s, TINY) for s in range(len(mutants))}
    assert len(ids & {cfg.sample_id(s, TINY) for s in range(len(cfg))}) < 5  # new configurations, not copies
    again = mutate(cfg, TINY, parents, 5, (lo, hi), np.random.default_rng(0))[0]
    assert np.array_equal(again.centers, mutants.centers) and np.array_equal(again.values, mutants.values)
    both = Configs.concat([cfg, mutants])  # what the loop's candidates are made of
    assert len(both) == 80 and np.array_equal(both.counts[30:], mutants.counts)


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_mutation_keeps_discs_inside(name):
    rng = np.random.default_rng(1)
    lo, hi = PRESETS["tiny"].sources
    for s, (c, v) in enumerate(tiny_configs(40, seed=7).sample(i) for i in range(40)):
        out = MUTATIONS[name](rng, TINY, c.astype(np.int64), v.astype(float), (lo, hi))
        if out is None:
            continue
        R, L = TINY.radius, TINY.lattice
        assert ((out[0] >= R) & (out[0] <= L - 1 - R)).all(), (name, s)
        assert lo <= len(out[0]) <= hi and len(out[0]) == len(out[1])


def test_mined_samples_carry_provenance(ray_cluster, tmp_path):
    from diffcurate.curate.loop.config import default_config
    from diffcurate.curate.loop.rundir import init_run, read_rounds
    from diffcurate.curate.loop.runner import run
    from diffcurate.curate.store.lmdbstore import Store

    cfg = default_config("tiny")
    cfg.rounds, cfg.ray.dashboard = 1, False
    cfg.acquisition.strategy, cfg.acquisition.exploration, cfg.acquisition.mine_parents = "ewd", 0.0, 10
    init_run(tmp_path / "r", cfg)
    run(tmp_path / "r", log=lambda s: None, show_progress=False, overrides=RunOverrides(address=ray_cluster))
    rec = read_rounds(tmp_path / "r")[-1]
    with Store(tmp_path / "r" / "store", readonly=True) as st:
        idx = st.index()
        mined = idx[idx["sampler"] == "mutant"]["id"].tolist()
        _, _, headers = st.get(mined)
    assert rec.get("mined", 0) == len(mined) > 0  # the picks include mutants
    assert all(h["provenance"]["parent"] and h["provenance"]["mutation"] in MUTATIONS for h in headers)


def _study(*args) -> subprocess.CompletedProcess:
    """bench/al_study.py with these arguments, in a subprocess."""
    cmd = [sys.executable, str(ROOT / "bench" / "al_study.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_study_records_results_and_extra_test_on_a_small_file(ray_cluster, tmp_path):
    """The study end to end on the tiny preset: every run leaves its record, stratified copies the allocation of
    its source run, results.json (from the records alone) compares every strategy with random and stratified,
    and --extra-test evaluates every final model on an outside file, in the evaluate schema."""
    from diffcurate.curate.store.arrays import save_arrays
    from diffcurate.solvers.registry import solve

    cfg = tiny_configs(12, seed=11, sampler="uniform")
    extra = tmp_path / "mine.npz"
    save_arrays(extra, TINY, cfg, y=solve(TINY, cfg, "fast", dtype="float32"))
    spec = tmp_path / "study.toml"
    spec.write_text(
        'preset = "tiny"\nrounds = 1\nbootstrap = 20\nstratified_from = "ewd-mine"\n'
        "[protocol]\ninitial = 20\nbudget = 10\ngrowth = 2.0\npool = 100\nval = 10\ntest_per_cell = 1\n"
        "held_out_per_cell = 1\nbatch_size = 16\n[train]\nepochs = 1\n"
        '[arms.edcnn]\nmodel = "edcnn"\nseeds = [0]\nstrategies = ["random", "ewd-mine", "stratified", "ewd-mine-pool200"]\n'
        'ablation = ["ewd-mine-pool200"]\n'
    )
    docs, recs = tmp_path / "docs", tmp_path / "docs" / "study" / "runs"
    r = _study(
        "--config",
        spec,
        "--out",
        tmp_path / "runs",
        "--docs",
        docs,
        "--workers",
        "1",
        "--extra-test",
        extra,
        "--address",
        ray_cluster,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for name in ("random", "ewd-mine", "stratified"):
        assert (recs / "edcnn" / f"{name}-s0.json").is_file() and (recs / "edcnn" / f"{name}-s0.npz").is_file()
    # round 0 is made once per seed (a template run) and shared: the same first model for every strategy
    assert (tmp_path / "runs" / "edcnn" / "round0-s0" / "rounds.jsonl").is_file()
    first = {n: np.load(recs / "edcnn" / f"{n}-s0.npz")["per_sample"][0] for n in ("random", "ewd-mine")}
    assert np.array_equal(first["random"], first["ewd-mine"])
    src = json.loads((recs / "edcnn" / "ewd-mine-s0.json").read_text())["rounds"][1]["added_by_sources"]
    strat = json.loads((recs / "edcnn" / "stratified-s0.json").read_text())
    assert strat["rounds"][1]["added_by_sources"] == src  # the same budget per count, drawn at random
    assert strat["config"]["acquisition"]["allocation"] == pytest.approx({c: v / 10 for c, v in src.items()})
    res = json.loads((docs / "results.json").read_text())
    assert res["default"] == "sbal-residual" and res["protocol"]["picked_share"] == pytest.approx(10 / 30)
    for s in ("random", "ewd-mine", "stratified"):
        for block in (res["strategies"][s], res["strategies"][s]["held_out"]):
            assert {"final_vs_random", "final_vs_stratified", "final_vs_stratified_ci90", "cost_ratio"} <= set(block)
    assert res["strategies"]["stratified"]["final_vs_stratified"]["p99"] == pytest.approx(1.0)
    # an ablation (ewd-mine on pools twice as large) is compared with the strategy it varies, and is no `best`
    lever = json.loads((recs / "edcnn" / "ewd-mine-pool200-s0.json").read_text())
    assert lever["config"]["data"]["pool"] == 200 and lever["rounds"][1]["added_by_sources"]
    abl = res["strategies"]["ewd-mine-pool200"]
    assert abl["vs_base"] == "ewd-mine" and abl["held_out"]["base_seed_list"] == [0]
    e = {n: np.load(recs / "edcnn" / f"{n}-s0.npz")["per_sample"][-1] for n in ("ewd-mine-pool200", "ewd-mine")}
    mixed = np.isin(json.loads((recs / "test_set.json").read_text())["sampler"], MIXED)
    assert abl["final_vs_base"]["mae"] == pytest.approx(
        e["ewd-mine-pool200"][mixed].mean() / e["ewd-mine"][mixed].mean()
    )
    got = res["extra_test"]["strategies"]["edcnn"]
    assert res["extra_test"]["n_samples"] == 12 and set(got) == {"random", "ewd-mine", "stratified", "ewd-mine-pool200"}
    for runs in got.values():
        m = runs[0]
        assert m["n_samples"] == 12 and set(m["mae"]) == {"all", "sources", "field", "r1", "r2", "r3"}
    # the results come from the records alone: without the run directories they are the same
    import shutil

    shutil.rmtree(tmp_path / "runs")
    again = _study("--config", spec, "--docs", tmp_path / "again", "--records", recs, "--summarise")
    assert again.returncode == 0, again.stderr[-2000:]
    res2 = json.loads((tmp_path / "again" / "results.json").read_text())
    assert res2["strategies"] == res["strategies"]
    # each row bootstraps from its own stream: without the ablation the other rows are the same to the last digit
    fewer = tmp_path / "fewer.toml"
    fewer.write_text(
        spec.read_text().replace(', "ewd-mine-pool200"]', "]").replace('ablation = ["ewd-mine-pool200"]', "")
    )
    three = _study("--config", fewer, "--docs", tmp_path / "three", "--records", recs, "--summarise")
    assert three.returncode == 0, three.stderr[-2000:]
    res3 = json.loads((tmp_path / "three" / "results.json").read_text())
    assert set(res3["strategies"]) == {"random", "ewd-mine", "stratified"}
    assert all(res3["strategies"][s] == res["strategies"][s] for s in res3["strategies"])
    bad = _study("--config", spec, "--extra-test", tmp_path / "nope.npz")
    assert bad.returncode != 0 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_study_pool_variant_sets_the_pool_and_keeps_the_strategy():
    """`NAME-poolN` is strategy NAME on pools of N candidates; everything else is NAME's run config."""
    spec = load_spec(None, quick=True)
    arm = spec["arms"]["edcnn"]
    big, base = run_config(spec, arm, "sbal-residual-pool20000", 3), run_config(spec, arm, "sbal-residual", 3)
    assert (big.data.pool, base.data.pool) == (20000, spec["protocol"]["pool"])
    assert big.acquisition == base.acquisition and big.seed == base.seed == 3
    assert pool_of("sbal-b2-pool300") == ("sbal-b2", 300) and pool_of("sbal-residual") == ("sbal-residual", None)
    assert peer("sbal-pool20000") and not peer("sbal-residual-pool20000")
    with pytest.raises(SystemExit, match="unknown strategy"):
        run_config(spec, arm, "nope-pool100", 0)
