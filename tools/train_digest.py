"""Digest of what `train()` produces over a set of scenarios, for refactors of the trainer that must not change it.

    .venv/bin/python tools/train_digest.py before.json   # on the old code
    .venv/bin/python tools/train_digest.py after.json    # on the new code; then: cmp before.json after.json

Per scenario (ED-CNN and UNet at the tiny preset, on 1 torch thread): a hash of the final weights, of last.pt and
best.pt (their contents, all keys but the wall-clock ones), the key order of both files and of every epoch record,
the history and train.jsonl without timings, best epoch and value; plus a resume after a kill and a warm start.
Equal files mean bit-identical training on this machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from diffcurate.model.callbacks import EachEpoch
from diffcurate.model.checkpoint import read_checkpoint
from diffcurate.model.data import synthetic_dataset
from diffcurate.model.nets import default_model_config
from diffcurate.model.train import default_train_config, train
from diffcurate.solvers.problem import PRESETS

TIMING = {"seconds", "train_samples_per_s"}
SCENARIOS = {
    "plain": {"epochs": 3},
    "toggle_sqrt": {"epochs": 3, "transform": "sqrt", "schedule": "toggle", "schedule_period": 1, "weight": "step"},
    "patience": {"epochs": 6, "patience": 1, "lr": 5e-2},
    "random_exp": {"epochs": 4, "schedule": "random", "schedule_prob": 0.5, "weight": "exp", "warmup_steps": 3},
}


def digest(obj) -> str:
    h = hashlib.sha256()

    def walk(o):
        if isinstance(o, torch.Tensor):
            h.update(o.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                if k not in TIMING:
                    h.update(str(k).encode())
                    walk(o[k])
        elif isinstance(o, list | tuple):
            for v in o:
                walk(v)
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()[:16]


def untimed(history: list[dict]) -> list[dict]:
    """Records without wall-clock values; each keeps its key order (the file is written without sorting)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def main(out: str) -> None:
    torch.set_num_threads(1)
    tiny = PRESETS["tiny"]
    tr = synthetic_dataset(tiny.physics, 128, tiny.sources, seed=0)
    va = synthetic_dataset(tiny.physics, 32, tiny.sources, seed=1)
    result = {}
    for name, kw in SCENARIOS.items():
        for arch in ("edcnn", "unet"):
            cfg = default_train_config("tiny", batch_size=16, **kw)
            val = None if (name, arch) == ("patience", "unet") else va  # early stopping on the train loss
            with tempfile.TemporaryDirectory() as d:
                r = train(default_model_config("tiny", arch), cfg, tr, val, d, physics=tiny.physics, device="cpu")
                last, best = read_checkpoint(Path(d) / "last.pt"), read_checkpoint(Path(d) / "best.pt")
                log = [json.loads(s) for s in (Path(d) / "train.jsonl").read_text().splitlines()]
            result[f"{name}/{arch}"] = {
                "model": digest(r.model.state_dict()),
                "history": untimed(r.history),
                "log": untimed(log),
                "best": [r.best_epoch, r.best_val, r.stopped_early, digest(r.val_metrics or {})],
                "last.pt": [list(last), digest({k: v for k, v in last.items() if k != "history"})],
                "best.pt": [list(best), digest({k: v for k, v in best.items() if k != "history"})],
            }
    mc = default_model_config("tiny", "edcnn")
    cfg = default_train_config("tiny", epochs=4, batch_size=16, schedule="random", weight="exp")

    def kill(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with tempfile.TemporaryDirectory() as d:
        try:
            train(mc, cfg, tr, va, d, physics=tiny.physics, device="cpu", callbacks=[EachEpoch(kill)])
        except KeyboardInterrupt:
            pass
        r = train(mc, cfg, tr, va, d, physics=tiny.physics, device="cpu", resume=True)
        result["resume"] = {"model": digest(r.model.state_dict()), "history": untimed(r.history)}
        warm_cfg = default_train_config("tiny", epochs=1, batch_size=16, lr=1e-5)
        w = train(mc, warm_cfg, tr, va, physics=tiny.physics, device="cpu", init_from=Path(d) / "best.pt")
        result["warm"] = {"model": digest(w.model.state_dict()), "history": untimed(w.history)}
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(result)} scenarios -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tools/train_digest.py OUT.json")
    main(sys.argv[1])
