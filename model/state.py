"""The trainer's state: what an epoch changes and a resumed run restores (`TrainState`, to and from `last.pt`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from diffcurate.model.checkpoint import cpu_state
from diffcurate.solvers.interface import Task


def _rng_state(dev: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def _set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if dev.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], dev)


@dataclass
class TrainState:
    """All that an epoch changes and a resumed run restores: weights, optimiser, progress, best-on-val weights.

    The learning rate is a function of the global step, and the shuffle order and loss schedule of (seed,
    epoch), so no scheduler or sampler state exists; the global torch RNG (dropout, the DataLoader's seed) is
    saved with the rest in `last.pt`."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    best_state: dict[str, torch.Tensor]  # CPU copy of the best weights so far
    epoch: int = 0  # the next epoch to run
    history: list[dict] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = -1
    since_best: int = 0
    stopped: bool = False  # early stopping has fired
    decay_from: int = -1  # stop = plateau: the global step where the cool-down began (-1: not yet)
    decay_steps: int = 0  # stop = plateau: its length in steps
    forward: torch.nn.Module | None = None  # what the training step calls: the model, or its DDP wrapper

    def end_epoch(self, epoch: int, score: float, patience: int | None) -> None:
        """Keep the weights if `score` (val MAE, or train loss without a val set) is the best yet."""
        if score < self.best_val:
            self.best_val, self.best_epoch, self.since_best = score, epoch, 0
            self.best_state = cpu_state(self.model)
        else:
            self.since_best += 1
        self.stopped = bool(patience) and self.since_best >= patience
        self.epoch = epoch + 1

    def to_checkpoint(self, mc: dict, tc: dict, task: Task | None, dev: torch.device) -> dict:
        """`last.pt`'s plain-data contents (its keys are the format of docs/formats.md)."""
        return {
            "state_dict": cpu_state(self.model),
            "model_config": mc,
            "train_config": tc,
            "optimizer": self.opt.state_dict(),
            "epoch": self.epoch - 1,  # the last completed epoch
            "history": self.history,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "best_state_dict": self.best_state,
            "stopped": self.stopped,
            "decay_from": self.decay_from,
            "decay_steps": self.decay_steps,
            "rng": _rng_state(dev),
            "physics": task.params_dict() if task is not None else None,
            "problem": task.name if task is not None else None,
        }

    def restore(self, st: dict, dev: torch.device) -> None:
        """Continue from a `last.pt` written by `to_checkpoint` (its configs already checked by the caller)."""
        self.model.load_state_dict(st["state_dict"])
        self.opt.load_state_dict(st["optimizer"])
        self.epoch, self.history = int(st["epoch"]) + 1, list(st["history"])
        self.best_val, self.best_epoch = float(st["best_val"]), int(st["best_epoch"])
        self.since_best, self.best_state, self.stopped = (
            int(st["since_best"]),
            st["best_state_dict"],
            bool(st["stopped"]),
        )
        self.decay_from, self.decay_steps = int(st.get("decay_from", -1)), int(st.get("decay_steps", 0))
        _set_rng_state(st["rng"], dev)
