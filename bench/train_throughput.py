"""Training throughput on the small preset: the data path, memory layout, bf16 autocast and batch size, against
the streaming baseline measured in the same run.

    .venv/bin/python bench/train_throughput.py            # ED-CNN and UNet, every row, 2 threads
    .venv/bin/python bench/train_throughput.py --quick    # ED-CNN only

Each row trains EPOCHS epochs of N solved mixed samples from scratch through `train()` and reports the median
of the epochs' samples/s. "streaming" forces the DataLoader path (item by item, collated), "in memory" holds
the set as two tensors and slices batches. The "2 x 1 thread" row runs two such processes at once (the study's
two workers) and adds their rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N, EPOCHS = 800, 3
# (label, in memory, channels_last, amp, batch)
ROWS = [
    ("streaming, NCHW, fp32", False, False, "fp32", 16),
    ("in memory, NCHW, fp32", True, False, "fp32", 16),
    ("in memory, NHWC, fp32", True, True, "fp32", 16),
    ("in memory, NHWC, bf16", True, True, "bf16", 16),
    ("in memory, NHWC, fp32, batch 64", True, True, "fp32", 64),
    ("in memory, NHWC, bf16, batch 64", True, True, "bf16", 64),
]


def one(arch: str, in_memory: bool, channels_last: bool, amp: str, batch: int, threads: int) -> float:
    import torch

    import diffcurate.model.train as trainer
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
    if not in_memory:
        trainer.in_memory = lambda data: None  # the DataLoader path, as for a set over IN_MEMORY_BYTES
    tc = TrainConfig(epochs=EPOCHS, batch_size=batch, lr=2e-3, channels_last=channels_last, amp=amp)
    res = train(default_model_config("small", arch), tc, ds, None, physics=ph, device="cpu")
    return statistics.median(h["train_samples_per_s"] for h in res.history[1:])  # epoch 0 warms the allocator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # one row in a subprocess: print its rate
        arch, mem, cl, amp, batch, threads = json.loads(args.worker)
        print(one(arch, mem, cl, amp, batch, threads))
        return

    def sub(arch, row, threads, copies=1):
        spec = json.dumps([arch, *row[1:], threads])
        procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", spec], stdout=subprocess.PIPE, text=True)
            for _ in range(copies)
        ]
        return sum(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)

    print("| model | data, layout, precision | processes | samples/s | vs streaming |\n|---|---|---|---|---|")
    for arch in ("edcnn",) if args.quick else ("edcnn", "unet"):
        base = None
        for row in ROWS:
            rate = sub(arch, row, 2)  # each row in a fresh process: no allocator or thread state carried over
            base = base or rate
            print(f"| {arch} | {row[0]} | 1 x 2 threads | {rate:.0f} | {rate / base:.2f} |", flush=True)
        for row in (ROWS[0], ROWS[2], ROWS[3]):
            rate = sub(arch, row, 1, copies=2)
            print(f"| {arch} | {row[0]} | 2 x 1 thread | {rate:.0f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
