"""Training throughput on the small preset: batch sizes and one 2-thread process vs two 1-thread processes.

    .venv/bin/python bench/train_throughput.py          # ratios against batch 8, 2 threads, measured in the same run

Each row trains 3 epochs of 400 solved mixed samples from scratch (ED-CNN and UNet, small preset widths); the
"2 x 1 thread" rows run two such processes at once and add their rates.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N, EPOCHS = 400, 3


def one(arch: str, batch: int, threads: int) -> float:
    import torch

    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.nets import default_model_config
    from diffcurate.model.train import TrainConfig, train
    from diffcurate.solvers.problem import PRESETS
    from diffcurate.solvers.registry import solve
    from diffcurate.solvers.sampling import sample_configs

    torch.set_num_threads(threads)
    ph = PRESETS["small"].physics
    cfg = sample_configs("mixed", ph, 0, range(N), (1, 20))[0]
    ds = dataset_from_configs(ph, cfg, solve(ph, cfg, "fast", dtype="float32"))
    t0 = time.perf_counter()
    train(
        default_model_config("small", arch),
        TrainConfig(epochs=EPOCHS, batch_size=batch, lr=2e-3),
        ds,
        None,
        physics=ph,
        device="cpu",
    )
    return N * EPOCHS / (time.perf_counter() - t0)


def main() -> None:
    if len(sys.argv) == 4:  # a worker: print one rate
        print(one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
        return
    rows = []
    for arch in ("edcnn", "unet"):
        base = None
        for batch in (8, 16, 32):
            rate = one(arch, batch, 2)
            base = base or rate
            rows.append((arch, batch, "1 x 2 threads", rate, rate / base))
        procs = [
            subprocess.Popen([sys.executable, __file__, arch, "16", "1"], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        rate = sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)
        rows.append((arch, 16, "2 x 1 thread", rate, rate / base))
    print("| model | batch | processes | samples/s | vs batch 8, 1 x 2 threads |\n|---|---|---|---|---|")
    for arch, batch, how, rate, ratio in rows:
        print(f"| {arch} | {batch} | {how} | {rate:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
