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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from diffcurate.model.checkpoint import atomic_save, check_physics, cpu_state, read_checkpoint, save_checkpoint
from diffcurate.model.data import default_num_workers
from diffcurate.model.losses import LossSpec, loss_value, lr_at, schedule_index, transform_pair
from diffcurate.model.metrics import evaluate_model
from diffcurate.model.nets import build_model, config_from_dict, config_to_dict
from diffcurate.solvers.errors import InputError, build_typed
from diffcurate.solvers.problem import PRESET_DEFAULTS, Physics
from diffcurate.solvers.registry import resolve_device

LAST = "last.pt"
BEST = "best.pt"
# the schedule's alternate weight when none is given: the paper toggles between the step and exp prefactors
_OTHER_WEIGHT = {"exp": "step", "step": "exp", "none": "exp"}


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored in checkpoints as plain data)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 0
    const_frac: float = 0.6
    final_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    loss: str = "mae"
    weight: str = "none"
    alt_loss: str | None = None
    alt_weight: str | None = None
    delta: float = 0.1
    w: float = 1.0
    a: float = 4000.0
    b: float = 10.0
    reduction: str = "weighted"
    transform: str = "none"
    schedule: str = "fixed"
    schedule_period: int = 5
    schedule_prob: float = 0.8
    patience: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return build_typed(cls, d, "train config")

    def loss_specs(self) -> tuple[LossSpec, LossSpec]:
        """(primary, alternate) losses; the schedule picks one per epoch. Validates names."""
        common = {"delta": self.delta, "w": self.w, "a": self.a, "b": self.b, "reduction": self.reduction}
        primary = LossSpec(self.loss, self.weight, **common).check()
        alt_weight = self.alt_weight or (
            _OTHER_WEIGHT.get(self.weight, self.weight) if self.schedule != "fixed" else self.weight
        )
        alternate = LossSpec(self.alt_loss or self.loss, alt_weight, **common).check()
        schedule_index(self.schedule, 0)
        transform_pair(self.transform)
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise InputError("epochs and batch size must be >= 1 and lr > 0")
        return primary, alternate


def default_train_config(preset: str, **overrides) -> TrainConfig:
    """`curate train`'s config for a preset (PRESET_DEFAULTS[preset]["train"]) with explicit overrides."""
    if preset not in PRESET_DEFAULTS:
        raise InputError(f"no default train config for preset {preset!r} (choose from {', '.join(PRESET_DEFAULTS)})")
    return TrainConfig(**{**PRESET_DEFAULTS[preset]["train"], **overrides})


@dataclass
class TrainResult:
    model: torch.nn.Module  # best-on-val weights, eval mode
    history: list[dict]
    best_epoch: int
    best_val: float
    val_metrics: dict | None
    checkpoint: Path | None
    stopped_early: bool = False
    extra: dict = field(default_factory=dict)


def _rng_state(dev: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def _set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if dev.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], dev)


def _warm_state(init_from, model_config: dict, physics: Physics | None = None) -> dict:
    """State dict to warm-start from: a checkpoint path, a checkpoint dict or a bare state_dict. A checkpoint
    of other physics or another architecture is refused."""
    obj = read_checkpoint(init_from) if isinstance(init_from, str | Path) else init_from
    if "state_dict" in obj:
        check_physics(obj, physics, f"warm start {init_from}")
        if not obj["state_dict"]:
            raise InputError(f"warm start: {init_from} holds no weights")
        if obj.get("model_config") not in (None, model_config):
            raise InputError(f"warm start: checkpoint model {obj['model_config']} differs from {model_config}")
        return obj["state_dict"]
    return obj


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
    physics: Physics | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    init_from=None,
    progress: bool = False,
    log_path=None,
    callback: Callable[[int, dict], None] | None = None,
    checkpoint_name: str = BEST,
    num_workers: int | None = None,  # DataLoader workers; None: `default_num_workers`
) -> TrainResult:
    """Train a model from scratch, from `init_from` (warm start), or resume `out_dir/last.pt`.

    Early stopping and best weights use the pooled val MAE (train loss when there is no val set). Writes
    out_dir/last.pt each epoch and out_dir/<checkpoint_name> (best weights + val metrics) at the end; returns the
    best model. `callback(epoch, record)` runs after each saved epoch (raising there simulates a kill)."""
    tc = train_config
    primary, alternate = tc.loss_specs()
    forward_t = transform_pair(tc.transform)[0]
    mc = model_config if isinstance(model_config, dict) else config_to_dict(model_config)
    config_from_dict(mc).check(physics.lattice if physics else None)
    if mc.get("clamp_sources"):
        if tc.transform != "none":
            raise InputError("clamp_sources copies the input into the discs; it needs --transform none")
        if physics is not None and physics.source_model != "fixed":
            raise InputError("clamp_sources needs fixed-value sources (the input is not the field in the discs)")
    if len(train_data) == 0:
        raise InputError("training set is empty")
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if num_workers is None:
        L = physics.lattice if physics is not None else int(train_data[0][0].shape[-1])  # item x: (1, L, L)
        num_workers = default_num_workers(L, dev)
    out = Path(out_dir) if out_dir is not None else None
    log = Path(log_path) if log_path is not None else (out / "train.jsonl" if out else None)

    torch.manual_seed(tc.seed)
    model = build_model(mc).to(dev)
    if init_from is not None:
        try:
            model.load_state_dict(_warm_state(init_from, mc, physics))
        except RuntimeError as e:
            raise InputError(f"warm start from {init_from}: weights do not fit ({str(e).splitlines()[0]})") from None
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    n = len(train_data)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    total_steps = tc.epochs * steps_per_epoch
    start, history = 0, []
    best_val, best_epoch, since_best, stopped = math.inf, -1, 0, False
    best_state = cpu_state(model)

    last = out / LAST if out else None
    if resume and last is not None and last.exists():
        st = read_checkpoint(last)
        if st["model_config"] != mc or st["train_config"] != tc.to_dict():
            raise InputError(f"{last}: cannot resume, its model/train config differs from the requested one")
        model.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        start, history = int(st["epoch"]) + 1, list(st["history"])
        best_val, best_epoch, since_best = float(st["best_val"]), int(st["best_epoch"]), int(st["since_best"])
        best_state, stopped = st["best_state_dict"], bool(st["stopped"])
        _set_rng_state(st["rng"], dev)
        _write_log(log, history)  # drop lines of an epoch that was killed before its checkpoint
    elif log is not None and log.exists():
        log.unlink()

    use_amp = dev.type == "cuda"
    bar = _progress(progress, tc.epochs, start)
    try:
        for epoch in range(start, tc.epochs):
            if stopped:
                break
            t0 = time.perf_counter()
            which = schedule_index(tc.schedule, epoch, tc.schedule_period, tc.schedule_prob, tc.seed)
            spec = (primary, alternate)[which]
            order = torch.randperm(n, generator=torch.Generator().manual_seed(tc.seed * 7919 + epoch)).tolist()
            loader = DataLoader(train_data, batch_size=tc.batch_size, sampler=order, num_workers=num_workers)
            model.train()
            loss_sum, seen = 0.0, 0
            for b, (x, y, _mask, _counts) in enumerate(loader):
                for g in opt.param_groups:
                    g["lr"] = lr_at(epoch * steps_per_epoch + b, total_steps, tc.lr, tc.warmup_steps, tc.const_frac,
                                    tc.final_lr_ratio)  # fmt: skip
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)  # (B, 1, L, L) float32
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                    pred = model(x)
                loss = loss_value(spec, pred.float(), forward_t(y), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                loss_sum += float(loss.detach()) * len(x)
                seen += len(x)
            train_s = time.perf_counter() - t0
            record = {"epoch": epoch, "loss": loss_sum / seen, "loss_index": which, "lr": opt.param_groups[0]["lr"]}
            if val_data is not None and len(val_data):
                vm = evaluate_model(model, val_data, dev, tc.transform, batch_size=max(64, tc.batch_size))[0]
                score = vm["mae"]["all"]
                record.update(val_mae=score, val_rel_l2=vm["rel_l2"])
            else:
                score = record["loss"]
            if score < best_val:
                best_val, best_epoch, since_best, best_state = score, epoch, 0, cpu_state(model)
            else:
                since_best += 1
            stopped = bool(tc.patience) and since_best >= tc.patience
            record.update(
                best_epoch=best_epoch,
                train_samples_per_s=seen / train_s,
                seconds=time.perf_counter() - t0,
                stopped_early=stopped,
            )
            history.append(record)
            if last is not None:
                atomic_save(
                    {
                        "state_dict": cpu_state(model),
                        "model_config": mc,
                        "train_config": tc.to_dict(),
                        "optimizer": opt.state_dict(),
                        "epoch": epoch,
                        "history": history,
                        "best_val": best_val,
                        "best_epoch": best_epoch,
                        "since_best": since_best,
                        "best_state_dict": best_state,
                        "stopped": stopped,
                        "rng": _rng_state(dev),
                        "physics": physics.to_dict() if physics else None,
                    },
                    last,
                )
            if log is not None:
                with log.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            if bar:
                bar[0].update(bar[1], advance=1, description=f"epoch {epoch + 1} loss {record['loss']:.3g}"
                              f" val {record.get('val_mae', float('nan')):.3g}")  # fmt: skip
            if callback:
                callback(epoch, record)
    finally:
        if bar:
            bar[0].stop()

    model.load_state_dict(best_state)
    model.eval()
    val_metrics = None
    if val_data is not None and len(val_data):
        val_metrics = evaluate_model(model, val_data, dev, tc.transform)[0]
    ckpt = None
    if out is not None:
        ckpt = save_checkpoint(
            out / checkpoint_name,
            model,
            mc,
            tc,
            physics,
            metrics={"val": val_metrics} if val_metrics else {},
            epoch=best_epoch,
            history=history,
        )
    return TrainResult(model, history, best_epoch, best_val, val_metrics, ckpt, stopped)


def _progress(enabled: bool, total: int, done: int):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=Console(stderr=True))
    task = p.add_task("training", total=total, completed=done)
    p.start()
    return p, task
