"""The Darcy problem: its scheme converges at second order to a manufactured solution, its solver agrees with an
independent assembly, its samplers are seeded and keep to their strata, its residual and correction are exact
for the discrete solution; the FNO; the relative L2 metric and loss; and a curation run of Darcy with the FNO."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffcurate.common.errors import InputError
from diffcurate.solvers import darcy_solver as ds
from diffcurate.solvers.darcy import PRESETS, Darcy, Medium
from diffcurate.solvers.darcy_media import FAMILIES, sample_media, stratum_of

P = Darcy()
TINY = PRESETS["tiny"].params  # s = 32


def _manufactured(s: int) -> float:
    """max |u_h - u| at the nodes for u = sin(pi x) sin(pi y), a = 2 + sin(2 pi x) cos(pi y), f = -div(a grad u)."""
    t = np.linspace(0, 1, s)
    x, y = np.meshgrid(t, t, indexing="ij")
    a = 2 + np.sin(2 * np.pi * x) * np.cos(np.pi * y)
    ax, ay = 2 * np.pi * np.cos(2 * np.pi * x) * np.cos(np.pi * y), -np.pi * np.sin(2 * np.pi * x) * np.sin(np.pi * y)
    u = np.sin(np.pi * x) * np.sin(np.pi * y)
    ux, uy = np.pi * np.cos(np.pi * x) * np.sin(np.pi * y), np.pi * np.sin(np.pi * x) * np.cos(np.pi * y)
    f = -(ax * ux + ay * uy - 2 * np.pi**2 * a * u)
    return float(np.abs(ds.solve_one(a, f, "direct") - u).max())


def test_the_scheme_converges_at_second_order_to_a_manufactured_solution():
    errors = [_manufactured(s) for s in (17, 33, 65, 129)]  # h halves each time
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((rates > 1.95) & (rates < 2.05)), rates


@pytest.mark.parametrize("family", [*FAMILIES, "mixed"])
def test_the_solver_agrees_with_an_independent_assembly(family):
    """The vectorised operator solved by SuperLU against equations assembled node by node and solved densely,
    in float64, on a medium of every family (s = 16)."""
    a = np.where(sample_media(family, 16, 4, [0])[0][0], 12.0, 3.0)
    ref = ds.reference_solve(a, 1.0)
    assert np.abs(ds.solve_one(a, 1.0, "direct") - ref).max() <= 1e-10 * np.abs(ref).max()
    assert (ref[0] == 0).all() and (ref[:, -1] == 0).all() and ref[1:-1, 1:-1].min() > 0  # u = 0 on walls, > 0 in


def test_amg_agrees_with_the_direct_solve():
    pytest.importorskip("pyamg")
    a = np.where(sample_media("grf", 48, 1, [0])[0][0], 12.0, 3.0)
    direct = ds.solve_one(a, 1.0, "direct")
    assert np.abs(ds.solve_one(a, 1.0, "amg") - direct).max() <= 1e-8 * direct.max()


def test_the_problem_solves_in_float32_what_the_reference_does_and_its_residual_and_correction_are_exact():
    configs, _ = P.sample(TINY, "mixed", 2, range(3))
    y = P.solve(TINY, configs)
    ref = P.reference_solve(TINY, configs)
    assert y.shape == (3, 1, 32, 32) and y.dtype == np.float32
    assert np.abs(y - ref).max() <= 1e-6 * np.abs(ref).max()
    assert np.abs(P.residual(TINY, configs, ref)).max() < 1e-9  # f = 1: residuals of order one are errors
    guess = ref * 0.9 + 1e-4  # walls wrong too
    exact = P.correct(TINY, configs, guess, None)
    assert np.abs(guess + exact - ref).max() < 1e-12
    some = P.correct(TINY, configs, guess, 5)  # a few CG steps: part of the way
    assert np.abs(guess + some - ref).max() < np.abs(guess - ref).max()


def test_the_fno_data_sampler_is_the_sign_of_the_random_field_and_strata_are_tenths():
    """a takes 3 and 12 only; medium i depends on (seed, sampler, i) alone; a stratum is the high tenth."""
    configs, families = P.sample(TINY, "grf", 0, [5, 6, 7])
    assert set(np.unique(configs.a)) == {3, 12} and configs.a.dtype == np.uint8 and families == ["grf"] * 3
    again, _ = P.sample(TINY, "grf", 0, [7])
    assert np.array_equal(again.a[0], configs.a[2])
    other, _ = P.sample(TINY, "grf", 1, [7])
    assert not np.array_equal(other.a[0], configs.a[2])
    frac = (configs.a == 12).mean((1, 2))
    assert np.array_equal(P.strata(TINY, configs), np.minimum((frac * 10).astype(int), 9))
    assert stratum_of(np.ones((1, 4, 4), bool))[0] == 9 and stratum_of(np.zeros((1, 4, 4), bool))[0] == 0


@pytest.mark.parametrize("strata", [(0, 0), (4, 5), (9, 9)])
def test_every_sampler_keeps_to_the_strata_asked_for(strata):
    """Rejection within the family, then a moved threshold: even grf, which rarely leaves 4-5, gives 0 and 9."""
    for name in [*FAMILIES, "mixed"]:
        configs, _ = P.sample(TINY, name, 3, range(4), strata)
        s = P.strata(TINY, configs)
        assert ((s >= strata[0]) & (s <= strata[1])).all(), (name, s)


def test_mutants_differ_from_their_parents_and_keep_to_the_strata():
    configs, _ = P.sample(TINY, "mixed", 1, range(6), (3, 6))
    kids, parents, names = P.mutate(TINY, configs, np.arange(6), 3, np.random.default_rng(0), (3, 6))
    assert len(kids) == 18 and list(parents) == list(np.repeat(np.arange(6), 3)) and set(names) == {"flip"}
    s = P.strata(TINY, kids)
    assert ((s >= 3) & (s <= 6)).all()
    assert all((kids.a[k] != configs.a[parents[k]]).any() for k in range(18))
    assert set(np.unique(kids.a)) <= {3, 12}


def test_configurations_are_validated_and_ids_follow_the_parameters():
    configs, _ = P.sample(TINY, "grf", 0, range(2))
    arrays = P.to_arrays(TINY, configs)
    assert P.sample_ids(TINY, P.from_arrays(TINY, arrays)) == P.sample_ids(TINY, configs)
    bad = arrays["a"].copy()
    bad[1, 3, 3] = 7
    with pytest.raises(InputError, match="sample 1: a must be 3 or 12"):
        P.from_arrays(TINY, {"a": bad})
    with pytest.raises(InputError, match="shape"):
        P.from_arrays(TINY, {"a": arrays["a"][:, :16]})
    other = Medium(32, forcing=2.0)
    assert P.sample_ids(other, configs) != P.sample_ids(TINY, configs)
    assert P.params_from_dict(P.params_to_dict(other)) == other
    with pytest.raises(InputError):
        P.params_from_dict({**P.params_to_dict(TINY), "low": 0})
    regions = P.regions(TINY, configs, P.solve(TINY, configs))
    union = regions["interface"].astype(int) + regions["high"] + regions["low"]
    assert (union == 1).all()  # a partition of the nodes
    d = P.descriptors(TINY, configs)
    assert np.allclose(d["high"], (configs.a == 12).mean((1, 2))) and set(d["percolates"]) <= {0.0, 1.0}


def test_the_fno_takes_any_grid_and_round_trips_a_checkpoint(tmp_path):
    from diffcurate.model.nets import build_model, config_from_dict, config_to_dict, default_model_config

    cfg = default_model_config("small", "fno")
    assert (cfg.modes, cfg.width, cfg.layers) == (12, 32, 4)  # the FNO paper's Darcy setting
    cfg.x_scale, cfg.y_scale = 12.0, 0.01
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    x = torch.rand(2, 1, 37, 37)  # not a power of two
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 1, 37, 37) and net.embed(x).shape == (2, 32 * 16)
        plain = build_model(config_from_dict({**config_to_dict(cfg), "x_scale": 1.0, "y_scale": 1.0}))
        plain.load_state_dict(net.state_dict())  # the same weights: the scales are config, not parameters
        assert torch.allclose(y, 0.01 * plain.eval()(x / 12.0), rtol=1e-5, atol=1e-7)
    torch.save({"model_config": config_to_dict(cfg), "state_dict": net.state_dict()}, tmp_path / "m.pt")
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    again = build_model(config_from_dict(obj["model_config"]))
    again.load_state_dict(obj["state_dict"])
    with torch.no_grad():
        assert torch.equal(again.eval()(x), y)
    with pytest.raises(InputError, match="modes"):
        config_from_dict({**config_to_dict(cfg), "padding": 0}).check(16)


def test_the_relative_l2_metric_and_loss_are_the_fields_by_hand():
    from diffcurate.model.losses import LossSpec, loss_parts, loss_value
    from diffcurate.model.metrics import MetricAccumulator

    y = torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]]])  # norms 5 and 1
    pred = y + torch.tensor([[[[0.0, 1.0]]], [[[2.0, 0.0]]]])  # error norms 1 and 2
    acc = MetricAccumulator()
    acc.update(pred, y, torch.zeros(2, 0, 1, 2, dtype=torch.bool), torch.tensor([0, 1]))
    m = acc.result()
    assert m["rel_l2_mean"] == pytest.approx((1 / 5 + 2 / 1) / 2)
    assert m["rel_l2"] == pytest.approx(np.sqrt(5 / 26))  # pooled
    spec = LossSpec(pointwise="rel-l2").check()
    assert float(loss_value(spec, pred, y)) == pytest.approx(1.1)
    num, den = loss_parts(spec, pred, y)
    assert float(num) == pytest.approx(2.2) and float(den) == 2


def test_a_darcy_run_with_the_fno_is_curated_exported_and_verified(tmp_path, cli, ray_cluster):
    run = tmp_path / "run"
    code, out, err = cli("init", run, "--problem", "darcy", "--preset", "tiny", "--model", "fno", "--seed", "3")
    assert code == 0, err
    text = (run / "config.toml").read_text()
    assert 'problem = "darcy"' in text and 'arch = "fno"' in text and "size = 32" in text and "x_scale = 12.0" in text
    code, out, err = cli("run", run, "--rounds", "1", "--no-dashboard", "--address", ray_cluster)
    assert code == 0, err
    code, out, err = cli("status", run, "--json")
    st = json.loads(out)
    assert st["problem"] == "darcy" and st["acquisition"] == "residual" and st["rounds"][1]["added"] == 20
    test = st["rounds"][-1]["test"]
    assert set(test["mae"]) == {"all", "interface", "high", "low"} and 0 < test["rel_l2_mean"] < 1
    code, out, err = cli("verify", "--store", run / "store", "--resolve", "3")
    assert code == 0, err
    code, out, err = cli("export", "--store", run / "store", "--out", tmp_path / "d.h5")
    assert code == 0, err
    card = json.loads((tmp_path / "d.h5.card.json").read_text())
    assert card["problem"]["name"] == "darcy" and card["physics"]["size"] == 32 and "Fourier" in card["citation"]
    # bulk generation takes Darcy's strata, tenth 0 included; a range its samplers refuse writes nothing
    gen = ("generate", "--problem", "darcy", "--preset", "tiny", "--count", "3", "--address", ray_cluster)
    code, out, err = cli(*gen, "--store", tmp_path / "bad", "--sources", "0-12")
    assert code == 2 and err.count("\n") == 1 and "0-9; got 0-12" in err and not (tmp_path / "bad").exists(), err
    code, out, err = cli(*gen, "--store", tmp_path / "low", "--sources", "0-1", "--json")
    assert code == 0 and json.loads(out)["added"] == 3, err
    code, out, err = cli("info", "--store", tmp_path / "low", "--json")
    assert set(json.loads(out)["by_stratum"]) <= {"0", "1"}, out


def test_the_fno_trains_with_channels_last_as_the_small_preset_does():
    """The small [train] preset asks for NHWC; the FNO's 5-D spectral weights keep their layout."""
    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.nets import default_model_config, fit_to_problem
    from diffcurate.model.train import TrainConfig, train
    from diffcurate.solvers.interface import Task

    task = Task(P, TINY)
    configs, _ = P.sample(TINY, "mixed", 0, range(8))
    data = dataset_from_configs(task, configs, P.solve(TINY, configs), regions=False)
    cfg = fit_to_problem(default_model_config("tiny", "fno"), P, TINY)
    res = train(cfg, TrainConfig(epochs=1, batch_size=4, channels_last=True), data, physics=task, device="cpu")
    assert len(res.history) == 1 and np.isfinite(res.history[0]["loss"])
    assert res.model.spectral[0].low.dim() == 5  # trained, where Module.to(memory_format=...) refused it
