"""Which strata for Darcy? An FNO trained on `mixed` samples of the small preset, tested per family and stratum:
its error by the high tenth (the problem's strata) and the rank correlation of each sample's error with every
descriptor, which says what else explains where the surrogate errs.

    .venv/bin/python bench/darcy_strata.py                         # 800 training samples, 20 epochs
    .venv/bin/python bench/darcy_strata.py --train 400 --epochs 5  # a quick look

The test draws `--per-cell` samples of every pool family at every stratum (what a run's test split does) and of
each held-out family. Writes --out (JSON) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.darcy_anchor import data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--per-cell", type=int, default=6)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/darcy_strata.json"))
    args = ap.parse_args()

    import torch
    from scipy.stats import spearmanr

    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.metrics import per_sample_mae, per_sample_rel_l2
    from diffcurate.model.nets import default_model_config, fit_to_problem
    from diffcurate.model.train import TrainConfig, train
    from diffcurate.solvers.interface import Task
    from diffcurate.solvers.plugins import get_problem

    p = get_problem("darcy")
    task = Task(p, p.presets()[args.preset].params)
    lo, hi = p.presets()[args.preset].strata

    train_set, _ = data(task, args.seed, args.train, regions=False, sampler="mixed")
    val_set, _ = data(task, args.seed + 1, 100, sampler="mixed")
    parts = [
        p.sample(task.params, f, 1000 + k, range(args.per_cell), (k, k))
        for f in p.families()
        for k in range(lo, hi + 1)
    ]
    parts += [p.sample(task.params, f, 2000, range(args.per_cell * (hi - lo + 1))) for f in p.held_out()]
    configs = p.concat(task.params, [c for c, _ in parts])
    family = [f for _, fam in parts for f in fam]
    test = dataset_from_configs(task, configs, p.solve(task.params, configs))

    model_cfg = fit_to_problem(default_model_config("small", "fno"), p, task.params)
    tc = TrainConfig(epochs=args.epochs, batch_size=16, lr=1e-3, weight_decay=1e-4, loss="rel-l2", seed=args.seed)
    t = time.perf_counter()
    res = train(model_cfg, tc, train_set, val_set, physics=task, device="cpu")
    seconds = time.perf_counter() - t
    with torch.no_grad():  # the best weights, in eval mode
        x, y = test.x, test.y  # (n, 1, s, s) float32 tensors
        pred = torch.cat([res.model(x[i : i + 64]) for i in range(0, len(x), 64)])
    mae, rel = per_sample_mae(pred, y).numpy(), per_sample_rel_l2(pred, y).numpy()

    strata = p.strata(task.params, configs)
    family = np.array(family)
    pool = np.isin(family, p.families())
    by_stratum = {
        int(k): {
            "n": int((pool & (strata == k)).sum()),
            "mae": float(mae[pool & (strata == k)].mean()),
            "rel_l2": float(rel[pool & (strata == k)].mean()),
        }
        for k in range(lo, hi + 1)
    }
    by_family = {
        f: {"mae": float(mae[family == f].mean()), "rel_l2": float(rel[family == f].mean())} for f in set(family)
    }
    desc = p.descriptors(task.params, configs)
    spearman = {
        name: {
            "mae": float(spearmanr(v[pool], mae[pool]).statistic),
            "rel_l2": float(spearmanr(v[pool], rel[pool]).statistic),
        }
        for name, v in {"stratum": strata.astype(float), **desc}.items()
    }
    out = {
        "command": "python bench/darcy_strata.py " + " ".join(sys.argv[1:]),
        "preset": args.preset,
        "n_train": args.train,
        "epochs": args.epochs,
        "train_seconds": seconds,
        "test_pool_rel_l2": float(rel[pool].mean()),
        "by_stratum": by_stratum,
        "by_family": by_family,
        "spearman_with_error": spearman,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"trained {args.epochs} epochs on {args.train} mixed samples in {seconds:.0f} s")
    print("stratum | n | MAE | rel L2")
    for k, r in by_stratum.items():
        print(f"{k} | {r['n']} | {r['mae']:.3g} | {r['rel_l2']:.3g}")
    print("family | MAE | rel L2")
    for f, r in sorted(by_family.items()):
        print(f"{f} | {r['mae']:.3g} | {r['rel_l2']:.3g}")
    print("descriptor | Spearman with MAE | with rel L2")
    for name, r in spearman.items():
        print(f"{name} | {r['mae']:+.2f} | {r['rel_l2']:+.2f}")


if __name__ == "__main__":
    main()
