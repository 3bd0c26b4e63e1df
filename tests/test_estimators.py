"""Error estimators: rank statistics, calibration, every estimator ranking a corrupted prediction above a good
one, estimate-eval on a tiny run, and the acquisition entry point."""

from __future__ import annotations

import dataclasses
import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from diffcurate.common.errors import InputError
from diffcurate.curate.acquisition.ranker import ACQUISITIONS
from diffcurate.curate.loop.estimate import (
    _split,
    calibrate,
    evaluate_estimators,
    load_models,
    prepare,
    resolve_source,
    score_candidates,
    true_errors,
)
from diffcurate.model.estimators import ESTIMATORS, Member, Models, auroc, check_available, fit, raw_estimate, spearman
from diffcurate.model.nets import build_model, default_model_config
from diffcurate.solvers.plugins import as_task
from diffcurate.solvers.problem import PRESETS, paint

TINY = PRESETS["tiny"].physics


def build_tiny_run(tmp_path_factory) -> Path:
    """One tiny run (3 rounds, dropout 0.1 so that mc-dropout applies) per test session, shared by modules."""
    from diffcurate.curate.loop.config import default_config
    from diffcurate.curate.loop.rundir import init_run
    from diffcurate.curate.loop.runner import run

    root = tmp_path_factory.getbasetemp() / "estimators-run"
    if not (root / "rounds.jsonl").exists():
        cfg = default_config("tiny")
        cfg.ray.dashboard = False
        cfg.model = dataclasses.replace(cfg.model, dropout=0.1)
        init_run(root, cfg)
        run(root, show_progress=False, log=lambda s: None)
    return root


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory) -> Path:
    root = build_tiny_run(tmp_path_factory)
    prepare(resolve_source(root), list(ESTIMATORS))  # members + inverse net, once
    return root


def test_auroc_matches_pairwise_definition_and_spearman_edge_cases(rng):
    s, pos = rng.random(40).round(1), rng.random(40) < 0.3  # rounding makes ties
    pairs = [(a > b) + 0.5 * (a == b) for a, b in product(s[pos], s[~pos])]
    assert auroc(s, pos) == pytest.approx(np.mean(pairs))
    assert auroc([1, 2, 3], [False, False, True]) == 1.0 and auroc([3, 2, 1], [False, False, True]) == 0.0
    assert auroc([1, 2], [True, True]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0) and spearman([1, 1, 1], [1, 2, 3]) is None


def test_calibration_recovers_a_power_law_and_states_its_slack(rng):
    raw = np.exp(rng.normal(-4, 1, 200))
    true = 0.5 * raw**1.5 * np.exp(rng.normal(0, 0.1, 200))
    cal = fit("x", raw, true)
    assert cal.b == pytest.approx(1.5, abs=0.05) and np.exp(cal.a) == pytest.approx(0.5, rel=0.1)
    assert cal.slack == pytest.approx(np.max(true / cal.apply(raw)))
    assert np.all(np.diff(cal.apply(np.sort(raw))) > 0)  # strictly increasing: ranks survive calibration
    assert np.array_equal(fit("y", raw, raw, "identity").apply(raw), raw)


def test_mc_dropout_refuses_a_model_trained_without_dropout():
    net = build_model(default_model_config("tiny"))
    models = Models(as_task(TINY), Member(net, "none", {"arch": "edcnn", "dropout": 0.0}))
    with pytest.raises(InputError, match="dropout > 0"):
        check_available("mc-dropout", models)
    with pytest.raises(InputError, match="unknown estimator"):
        check_available("oracle", models)


def _corrupt(y: np.ndarray, rng) -> np.ndarray:
    """The true fields plus a Gaussian bump (height 0.5, a phantom source: what the inverse net sees) and a 10 x 10
    checkerboard of +-0.5 (a high-frequency wiggle: what the residual sees). y: (n, 1, L, L)."""
    bad = y.astype(np.float64)[:, 0]
    L = y.shape[-1]
    ii, jj = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    board = 0.5 * (-1.0) ** np.add.outer(np.arange(10), np.arange(10))  # (10, 10)
    for s in range(len(bad)):
        i, j = rng.integers(0, L - 10, size=2)
        bad[s] += 0.5 * np.exp(-((ii - i - 5) ** 2 + (jj - j - 5) ** 2) / 8)
        i, j = rng.integers(0, L - 10, size=2)
        bad[s, i : i + 10, j : j + 10] += board
    return bad.astype(np.float32)[:, None]


def test_every_estimator_ranks_a_corrupted_prediction_above_a_good_one(tiny_run, rng):
    """Good = the true field (float32 storage is its only error); bad = the true field corrupted."""
    source = resolve_source(tiny_run)
    models = load_models(source)
    cfg, y = _split(source, "test")
    x = models.task.encode(cfg)
    bad = _corrupt(y, rng)
    for name in ESTIMATORS:
        g = raw_estimate(name, models, cfg, x, y)
        b = raw_estimate(name, models, cfg, x, bad)
        assert np.all(b.raw > g.raw), (name, np.mean(b.raw > g.raw))
        assert g.pixels is not None and g.pixels.shape == y.shape, name


def test_calibration_is_plain_json_in_mae_units_and_reused(tiny_run):
    source = resolve_source(tiny_run)
    models = load_models(source)
    cal = calibrate(source, models, "residual")
    path = tiny_run / "estimators" / "residual.json"
    d = json.loads(path.read_text())
    assert d["method"] == "loglinear" and d["checkpoint"] == source.checkpoint.name and d["slack"] >= 1
    cfg, y = _split(source, "test")
    x = models.task.encode(cfg)
    pred = models.predict(x)
    ratio = cal.apply(raw_estimate("residual", models, cfg, x, pred).raw) / true_errors(pred, y)
    assert np.median(np.abs(np.log(ratio))) < np.log(1.1)  # residual: within 10 % for most test samples
    mtime = path.stat().st_mtime_ns
    calibrate(source, models, "residual")
    assert path.stat().st_mtime_ns == mtime  # fitted for this checkpoint already: reused
    assert calibrate(source, models, "residual-exact").method == "identity"


def test_estimate_eval_cli_json(tiny_run, cli):

    out = tiny_run / "estimate-eval.json"
    code, stdout, err = cli(
        "estimate-eval", tiny_run, "--estimators", "residual,residual-l1,tod,ensemble", "--out", out, "--json"
    )
    assert code == 0, err
    r = json.loads(stdout)
    assert json.loads(out.read_text()) == r
    assert set(r["estimators"]) == {"residual", "residual-l1", "tod", "ensemble"}
    res = r["estimators"]["residual"]
    assert res["spearman"] > 0.9 and res["auroc"] > 0.9 and res["ms_per_sample"] > 0
    assert set(res["spearman_by_sources"]) == {str(k) for k in range(1, 11)}
    code, _, err = cli("estimate-eval", tiny_run, "--estimators", "oracle")
    assert code == 2 and err.count("\n") == 1 and "unknown estimator" in err


def test_evaluate_reports_missing_extras_instead_of_failing(tiny_run):
    r = evaluate_estimators(tiny_run / "checkpoints" / "round-000.pt", ["tod", "residual-l1"])
    assert r["estimators"]["tod"]["available"] is False and "previous round" in r["estimators"]["tod"]["why"]
    assert r["estimators"]["residual-l1"]["available"] is True


def test_score_candidates_for_the_loop(tiny_run):
    from conftest import tiny_configs

    cfg = tiny_configs(12, seed=5)
    ckpt = tiny_run / "checkpoints" / "round-001.pt"
    free = [n for n, a in ACQUISITIONS.items() if not a.needs_solutions]
    assert set(free) <= set(ESTIMATORS) and "residual-exact" not in free
    for name in ("residual", "ensemble", "tod"):
        s = score_candidates(ckpt, TINY, cfg, name)
        assert s.shape == (12,) and np.all(np.isfinite(s)) and np.all(s > 0), name
    with pytest.raises(InputError, match="needs solutions"):
        score_candidates(ckpt, TINY, cfg, "residual-exact")
    with pytest.raises(InputError, match="previous round"):
        score_candidates(tiny_run / "checkpoints" / "round-000.pt", TINY, cfg, "tod")


def test_production_residual_recovers_the_hidden_amplitude(rng):
    """production stores u / max(u): `residual` recovers max(u) by one unmasked solve and is then exact;
    `residual-l1` (least-squares amplitude) still sees a prediction that is off by a constant factor."""
    from dataclasses import replace

    from diffcurate.model.data import synthetic_configs
    from diffcurate.solvers.registry import solve

    ph = replace(TINY, source_model="production")
    cfg = synthetic_configs(ph, 6, (1, 10), 0)
    y = solve(ph, cfg, "fast", dtype="float64")[:, None]  # (n, 1, L, L)
    models = Models(as_task(ph), Member(build_model(default_model_config("tiny")), "none", {}))
    x = paint(ph, cfg)[:, None]
    noisy = y + 0.02 * rng.standard_normal(y.shape)
    np.testing.assert_allclose(raw_estimate("residual", models, cfg, x, noisy).raw, true_errors(noisy, y), rtol=1e-8)
    assert raw_estimate("residual", models, cfg, x, y).raw.max() < 1e-12
    assert np.all(raw_estimate("residual-l1", models, cfg, x, 1.1 * y).raw > 1e-3)
