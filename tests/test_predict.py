"""`curate predict`: the config-array layout (docs/formats.md), the guard's promise per estimator, and bad input -> exit 2."""

from __future__ import annotations

import numpy as np
import pytest
from test_estimators import build_tiny_run

from diffcurate.curate.loop.estimate import _split, resolve_source, true_errors
from diffcurate.curate.store.arrays import load_arrays, save_arrays
from diffcurate.model.estimators import Calibration
from diffcurate.solvers.problem import PRESETS, Configs
from diffcurate.solvers.registry import solve

TINY = PRESETS["tiny"].physics


@pytest.fixture(scope="module")
def tiny_run(ray_cluster, tmp_path_factory):
    return build_tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predict_input(tiny_run, tmp_path_factory):
    """The run's test configurations as an input file (no fields), and their true fields (float64)."""
    cfg, _ = _split(resolve_source(tiny_run), "test")
    path = tmp_path_factory.mktemp("predict") / "configs.npz"
    save_arrays(path, TINY, cfg)
    return path, cfg, solve(TINY, cfg, "fast", dtype="float64")


def _predict(cli, tiny_run, inp, out, *extra):
    code, stdout, err = cli("predict", "--checkpoint", tiny_run, "--input", inp, "--out", out, *extra)
    assert code == 0, err
    return load_arrays(out)


def test_layout_and_the_two_extremes(tiny_run, predict_input, tmp_path, cli):
    inp, cfg, u = predict_input
    d = _predict(cli, tiny_run, inp, tmp_path / "all.npz", "--max-error", "0")
    n, L = len(cfg), TINY.lattice
    assert d["y"].shape == (n, L, L) and d["y"].dtype == np.float32
    assert d["path"].shape == (n,) and set(d["path"].tolist()) == {"solver"}  # --max-error 0: everything solved
    assert d["estimate"].shape == d["error"].shape == (n,) and np.all(np.isfinite(d["error"]))
    np.testing.assert_allclose(d["y"], u, atol=1e-6)
    assert np.array_equal(d["centers"], cfg.centers) and d["source_model"].item() == "fixed"
    assert int(d["lattice"]) == L and d["x"].shape == (n, L, L)
    d = _predict(cli, tiny_run, inp, tmp_path / "none.npz")  # without --max-error nothing is solved
    assert set(d["path"].tolist()) == {"model"} and np.all(np.isnan(d["error"]))
    assert np.all(d["estimate"] > 0)


def test_residual_exact_guard_holds_exactly(tiny_run, predict_input, tmp_path, cli):
    inp, _, u = predict_input
    both = 0
    for E in (0.02, 0.05, 0.1):
        d = _predict(cli, tiny_run, inp, tmp_path / "g.npz", "--max-error", str(E), "--estimator", "residual-exact")
        model = d["path"] == "model"
        truth = true_errors(d["y"], u)  # model answers: their own true error; solved ones: ~0
        assert np.all(truth[model] < E)
        solved = ~model
        assert np.all(d["error"][solved] >= E) and np.all(np.isnan(d["error"][model]))
        both += bool(model.any() and solved.any())
    assert both  # at some E the guard split the set: the checks above were not vacuous


def test_residual_guard_within_its_stated_calibration(tiny_run, predict_input, tmp_path, cli):
    """Measured on the tiny test set: with 5 CG steps the residual estimate is within a few % of the truth, and
    the worst model answer kept under E stayed below E x the calibration's val slack (the stated calibration)."""
    inp, _, u = predict_input
    kept = solved_any = 0
    for E in (0.02, 0.05, 0.1):
        d = _predict(cli, tiny_run, inp, tmp_path / "r.npz", "--max-error", str(E))
        slack = Calibration.load(tiny_run / "estimators" / "residual.json").slack
        truth = true_errors(d["y"], u)[d["path"] == "model"]
        assert slack < 1.25
        assert truth.size == 0 or truth.max() <= E * slack
        solved = d["path"] == "solver"
        np.testing.assert_allclose(d["estimate"][solved], d["error"][solved], rtol=0.25)
        kept += truth.size
        solved_any += int(solved.sum())
    assert kept and solved_any  # both promises were checked on real answers, not on empty sets


def _bad(cli, tiny_run, inp, out, *extra) -> str:
    code, stdout, err = cli("predict", "--checkpoint", tiny_run, "--input", inp, "--out", out, *extra)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert not out.exists()
    return err


def test_bad_input_is_one_line_and_exit_2(tiny_run, predict_input, tmp_path, cli):
    inp, cfg, _ = predict_input
    out = tmp_path / "p.npz"
    assert "checkpoint not found" in _bad(cli, tmp_path / "nope.pt", inp, out)
    assert "unknown estimator" in _bad(cli, tiny_run, inp, out, "--estimator", "oracle")
    other = tmp_path / "small.npz"
    save_arrays(other, PRESETS["small"].physics, cfg)
    assert "physics" in _bad(cli, tiny_run, other, out)
    outside = tmp_path / "outside.npz"
    save_arrays(outside, TINY, Configs(np.zeros((1, 1, 2), np.int64), np.ones((1, 1)), np.ones(1, np.int64)))
    assert "not fully inside" in _bad(cli, tiny_run, outside, out)
    assert "--max-error" in _bad(cli, tiny_run, inp, out, "--max-error", "-1")
    bare = tmp_path / "bare.pt"
    bare.write_bytes((tiny_run / "checkpoints" / "round-002.pt").read_bytes())
    assert "ensemble members" in _bad(cli, bare, inp, out, "--estimator", "ensemble")
    code, _, err = cli("predict", "--checkpoint", bare, "--input", inp, "--out", out, "--max-error", "0.05")
    assert code == 0 and out.exists(), err  # residual needs only the checkpoint (uncalibrated there)
