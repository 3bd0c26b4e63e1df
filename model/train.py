"""The trainer: seeded, device-agnostic, resumable after a kill, warm-startable, keeps best-on-val weights.

Every epoch ends by writing `last.pt` (model, optimizer, epoch, best weights, RNG state, history) atomically, so a
killed run resumes from its last completed epoch and reproduces the uninterrupted run exactly on CPU. The learning
rate is a pure function of the global step (warm-up, constant, cosine), so it needs no scheduler state; the
shuffle order and the loss schedule are drawn from (seed, epoch), so they need none either.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from diffcurate.common.device import resolve_device
from diffcurate.common.errors import InputError
from diffcurate.common.typed import build_typed
from diffcurate.model.callbacks import Callback
from diffcurate.model.checkpoint import (
    Blob,
    atomic_save,
    check_physics,
    cpu_state,
    read_checkpoint,
    save_checkpoint,
)
from diffcurate.model.data import ArrayDataset, Batches, batch_to_device, default_num_workers, reads_batches
from diffcurate.model.losses import (
    LOSS_PARAMS,
    LossParams,
    LossSpec,
    lr_at,
    schedule_index,
    transform_pair,
)
from diffcurate.model.metrics import Metrics, evaluate_model
from diffcurate.model.nets import build_model, config_from_dict, config_to_dict
from diffcurate.model.parallel import Shard
from diffcurate.model.state import TrainState
from diffcurate.solvers.interface import Task
from diffcurate.solvers.plugins import as_task
from diffcurate.solvers.problem import Physics

LAST = "last.pt"
BEST = "best.pt"
STOPS = ("epochs", "plateau")
AMP = ("auto", "bf16", "fp32")
# a training set up to this size is held as two tensors and sliced into batches (no DataLoader, no collation);
# larger ones stream through a DataLoader
IN_MEMORY_BYTES = 2 << 30
# the schedule's alternate weight when none is given: the paper toggles between the step and exp prefactors
_OTHER_WEIGHT = {"exp": "step", "step": "exp", "none": "exp"}


@dataclass
class TrainConfig(LossParams):
    """Everything that decides a training run (stored in checkpoints as plain data). The loss hyperparameters
    (delta, w, a, b, reduction) are `LossParams`' fields, shared with the losses this config builds."""

    epochs: int = 30  # stop = epochs: epochs per round (the run's `round_steps` may add more); plateau: the most epochs
    batch_size: int = 32  # samples per optimiser step
    lr: float = 1e-3  # Adam learning rate (peak)
    warmup_steps: int = 0  # steps of linear warm-up from 0 to lr
    const_frac: float = 0.6  # share of the steps at the peak lr before the cosine decay starts
    final_lr_ratio: float = 0.01  # lr at the last step, as a fraction of the peak
    weight_decay: float = 0.0  # Adam weight decay
    grad_clip: float | None = 1.0  # gradient-norm clip (absent: none)
    loss: str = "mae"  # pointwise penalty: mae, mse, huber or berhu
    weight: str = "none"  # per-pixel weight w(y): none, exp = exp(-(1 - y) / w), step = 1 + a tanh(b y) (the paper's)
    alt_loss: str | None = None  # the penalty the schedule switches to (absent: the same)
    alt_weight: str | None = None  # the weight the schedule switches to (absent: exp <-> step)
    transform: str = "none"  # target transform: none or sqrt (predictions are mapped back)
    schedule: str = "fixed"  # loss schedule: fixed, toggle (every schedule_period epochs) or random
    schedule_period: int = 5  # epochs between toggles
    schedule_prob: float = 0.8  # random schedule: probability of the primary loss in an epoch
    patience: int | None = None  # epochs without a better val MAE before a stop or cool-down (absent: never)
    stop: str = "epochs"  # epochs: train `epochs` epochs; plateau: constant lr until val MAE stalls for `patience` epochs, then a cosine cool-down to the lr floor, then stop (training to convergence; best weights kept either way)
    min_steps: int = 0  # plateau: optimiser steps before a stall may start the cool-down
    max_steps: int = 0  # plateau: the cool-down ends by this many steps at the latest (0: `epochs` bounds it alone)
    cooldown: float = 0.2  # plateau: the cool-down's length as a fraction of the epochs before it (at least one epoch)
    channels_last: bool = False  # NHWC activations (faster convolutions on CPUs; docs/benchmarks.md)
    amp: str = "auto"  # bf16 autocast of the forward pass: auto (on a GPU), bf16 (also on a CPU), fp32 (never)
    seed: int = 0  # network init, shuffle order and loss schedule

    def to_dict(self) -> dict:
        """Plain data: the trainer's own fields, then the loss hyperparameters."""
        d = asdict(self)
        return {k: d[k] for k in sorted(d, key=lambda k: k in LOSS_PARAMS)}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return build_typed(cls, d, "train config")

    def loss_specs(self) -> tuple[LossSpec, LossSpec]:
        """(primary, alternate) losses; the schedule picks one per epoch. Validates names."""
        params = self.loss_params()
        primary = LossSpec(self.loss, self.weight, **params).check()
        alt_weight = self.alt_weight or (
            _OTHER_WEIGHT.get(self.weight, self.weight) if self.schedule != "fixed" else self.weight
        )
        alternate = LossSpec(self.alt_loss or self.loss, alt_weight, **params).check()
        schedule_index(self.schedule, 0)
        transform_pair(self.transform)
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise InputError("epochs and batch size must be >= 1 and lr > 0")
        if self.stop not in STOPS:
            raise InputError(f"unknown stop rule {self.stop!r} (choose from {', '.join(STOPS)})")
        if self.stop == "plateau" and not self.patience:
            raise InputError("stop = plateau needs patience >= 1 (epochs without a better val MAE)")
        if self.amp not in AMP:
            raise InputError(f"unknown amp {self.amp!r} (choose from {', '.join(AMP)})")
        if self.min_steps < 0 or self.max_steps < 0 or not 0 < self.cooldown <= 1:
            raise InputError("need min_steps, max_steps >= 0 and cooldown in (0, 1]")
        return primary, alternate

    def autocast(self, dev: torch.device) -> bool:
        """Whether the forward pass runs under bf16 autocast on `dev`."""
        return self.amp == "bf16" or (self.amp == "auto" and dev.type == "cuda")


# each preset's [train] table where it differs from TrainConfig's defaults: training to convergence (stop =
# plateau: until val MAE has not improved for `patience` epochs, then a cosine cool-down, best weights kept;
# `epochs` and `max_steps` bound it). A curation run sets more on top (`RUN_PRESETS`, curate/loop/config.py).
TRAIN_PRESETS: dict[str, dict] = {
    # the authors' Adam lr 1e-4 and 100 epochs, as the bound of a plateau stop
    "paper": {"lr": 1e-4, "batch_size": 8, "epochs": 100, "stop": "plateau", "patience": 10},
    "small": {
        "lr": 2e-3,
        "batch_size": 16,
        "epochs": 400,
        "stop": "plateau",
        "patience": 20,
        "min_steps": 1000,
        "max_steps": 16000,
        "channels_last": True,
    },
    "tiny": {"lr": 3e-3, "batch_size": 16, "epochs": 10},
}


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """NHWC for the 2-D convolutions' weights, in place; parameters of other ranks (the FNO's spectral weights,
    (C_in, C_out, modes, modes, 2)) keep their layout, which `Module.to(memory_format=...)` would refuse."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            m.to(memory_format=torch.channels_last)
    return model


def default_train_config(preset: str, **overrides) -> TrainConfig:
    """`curate train`'s config for a preset (`TRAIN_PRESETS`) with explicit overrides, read like a [train] table."""
    if preset not in TRAIN_PRESETS:
        raise InputError(f"no default train config for preset {preset!r} (choose from {', '.join(TRAIN_PRESETS)})")
    return TrainConfig.from_dict({**TRAIN_PRESETS[preset], **overrides})


@dataclass
class TrainResult:
    model: torch.nn.Module  # best-on-val weights, eval mode
    history: list[dict]
    best_epoch: int
    best_val: float
    val_metrics: dict | None
    checkpoint: Path | None
    stopped_early: bool = False


def _same_form(model_config: dict) -> dict:
    """A stored model config as this version writes it (a file from before a field: its default)."""
    return config_to_dict(config_from_dict(model_config))


def _warm_state(init_from, model_config: dict, physics: Task | None = None) -> dict:
    """State dict to warm-start from: a checkpoint path, a checkpoint dict or a bare state_dict. A checkpoint
    of other physics or another architecture is refused."""
    obj = read_checkpoint(init_from) if isinstance(init_from, str | Path | Blob) else init_from
    init_from = init_from.name if isinstance(init_from, Blob) else init_from
    if "state_dict" in obj:
        check_physics(obj, physics, f"warm start {init_from}")
        if not obj["state_dict"]:
            raise InputError(f"warm start: {init_from} holds no weights")
        if obj.get("model_config") is not None and _same_form(obj["model_config"]) != model_config:
            raise InputError(f"warm start: checkpoint model {obj['model_config']} differs from {model_config}")
        return obj["state_dict"]
    return obj


def check_run(model_cfg, tc: TrainConfig, task: Task | None, train_data: Dataset) -> tuple[LossSpec, LossSpec]:
    """The (primary, alternate) losses, after every check that can refuse the run before it starts."""
    losses = tc.loss_specs()
    model_cfg.check(task.grid[0] if task is not None else None)
    if model_cfg.clamp_sources:
        if tc.transform != "none":
            raise InputError("clamp_sources copies the input into the discs; it needs --transform none")
        if task is not None and task.params_dict().get("source_model", "fixed") != "fixed":
            raise InputError("clamp_sources needs fixed-value sources (the input is not the field in the discs)")
    if len(train_data) == 0:
        raise InputError("training set is empty")
    return losses


def _new_state(mc: dict, tc: TrainConfig, dev: torch.device, init_from, physics: Task | None) -> TrainState:
    """Seeded initial weights (or a warm start's) and a fresh Adam."""
    torch.manual_seed(tc.seed)
    model = build_model(mc).to(dev)
    if init_from is not None:
        state = _warm_state(init_from, mc, physics)  # a damaged file is its own error (CheckError), not a misfit
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise InputError(f"warm start from {init_from}: weights do not fit ({str(e).splitlines()[0]})") from None
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    return TrainState(model, opt, best_state=cpu_state(model))


def max_epochs(tc: TrainConfig, n_train: int) -> int:
    """Epochs the run may take at most: `epochs`, and with stop = plateau also `max_steps`."""
    spe = -(-n_train // tc.batch_size)
    if tc.stop == "plateau" and tc.max_steps:
        return max(1, min(tc.epochs, -(-tc.max_steps // spe)))
    return tc.epochs


def plan_cooldown(state: TrainState, tc: TrainConfig, steps_per_epoch: int, max_epochs: int) -> None:
    """stop = plateau, after an epoch: start the cool-down once val MAE has not improved for `patience`
    epochs (and `min_steps` are done), or when only the cool-down's length is left before `max_epochs`;
    stop when it has run. The learning rate then ends at its floor where training ends."""
    done = state.epoch * steps_per_epoch
    if state.decay_from >= 0:
        state.stopped = done >= state.decay_from + state.decay_steps
        return
    length = max(1, round(tc.cooldown * state.epoch))  # epochs
    plateau = state.since_best >= (tc.patience or 0) and done >= tc.min_steps
    if plateau or state.epoch + length >= max_epochs:
        state.decay_from = done
        state.decay_steps = max(0, min(length, max_epochs - state.epoch)) * steps_per_epoch
        state.stopped = state.decay_steps == 0


def _lr(state: TrainState, tc: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of global step `step`: warm-up, constant, cosine to lr x final_lr_ratio, over the fixed
    epochs (stop = epochs) or over the cool-down once it has begun (stop = plateau)."""
    if tc.stop != "plateau":
        return lr_at(step, total_steps, tc.lr, tc.warmup_steps, tc.const_frac, tc.final_lr_ratio)
    if state.decay_from < 0 or step < state.decay_from:
        return lr_at(step, step + 1, tc.lr, tc.warmup_steps, 1.0, tc.final_lr_ratio)  # warm-up, then constant
    t = min(1.0, (step - state.decay_from + 1) / max(1, state.decay_steps))  # the last step trains at the floor
    return tc.lr * (tc.final_lr_ratio + (1 - tc.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def in_memory(data: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(x, y) as (n, C, H, W) float32 tensors when the set fits `IN_MEMORY_BYTES`, read once; else None."""
    if isinstance(data, ArrayDataset):
        return data.x, data.y  # no copy
    x0, y0 = data[0][:2]  # (C_in, H, W), (C_out, H, W)
    if len(data) * (x0.numel() + y0.numel()) * 4 > IN_MEMORY_BYTES:
        return None
    items = [data[i] for i in range(len(data))]
    return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])


def _batches(data: Dataset, tensors, order: torch.Tensor, tc: TrainConfig, num_workers: int, dev: torch.device):
    """The epoch's (x, y) batches in `order`: slices of the in-memory tensors; or, streamed, whole batches read by
    the loader's workers with x painted on the device (a dataset that reads batches: `Batches`); or a
    DataLoader's items. The same values every way."""
    if tensors is None and reads_batches(data):
        rows = BatchSampler(order.tolist(), tc.batch_size, drop_last=False)
        pin = dev.type == "cuda"
        loader = DataLoader(Batches(data), batch_size=None, sampler=rows, num_workers=num_workers, pin_memory=pin)
        return (batch_to_device(data.task, b, dev) for b in loader)
    if tensors is None:
        loader = DataLoader(data, batch_size=tc.batch_size, sampler=order.tolist(), num_workers=num_workers)
        return ((x, y) for x, y, _regions, _strata in loader)
    x, y = tensors
    return ((x[idx], y[idx]) for idx in order.split(tc.batch_size))


def _train_epoch(
    state: TrainState, tc: TrainConfig, batches, steps_per_epoch: int, spec: LossSpec, dev, shard: Shard
) -> tuple:
    """One pass over the batches: (sample-weighted mean loss, samples seen), over all ranks."""
    model, opt, epoch = state.model, state.opt, state.epoch
    total_steps = tc.epochs * steps_per_epoch
    forward_t = transform_pair(tc.transform)[0]
    fmt = torch.channels_last if tc.channels_last else torch.contiguous_format
    use_amp = tc.autocast(dev)
    net = state.forward if state.forward is not None else model
    model.train()
    loss_sum, seen = 0.0, 0
    for b, (x, y) in enumerate(batches):
        lr = _lr(state, tc, epoch * steps_per_epoch + b, total_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        n = len(x)
        x, y = shard.rows(x, y)  # this rank's rows of the global batch
        x = x.to(dev, non_blocking=True).contiguous(memory_format=fmt)  # (B, 1, L, L) float32
        y = y.to(dev, non_blocking=True)  # (B, 1, L, L) float32
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = net(x)  # (B, 1, L, L)
        loss, value = shard.loss(spec, pred.float(), forward_t(y), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        loss_sum += value * n
        seen += n
    return loss_sum / seen, seen


def _epoch(
    state: TrainState, tc: TrainConfig, losses, train_data, tensors, val_data, dev, num_workers: int, shard: Shard
) -> dict:
    """Train one epoch, score it on val, update the state; the epoch's record (also appended to the history).
    With several ranks, rank 0 validates and every rank takes its record, so they all decide alike."""
    epoch, t0 = state.epoch, time.perf_counter()
    which = schedule_index(tc.schedule, epoch, tc.schedule_period, tc.schedule_prob, tc.seed)
    order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(tc.seed * 7919 + epoch))
    spe = -(-len(train_data) // tc.batch_size)
    batches = _batches(train_data, tensors, order, tc, num_workers, dev)
    loss, seen = _train_epoch(state, tc, batches, spe, losses[which], dev, shard)
    speed = seen / (time.perf_counter() - t0)  # samples/s over the epoch's set-up and training, not validation
    record = {"epoch": epoch, "loss": loss, "loss_index": which, "lr": state.opt.param_groups[0]["lr"]}
    if val_data is not None and shard.lead:
        vm = Metrics.from_dict(evaluate_model(state.model, val_data, dev, tc.transform, max(64, tc.batch_size))[0])
        record.update(val_mae=vm.mae_all, val_rel_l2=vm.rel_l2)
    record = shard.agree(record)
    plateau = tc.stop == "plateau"
    state.end_epoch(
        epoch, record["val_mae"] if val_data is not None else record["loss"], None if plateau else tc.patience
    )
    if plateau:
        plan_cooldown(state, tc, spe, max_epochs(tc, len(train_data)))
    seconds = time.perf_counter() - t0
    record.update(best_epoch=state.best_epoch, train_samples_per_s=speed, seconds=seconds, stopped_early=state.stopped)
    state.history.append(record)
    return record


def _write_log(path: Path | None, history: list[dict]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in history))


def train(
    model_config,
    train_config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset | None = None,
    out_dir=None,
    *,
    physics: Task | Physics | None = None,  # what the data is of (a diffusion Physics: the diffusion problem's)
    device: str | torch.device = "auto",
    resume: bool = False,
    init_from=None,
    callbacks: Sequence[Callback] = (),
    num_workers: int | None = None,  # DataLoader workers; None: `default_num_workers`
    shard: Shard | None = None,  # data-parallel: this process's rank (out_dir and progress for rank 0 only)
) -> TrainResult:
    """Train a model from scratch, from `init_from` (warm start), or resume `out_dir/last.pt`.

    Early stopping and best weights use the pooled val MAE (train loss when there is no val set). Writes
    out_dir/last.pt each epoch and out_dir/best.pt (best weights + val metrics) at the end; returns the
    best model. The `callbacks` (a progress bar, gauges, a test's fault) watch the epochs from rank 0."""
    tc = train_config
    model_cfg = config_from_dict(model_config) if isinstance(model_config, dict) else model_config
    mc = config_to_dict(model_cfg)  # the plain data that checkpoints hold and resumes compare
    physics = as_task(physics)
    losses = check_run(model_cfg, tc, physics, train_data)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if num_workers is None:
        L = physics.grid[0] if physics is not None else int(train_data[0][0].shape[-1])  # item x: (C, H, W)
        num_workers = default_num_workers(L, dev)
    shard = shard or Shard()
    if shard.world > 1 and resume:
        raise InputError("data-parallel training starts its epochs afresh: resume needs one process")
    if not shard.lead:  # rank 0 alone writes, shows progress and reports
        out_dir, callbacks = None, ()
    out = Path(out_dir) if out_dir is not None else None
    log = out / "train.jsonl" if out else None
    last = out / LAST if out else None
    val_data = val_data if val_data is not None and len(val_data) > 0 else None  # an empty val set: none

    state = _new_state(mc, tc, dev, init_from, physics)
    if resume and last is not None and last.exists():
        st = read_checkpoint(last)
        stored = TrainConfig.from_dict(st["train_config"]).to_dict()  # a file from before a field: its default
        if _same_form(st["model_config"]) != mc or stored != tc.to_dict():
            raise InputError(f"{last}: cannot resume, its model/train config differs from the requested one")
        state.restore(st, dev)
        _write_log(log, state.history)  # drop lines of an epoch that was killed before its checkpoint
    elif log is not None and log.exists():
        log.unlink()

    bound = max_epochs(tc, len(train_data))
    tensors = in_memory(train_data)
    if tc.channels_last:
        to_channels_last(state.model)
    state.forward = shard.wrap(state.model, dev)
    for cb in callbacks:
        cb.on_train_start(bound, state.epoch)
    try:
        while state.epoch < bound and not state.stopped:
            record = _epoch(state, tc, losses, train_data, tensors, val_data, dev, num_workers, shard)
            if last is not None:
                atomic_save(state.to_checkpoint(mc, tc.to_dict(), physics, dev), last)
            if log is not None:
                with log.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            for cb in callbacks:
                cb.on_epoch_end(record)
    finally:
        for cb in callbacks:
            cb.on_train_end()
    return _finish(state, mc, tc, val_data if shard.lead else None, dev, physics, out)


def _finish(state: TrainState, mc: dict, tc: TrainConfig, val_data, dev, physics, out):
    """Best weights into the model (eval mode), their val metrics, and `out/best.pt`."""
    model = state.model
    model.load_state_dict(state.best_state)
    model.eval()
    val_metrics = evaluate_model(model, val_data, dev, tc.transform)[0] if val_data is not None else None
    ckpt = None
    if out is not None:
        metrics = {"val": val_metrics} if val_metrics else {}
        ckpt = save_checkpoint(
            out / BEST,
            model,
            mc,
            tc,
            physics,
            metrics=metrics,
            epoch=state.best_epoch,
            history=state.history,
        )
    return TrainResult(model, state.history, state.best_epoch, state.best_val, val_metrics, ckpt, state.stopped)
