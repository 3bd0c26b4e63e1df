"""The anchor check: the FNO on the FNO paper's Darcy data, against its published relative L2 error (0.0108 at
s = 85 with 1,000 training samples, 500 epochs; Li et al., ICLR 2021, Table 4).

    .venv/bin/python bench/darcy_anchor.py --epochs 500      # the paper's schedule length (hours on a CPU)
    .venv/bin/python bench/darcy_anchor.py --epochs 30       # what a 2-core CPU trains in half an hour

1,000 `grf` samples of the `s85` preset (solved directly at s = 85) train the FNO (12 modes, width 32, 4 layers)
with the relative L2 loss, Adam lr 1e-3, weight decay 1e-4, batch 20, the trainer's constant-then-cosine
schedule; 100 samples of another seed pick the best epoch; `--test` samples of a third seed are the test. The
metric is the paper's: the mean over test samples of ||u_pred - u||_2 / ||u||_2. Writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER_REL_L2 = 0.0108  # FNO-2D, Darcy, s = 85, 1,000 training samples (Li et al. 2021, Table 4)


def data(task, seed: int, n: int, regions: bool = True, sampler: str = "grf"):
    """(the dataset of samples 0..n-1 of (sampler, seed), solved; the seconds the solves took)."""
    from diffcurate.model.data import dataset_from_configs

    configs, _ = task.problem.sample(task.params, sampler, seed, range(n))
    t = time.perf_counter()
    y = task.problem.solve(task.params, configs)
    return dataset_from_configs(task, configs, y, regions=regions), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--preset", default="s85")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("docs/darcy_anchor.json"))
    args = ap.parse_args()

    import torch

    from diffcurate.model.metrics import evaluate_model
    from diffcurate.model.nets import count_parameters, default_model_config, fit_to_problem
    from diffcurate.model.train import TrainConfig, train
    from diffcurate.solvers.interface import Task
    from diffcurate.solvers.plugins import get_problem

    problem = get_problem("darcy")
    task = Task(problem, problem.presets()[args.preset].params)
    train_set, solve_s = data(task, 0, args.train, regions=False)
    val_set, _ = data(task, 1, 100)
    test_set, _ = data(task, 2, args.test)
    print(
        f"solved {args.train + 100 + args.test} samples at s = {task.grid[0]}: {solve_s / args.train * 1e3:.1f} ms each"
    )

    model_cfg = fit_to_problem(default_model_config("small", "fno"), problem, task.params)
    tc = TrainConfig(
        epochs=args.epochs,
        batch_size=20,
        lr=1e-3,
        weight_decay=1e-4,
        loss="rel-l2",
        const_frac=0.3,
        grad_clip=None,
        amp="fp32",
        seed=args.seed,
    )
    t = time.perf_counter()
    result = train(model_cfg, tc, train_set, val_set, physics=task, device=args.device)
    train_s = time.perf_counter() - t
    metrics, _ = evaluate_model(result.model, test_set, device=next(result.model.parameters()).device)
    rel = metrics["rel_l2_mean"]
    out = {
        "command": "python bench/darcy_anchor.py " + " ".join(sys.argv[1:]),
        "preset": args.preset,
        "s": task.grid[0],
        "n_train": args.train,
        "n_test": args.test,
        "epochs": args.epochs,
        "best_epoch": result.best_epoch,
        "parameters": count_parameters(result.model),
        "test_rel_l2_mean": rel,
        "test_rel_l2_pooled": metrics["rel_l2"],
        "test_mae": metrics["mae"]["all"],
        "test_p99": metrics["per_sample_mae"]["p99"],
        "paper_rel_l2": PAPER_REL_L2,
        "ratio_to_paper": rel / PAPER_REL_L2,
        "train_seconds": train_s,
        "solve_ms_per_sample": solve_s / args.train * 1e3,
        "device": str(next(result.model.parameters()).device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "history": result.history,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(
        f"test rel L2 {rel:.4f} (paper {PAPER_REL_L2}, x{rel / PAPER_REL_L2:.2f}) after {args.epochs} epochs, "
        f"{train_s:.0f} s of training; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
