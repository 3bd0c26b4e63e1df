"""Does a training setting change what a converged model reaches? Small preset ED-CNN, mixed samples, trained
with stop = plateau (the run default) under each setting, on several seeds; test MAE and p99 per-sample MAE.

    .venv/bin/python bench/train_converge.py                  # fp32 vs bf16 autocast vs batch 64, 2 seeds
    .venv/bin/python bench/train_converge.py --n 800 --seeds 0 1 2

Ratios are against the first row of the same seed (fp32, NHWC, batch 16), so the seed's data and init are paired.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = {
    "fp32 b16": {"amp": "fp32", "batch_size": 16},
    "bf16 b16": {"amp": "bf16", "batch_size": 16},
    "bf16 b64 lr x2": {"amp": "bf16", "batch_size": 64, "lr_scale": 2.0},
}


def data(n: int, seed: int, ph):
    from diffcurate.model.data import dataset_from_configs
    from diffcurate.solvers.registry import solve
    from diffcurate.solvers.sampling import sample_configs

    cfg = sample_configs("mixed", ph, seed, range(n), (1, 20))[0]
    return dataset_from_configs(ph, cfg, solve(ph, cfg, "fast", dtype="float32"))


def main() -> None:
    import torch

    from diffcurate.curate.loop.config import default_config
    from diffcurate.model.metrics import Metrics, evaluate_model
    from diffcurate.model.nets import default_model_config
    from diffcurate.model.train import TrainConfig, train
    from diffcurate.solvers.problem import PRESETS

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ph = PRESETS["small"].physics
    test = data(2000, 10_000, ph)
    base_tc = default_config("small").train
    rows = []
    for seed in args.seeds:
        tr, va = data(args.n, 100 + seed, ph), data(100, 200 + seed, ph)
        for name in args.settings:
            s = dict(SETTINGS[name])
            lr = base_tc["lr"] * s.pop("lr_scale", 1.0)
            tc = TrainConfig.from_dict({**base_tc, **s, "lr": lr, "seed": seed})
            t0 = time.perf_counter()
            res = train(default_model_config("small"), tc, tr, va, physics=ph, device="cpu")
            secs = time.perf_counter() - t0
            m, per = evaluate_model(res.model, test, "cpu", tc.transform)
            row = {
                "seed": seed,
                "setting": name,
                "epochs": len(res.history),
                "best_epoch": res.best_epoch,
                "seconds": round(secs, 1),
                "mae": Metrics.from_dict(m).mae_all,
                "p99": float(np.quantile(per, 0.99)),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        "| setting | seeds | epochs (mean) | seconds (mean) | MAE vs first | p99 vs first |\n|---|---|---|---|---|---|"
    )
    first = args.settings[0]
    for name in args.settings:
        mine = [r for r in rows if r["setting"] == name]
        ref = {r["seed"]: r for r in rows if r["setting"] == first}
        mae = np.mean([r["mae"] / ref[r["seed"]]["mae"] for r in mine])
        p99 = np.mean([r["p99"] / ref[r["seed"]]["p99"] for r in mine])
        ep, sec = np.mean([r["epochs"] for r in mine]), np.mean([r["seconds"] for r in mine])
        print(f"| {name} | {len(mine)} | {ep:.0f} | {sec:.0f} | {mae:.3f} | {p99:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
