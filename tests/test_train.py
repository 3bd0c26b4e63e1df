"""Real (tiny-preset) training: it learns, is deterministic, resumes exactly after a kill, warm-starts, and its
checkpoints round-trip through torch.load(weights_only=True). Also the model CLI end to end."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from diffcurate.common.errors import InputError
from diffcurate.curate.store.dataset import load_data
from diffcurate.model.callbacks import EachEpoch
from diffcurate.model.checkpoint import atomic_save, load_checkpoint, read_checkpoint
from diffcurate.model.data import default_num_workers, synthetic_configs, synthetic_dataset
from diffcurate.model.metrics import evaluate_model
from diffcurate.model.nets import default_model_config
from diffcurate.model.train import TrainConfig, default_train_config, train
from diffcurate.solvers.problem import PRESETS

torch.set_num_threads(1)
TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(TINY.physics, 256, TINY.sources, seed=0), synthetic_dataset(
        TINY.physics, 64, TINY.sources, seed=1
    )


def _cfg(**kw) -> TrainConfig:
    return default_train_config("tiny", **{"epochs": 4, "batch_size": 16, **kw})


def _run(data, out=None, **kw):
    tr, va = data
    return train(default_model_config("tiny", "edcnn"), _cfg(**kw), tr, va, out, physics=TINY.physics, device="cpu")


def test_training_learns_and_logs(data, tmp_path):
    res = _run(data, tmp_path, epochs=8)
    zero_mae = data[1].y.abs().mean().item()  # predicting 0 everywhere
    assert res.best_val < 0.5 * zero_mae
    assert res.val_metrics["mae"]["all"] == pytest.approx(res.best_val)
    lines = [json.loads(s) for s in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(8))
    assert lines[-1]["lr"] < lines[0]["lr"]  # the cosine tail ran
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    assert not res.model.training


def test_seeded_runs_are_identical(data):
    a, b = _run(data, epochs=2), _run(data, epochs=2)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    c = _run(data, epochs=2, seed=1)
    assert not torch.equal(next(iter(a.model.parameters())), next(iter(c.model.parameters())))


def test_resume_after_kill_matches_uninterrupted(data, tmp_path):
    full = _run(data, tmp_path / "full", schedule="random", schedule_prob=0.5, weight="exp")

    def kill(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    tr, va = data
    cfg = _cfg(schedule="random", schedule_prob=0.5, weight="exp")
    mc = default_model_config("tiny", "edcnn")
    with pytest.raises(KeyboardInterrupt):
        train(mc, cfg, tr, va, tmp_path / "cut", physics=TINY.physics, device="cpu", callbacks=[EachEpoch(kill)])
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = train(mc, cfg, tr, va, tmp_path / "cut", physics=TINY.physics, device="cpu", resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    for p, q in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    lines = (tmp_path / "cut" / "train.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [0, 1, 2, 3]
    with pytest.raises(InputError, match="cannot resume"):
        train(mc, _cfg(lr=1e-2), tr, va, tmp_path / "cut", physics=TINY.physics, device="cpu", resume=True)


def test_warm_start_begins_where_the_checkpoint_left_off(data, tmp_path):
    first = _run(data, tmp_path / "a")
    tr, va = data
    mc = default_model_config("tiny", "edcnn")
    warm = train(
        mc, _cfg(epochs=1, lr=1e-5), tr, va, physics=TINY.physics, device="cpu", init_from=tmp_path / "a" / "best.pt"
    )
    cold = train(mc, _cfg(epochs=1, lr=1e-5), tr, va, physics=TINY.physics, device="cpu")
    assert warm.best_val < 1.2 * first.best_val < cold.best_val


def test_checkpoint_round_trip_weights_only(data, tmp_path):
    res = _run(data, tmp_path, epochs=1)
    raw = torch.load(tmp_path / "best.pt", weights_only=True)
    assert raw["model_config"]["arch"] == "edcnn" and raw["physics"]["lattice"] == 32 and raw["preset"] == "tiny"
    assert raw["problem"] == "diffusion" and raw["model_config"]["in_channels"] == 1
    model, meta = load_checkpoint(tmp_path / "best.pt", physics=TINY.physics)
    x = data[1].x[:5]  # (5, 1, L, L)
    with torch.no_grad():
        assert torch.equal(model(x), res.model(x))
    assert meta["train_config"] == _cfg(epochs=1).to_dict() and "state_dict" not in meta
    assert TrainConfig.from_dict(meta["train_config"]) == _cfg(epochs=1)
    with pytest.raises(InputError, match="trained for physics tiny"):
        load_checkpoint(tmp_path / "best.pt", physics=PRESETS["small"].physics)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    # a format this version does not know is refused, as the store refuses an unknown schema
    atomic_save({**raw, "format": "diffcurate.model/99"}, tmp_path / "future.pt")
    with pytest.raises(InputError, match="format 'diffcurate.model/99'"):
        load_checkpoint(tmp_path / "future.pt")
    untagged = {k: v for k, v in raw.items() if k not in ("format", "checksum")}  # older files: still read
    torch.save(untagged, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[1]["model_config"] == raw["model_config"]


def test_sqrt_transform_and_toggle_train(data):
    res = _run(data, epochs=3, transform="sqrt", schedule="toggle", schedule_period=1, weight="step", a=10.0)
    assert [h["loss_index"] for h in res.history] == [0, 1, 0]
    m, per = evaluate_model(res.model, data[1], transform="sqrt")
    assert m["mae"]["all"] == pytest.approx(res.best_val) and per.shape == (64,)


def test_clamp_sources_makes_the_discs_exact(data):
    """Hard constraint for fixed sources: the disc pixels equal the painted input, whatever the weights."""
    tr, va = data
    mc = default_model_config("tiny", "unet")
    mc.clamp_sources = True
    res = train(mc, _cfg(epochs=2), tr, va, physics=TINY.physics, device="cpu")
    m, _ = evaluate_model(res.model, va)
    assert m["mae"]["sources"] < 1e-7 < m["mae"]["field"]
    plain = _run(data, epochs=2)
    assert evaluate_model(plain.model, va)[0]["mae"]["sources"] > 1e-3
    with pytest.raises(InputError, match="transform none"):
        train(mc, _cfg(epochs=1, transform="sqrt"), tr, va, physics=TINY.physics, device="cpu")
    with pytest.raises(InputError, match="fixed-value sources"):
        ph = dataclasses.replace(TINY.physics, source_model="production")
        train(mc, _cfg(epochs=1), tr, va, physics=ph, device="cpu")


def test_bad_train_options(data):
    with pytest.raises(InputError, match="unknown loss"):
        _run(data, loss="l7")
    with pytest.raises(InputError, match="unknown transform"):
        _run(data, transform="log")


# ------------------------------------------------------------------------------------------------- data + CLI
def _write_npz(path, n=96, seed=0):
    from diffcurate.solvers import solve

    configs = synthetic_configs(TINY.physics, n, TINY.sources, seed)
    y = solve(TINY.physics, configs, "fast", dtype="float32")
    from diffcurate.solvers.problem import paint

    ph = TINY.physics.to_dict()
    np.savez(
        path,
        centers=configs.centers,
        values=configs.values,
        counts=configs.counts,
        x=paint(TINY.physics, configs),
        y=y,
        **{k: np.asarray(v) for k, v in ph.items()},
    )
    return path


def test_load_data_split_is_deterministic_and_disjoint(tmp_path):
    path = _write_npz(tmp_path / "d.npz", n=50)
    tr, ph = load_data(path, "train", seed=3)
    va, _ = load_data(path, "val", seed=3)
    al, _ = load_data(path, "all")
    assert ph.params == TINY.physics and ph.name == "diffusion" and (len(tr), len(va), len(al)) == (45, 5, 50)
    rows = {tuple(al.y[i].flatten()[:8].tolist()) for i in range(50)}
    got = [tuple(d.y[i].flatten()[:8].tolist()) for d in (tr, va) for i in range(len(d))]
    assert set(got) == rows and len(got) == 50
    assert torch.equal(load_data(path, "val", seed=3)[0].y, va.y)
    assert not torch.equal(load_data(path, "val", seed=4)[0].y, va.y)
    x, y, regions, count = tr[0]
    mask = regions[:1]  # the diffusion problem's first region: the discs
    assert x.shape == y.shape == mask.shape == (1, 32, 32) and mask.dtype == torch.bool and count.dtype == torch.int64
    assert (x[mask] >= 0).all() and (x[~mask] == 0).all()
    with pytest.raises(InputError, match="not found"):
        load_data(tmp_path / "missing.npz")


def test_cli_train_evaluate_export(tmp_path):
    from typer.testing import CliRunner

    from diffcurate.curate.cli.app import app

    data = _write_npz(tmp_path / "d.npz")
    run = CliRunner().invoke
    r = run(app, ["train", str(tmp_path / "run"), "--data", str(data), "--epochs", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    assert ckpt.exists()
    out = tmp_path / "m.json"
    r = run(app, ["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(out.read_text())
    assert json.loads(r.stdout) == m
    assert m["n_samples"] == 96 and set(m["mae"]) == {"all", "sources", "field", "r1", "r2", "r3"}
    assert set(m["per_sample_mae"]) == {"mean", "p50", "p95", "p99", "max"}
    ts = tmp_path / "m.ts"
    r = run(app, ["export-model", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(ts)])
    assert r.exit_code == 0, r.output
    scripted = torch.jit.load(str(ts))
    model, _ = load_checkpoint(ckpt)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-6)
    r = run(app, ["model-info", "--model", "edcnn", "--preset", "paper", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["parameters"] == 50_307_969
    r = run(app, ["train", str(tmp_path / "run2"), "--data", str(data), "--loss", "l7", "--epochs", "1"])
    assert isinstance(r.exception, InputError) and "unknown loss" in str(r.exception)
    r = run(app, ["evaluate", "--checkpoint", str(ckpt), "--data", str(tmp_path / "none.npz"), "--out", str(out)])
    assert isinstance(r.exception, InputError)


def test_default_loader_workers_follow_the_measurement():
    """0 workers on a CPU trainer (measured faster on 2 cores) and at small L; workers only for a GPU at L >= 256,
    leaving one core to the trainer."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert default_num_workers(512, cpu) == 0 and default_num_workers(64, gpu) == 0
    assert default_num_workers(512, gpu) == max(0, min(4, (os.cpu_count() or 1) - 1))


def test_a_stored_last_checkpoint_resumes_to_the_recorded_run(tmp_path):
    """tests/data/resume holds a stored last.pt (written by the trainer after epoch 1 of 3) and the history of the
    uninterrupted run it belongs to. Resuming the stored file reproduces the recorded epochs, and the last.pt
    written now holds the same keys in the same order (and the plateau stop's): a stored checkpoint resumes into
    the same run."""
    import shutil
    from pathlib import Path

    stored = Path(__file__).parent / "data" / "resume"
    expected = json.loads((stored / "expected.json").read_text())["history"]
    tr = synthetic_dataset(TINY.physics, 64, TINY.sources, seed=0)
    va = synthetic_dataset(TINY.physics, 16, TINY.sources, seed=1)
    cfg = default_train_config("tiny", epochs=3, batch_size=16, schedule="random", weight="exp")
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(stored / "last.pt", out / "last.pt")
    old_keys = list(read_checkpoint(out / "last.pt"))
    res = train(
        default_model_config("tiny", "edcnn"), cfg, tr, va, out, physics=TINY.physics, device="cpu", resume=True
    )
    assert [r["epoch"] for r in res.history] == [0, 1, 2]
    for got, want in zip(res.history, expected, strict=True):
        assert got["loss_index"] == want["loss_index"] and got["best_epoch"] == want["best_epoch"]
        for key in ("loss", "lr", "val_mae"):
            assert got[key] == pytest.approx(want[key], rel=1e-4), (got["epoch"], key)
    keys = list(read_checkpoint(out / "last.pt"))  # the stored keys in their order, the plateau stop's two, the problem
    new = {"decay_from", "decay_steps", "problem"}
    assert [k for k in keys if k in old_keys] == old_keys and set(keys) - set(old_keys) == new
    assert read_checkpoint(out / "last.pt")["epoch"] == 2


def test_train_state_keeps_the_best_weights_and_stops_on_patience():
    """The state's bookkeeping by hand: best on a strictly lower score, patience counts epochs since the best."""
    from diffcurate.model.state import TrainState

    net = torch.nn.Linear(1, 1)
    st = TrainState(net, torch.optim.Adam(net.parameters()), best_state={})
    st.end_epoch(0, 0.5, patience=2)
    first = st.best_state["weight"].clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    st.end_epoch(1, 0.5, patience=2)  # not lower: the best stays epoch 0
    assert (st.best_epoch, st.since_best, st.stopped, st.epoch) == (0, 1, False, 2)
    assert torch.equal(st.best_state["weight"], first)
    st.end_epoch(2, 0.7, patience=2)
    assert st.stopped and st.since_best == 2
    st.end_epoch(3, 0.1, patience=None)
    assert (st.best_epoch, st.since_best, st.stopped) == (3, 0, False)
    assert torch.equal(st.best_state["weight"], net.weight.detach())


def test_plateau_stop_cools_down_after_patience_and_ends_at_the_lr_floor(data, tmp_path):
    """stop = plateau, with a learning rate so small that val MAE barely moves: patience fires after
    min_steps, the cosine cool-down runs round(cooldown x epochs so far) epochs and ends at lr x final_lr_ratio,
    the best weights come back; a kill mid cool-down resumes to the same run."""
    tr, va = data
    kw = dict(stop="plateau", patience=2, min_steps=64, cooldown=0.5, epochs=40, final_lr_ratio=0.01)
    res = _run(data, tmp_path / "full", lr=1e-3, **kw)
    h = res.history
    spe = -(-len(tr) // 16)
    assert len(h) < 40 and res.stopped_early
    # no stop before min_steps (64 steps = 4 epochs at 16 steps each)
    assert len(h) * spe >= 64
    # the lr stays at its peak until the cool-down, then falls to the floor on the last step
    flat = [r["lr"] for r in h if r["lr"] == pytest.approx(1e-3)]
    assert len(flat) >= 4 and h[-1]["lr"] == pytest.approx(1e-5, rel=1e-3)
    n_flat = len(flat)
    assert len(h) - n_flat == max(1, round(0.5 * n_flat))  # cool-down length from the epochs before it
    assert res.best_val == min(r["val_mae"] for r in h) and h[-1]["best_epoch"] == res.best_epoch

    def kill(epoch, record):
        if epoch == n_flat:  # the first epoch of the cool-down
            raise KeyboardInterrupt

    mc = default_model_config("tiny", "edcnn")
    cfg = _cfg(lr=1e-3, **kw)
    with pytest.raises(KeyboardInterrupt):
        train(mc, cfg, tr, va, tmp_path / "cut", physics=TINY.physics, device="cpu", callbacks=[EachEpoch(kill)])
    resumed = train(mc, cfg, tr, va, tmp_path / "cut", physics=TINY.physics, device="cpu", resume=True)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in h]
    assert [r["val_mae"] for r in resumed.history] == [r["val_mae"] for r in h]


def test_plateau_stop_is_bounded_by_max_steps(data):
    """A max_steps bound ends the run with its cool-down done, whether or not val MAE has stopped improving."""
    res = _run(data, stop="plateau", patience=100, max_steps=96, cooldown=0.5, epochs=40)
    assert len(res.history) == 6  # 96 steps / 16 per epoch
    assert res.history[-1]["lr"] == pytest.approx(res.history[0]["lr"] * 0.01, rel=1e-3)


def test_in_memory_batches_equal_the_streaming_ones_and_channels_last_trains(data, monkeypatch):
    """The in-memory path slices the same batches as the DataLoader collates: bit-identical weights."""
    import diffcurate.model.train as trainer

    fast = _run(data, epochs=2)
    monkeypatch.setattr(trainer, "in_memory", lambda d: None)
    slow = _run(data, epochs=2)
    for p, q in zip(fast.model.state_dict().values(), slow.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    nhwc = _run(data, epochs=2, channels_last=True)
    assert nhwc.history[-1]["val_mae"] == pytest.approx(fast.history[-1]["val_mae"], rel=0.05)
    with pytest.raises(InputError, match="patience"):
        _cfg(stop="plateau").loss_specs()


def test_sigterm_stops_curate_train_like_ctrl_c(tmp_path):
    """A scheduler's SIGTERM, sent once the first epoch is logged: exit 143, the one "interrupted" line, no
    traceback, and the last epoch's checkpoint kept for the rerun to resume from."""
    import signal
    import subprocess
    import sys
    import time

    data = _write_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "diffcurate.curate", "train", str(out), "--data", str(data), "--epochs", "500"]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while (
        time.time() < deadline and proc.poll() is None and not any(p.stat().st_size for p in out.rglob("train.jsonl"))
    ):
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted: everything committed so far is kept"), err
    assert read_checkpoint(next(out.rglob("last.pt")))["epoch"] >= 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_store_trains_to_the_weights_of_the_in_memory_set(data, tmp_path, monkeypatch, workers):
    """A store too big to hold streams whole batches (one LMDB transaction each, y and the configurations only)
    and x is painted on the device: bit-identical weights to the in-memory path on the same samples, with or
    without loader workers."""
    import diffcurate.model.train as trainer
    from diffcurate.curate.store.dataset import StoreDataset
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.model.data import dataset_from_configs

    tr, va = data
    cfg = synthetic_configs(TINY.physics, len(tr), TINY.sources, seed=0)  # synthetic_dataset's configurations
    with Store.create(tmp_path / "s", TINY.physics) as st:
        st.add(cfg, tr.y.numpy()[:, 0], split="train")
        ids = st.ids("train")
        c, y, _ = st.get(ids)
    held = dataset_from_configs(TINY.physics, c, y)  # the store's samples in its order, in memory
    streamed = StoreDataset(tmp_path / "s", "train")
    assert streamed.ids == list(ids)
    mc, tc = default_model_config("tiny", "edcnn"), _cfg(epochs=2)
    a = train(mc, tc, held, va, physics=TINY.physics, device="cpu")
    monkeypatch.setattr(trainer, "in_memory", lambda d: None)
    b = train(mc, tc, streamed, va, physics=TINY.physics, device="cpu", num_workers=workers)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
