"""One model on two Ray Train workers (DDP over gloo, on the tests' shared 2-CPU cluster): `curate train --workers 2`
and `curate run --train-workers 2` train what one process trains at the same global batch, and a request the
cluster cannot place is refused before any work.

Tolerance. Both workers run the same global batches in the same order, the loss is the global batch's, and
BatchNorm normalises over the global batch (`SyncBatchNorm2d`), so the steps differ from one process's only by
floating-point summation order (a rank beyond a last batch smaller than the world runs the step on no rows). The
training loss agrees to 0.06 % after four epochs of the tiny preset; the tests
allow 1 %. Validation (eval mode, running statistics) differs by up to 2 %: the bias of the convolution ahead of
BatchNorm has a gradient of float-noise size (BatchNorm subtracts it again), Adam turns that noise into full-size
steps, and the running mean follows the bias it drifted to; so 5 % for validation. Without the synchronised
BatchNorm the same training losses differ by up to 16 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ray_train_leftovers
from test_loop import tiny_config
from test_train import _write_npz

from diffcurate.curate.loop.rundir import RunPaths, init_run, read_rounds
from diffcurate.model.checkpoint import load_checkpoint

RTOL, VAL_RTOL = 0.01, 0.05


@pytest.fixture(autouse=True)
def no_train_actors_left():
    """Every test here stops what Ray Train started for it (the controller, its dataset manager, the mailbox)."""
    yield
    assert ray_train_leftovers() == []


def _curve(path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return np.array([r["loss"] for r in rows]), np.array([r["val_mae"] for r in rows])


def test_curate_train_on_two_workers_matches_one_process(ray_cluster, cli, tmp_path):
    data = _write_npz(tmp_path / "d.npz", n=90)  # 81 training samples: the last batch of 16 is one row, rank 1's empty
    args = ["--data", data, "--preset", "tiny", "--epochs", "4", "--batch-size", "16", "--device", "cpu", "--json"]
    code, out, err = cli("train", tmp_path / "one", *args, "--no-progress")
    assert code == 0, err
    code, out, err = cli("train", tmp_path / "two", *args, "--no-progress", "--workers", "2")
    assert code == 0, err
    two = json.loads(out.strip().splitlines()[-1])
    assert two["workers"] == 2 and two["epochs_run"] == 4 and two["train_size"] == 81
    loss1, val1 = _curve(tmp_path / "one" / "checkpoints" / "train.jsonl")
    loss2, val2 = _curve(tmp_path / "two" / "checkpoints" / "train.jsonl")
    np.testing.assert_allclose(loss2, loss1, rtol=RTOL)
    np.testing.assert_allclose(val2, val1, rtol=VAL_RTOL)
    assert loss1[-1] < 0.7 * loss1[0]  # and it learned
    net, meta = load_checkpoint(two["checkpoint"])  # rank 0's best weights, checksummed
    assert meta["metrics"]["val"]["mae"]["all"] == two["val"]["mae"]["all"]
    assert abs(two["val"]["mae"]["all"] - val2[two["best_epoch"]]) < 1e-6


def test_curate_run_trains_each_round_on_two_workers(ray_cluster, cli, tmp_path):
    """Round 0 of a run with ray.train_workers = 2 against the same round of one trainer actor: same data, same
    seed, curves within the tolerance; the driver writes the checkpoint and the log, the config records N. The
    actors keep their default CPUs on the 2-CPU cluster (README's example): while the workers train, the trainer
    actor reserves none, and the two workers share the CPU the solver actor leaves."""
    roots = {}
    for n in (1, 2):
        root = roots[n] = tmp_path / f"w{n}"
        cfg = tiny_config("random")
        init_run(root, cfg)
        code, _, err = cli("run", root, "--rounds", "0", "--train-workers", str(n))
        assert code == 0, err
        # the driver's epoch bar, fed by the `EpochCounter` the trainer actor or rank 0 awaits each epoch
        bar = next(line for line in err.splitlines() if line.startswith("round 0: training"))
        assert f"{cfg.train.epochs}/{cfg.train.epochs}" in bar, err
    rounds = {n: read_rounds(r)[0] for n, r in roots.items()}
    assert rounds[1]["train_size"] == rounds[2]["train_size"] == 40
    curves = {n: _curve(RunPaths(r).round(0).train_log(0)) for n, r in roots.items()}
    np.testing.assert_allclose(curves[2][0], curves[1][0], rtol=RTOL)
    np.testing.assert_allclose(curves[2][1], curves[1][1], rtol=VAL_RTOL)
    fit = json.loads(RunPaths(roots[2]).round(0).fit.read_text())
    assert fit["epochs"] == len(curves[2][0]) and fit["train_size"] == 40
    ck = torch.load(RunPaths(roots[2]).checkpoint(0), weights_only=True)
    assert ck["epoch"] == fit["best_epoch"]
    assert "train_workers = 2" in RunPaths(roots[2]).config.read_text()
    test = {n: r["test"]["mae"]["all"] for n, r in rounds.items()}
    assert abs(test[2] - test[1]) < 0.1 * test[1]


def test_more_training_workers_than_the_cluster_holds_is_refused(ray_cluster, cli, tmp_path):
    root = tmp_path / "big"
    init_run(root, tiny_config("random"))
    before = RunPaths(root).config.read_text()
    code, _, err = cli("run", root, "--train-workers", "8", "--no-wait")
    assert code == 2 and "8 training workers" in err and "free" in err
    assert [line for line in err.splitlines() if line.startswith("error")] == [err.splitlines()[-1]]
    assert "Traceback" not in err
    assert RunPaths(root).config.read_text() == before and read_rounds(root) == []
    data = _write_npz(tmp_path / "d.npz", n=20)
    code, _, err = cli("train", tmp_path / "t", "--data", data, "--preset", "tiny", "--workers", "8", "--device", "cpu")
    assert code == 2 and "training workers" in err and len(err.strip().splitlines()) == 1
    bad = ["--clamp-sources", "--transform", "sqrt"]  # refused where one process refuses it, before workers start
    code, _, err = cli("train", tmp_path / "t", "--data", data, "--preset", "tiny", "--workers", "2", *bad)
    assert code == 2 and "clamp_sources" in err and len(err.strip().splitlines()) == 1


def test_each_rank_takes_its_rows_and_the_parts_add_up_to_the_batch_loss():
    """The pieces the tolerance rests on: rows rank::world of every global batch (none for a rank beyond a last
    batch smaller than the world), and loss numerators and denominators that add up over the ranks to the whole
    batch's, an empty share included."""
    from diffcurate.model.losses import LossSpec, loss_parts, loss_value
    from diffcurate.model.parallel import Shard

    x, y = torch.arange(5.0)[:, None], -torch.arange(5.0)[:, None]
    assert Shard(1, 2).rows(x, y)[0].flatten().tolist() == [1.0, 3.0]
    assert len(Shard(1, 2).rows(x[:1], y[:1])[0]) == 0 and len(Shard(0, 2).rows(x[:1], y[:1])[0]) == 1
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(6, 1, 8, 8, generator=g), torch.rand(6, 1, 8, 8, generator=g)
    for spec in (LossSpec(pointwise="mae", reduction="mean"), LossSpec(pointwise="huber", weight="exp", a=50.0)):
        for world in (2, 4, 8):  # 8 ranks for 6 rows: two shares are empty
            parts = [loss_parts(spec, pred[r::world], target[r::world]) for r in range(world)]
            whole = sum(p[0] for p in parts) / sum(p[1] for p in parts)
            torch.testing.assert_close(whole, loss_value(spec, pred, target))


def test_the_drivers_epoch_bar_counts_the_epochs_wherever_training_runs(ray_cluster, tmp_path):
    """The bar of `curate run` and `curate train --workers` reads an `EpochCounter` that the trainer actor (or rank
    0) awaits each epoch, not a log file on the driver's disk, so it follows a trainer on any node: when the
    training returns, the counter holds every epoch it ran. (Rank 0's counting: the bar of the two-worker run.)"""
    import ray
    from conftest import TINY, tiny_configs

    from diffcurate.curate.cluster.actors import FitJob, Solved, make_counter, make_trainers
    from diffcurate.curate.loop.config import default_config
    from diffcurate.solvers.registry import solve

    cfg = default_config("tiny")
    sets = [tiny_configs(n, seed) for n, seed in ((24, 1), (8, 2))]
    train_ref, val_ref = (ray.put(Solved(c, solve(TINY, c, "fast", dtype="float32"))) for c in sets)
    counter = make_counter()
    job = FitJob(train_ref, val_ref, cfg.model, cfg.train, TINY, str(tmp_path / "w"), "elsewhere", progress=counter)
    (trainer,) = make_trainers(1, num_cpus=0.5)
    out = ray.get(trainer.fit.remote(job))
    assert out["epochs"] == cfg.train.epochs == ray.get(counter.count.remote())
    ray.kill(trainer)
    ray.kill(counter)
    assert not (tmp_path / "w").exists()  # it did not write into a work dir that is not on its node
