"""What one round costs at the paper preset (512 x 512, 1-20 sources) on this machine's device: solves/s,
training samples/s and inference ms/sample of the ED-CNN (50.3 M parameters) and the UNet, peak GPU memory.

    .venv/bin/python bench/paper_scale.py                  # CPU (a few minutes; small counts)
    .venv/bin/python bench/paper_scale.py --device cuda    # the short prepared GPU check (< 2 min on one GPU)

Training steps use the trainer's own settings (Adam, bf16 autocast on CUDA, the paper's batch of 32 on a GPU);
the solver uses the `fast` solver in float32 (torch FFTs on CUDA, pocketfft on the CPU) on batches of configs.
Ratios: surrogate inference time / solver time per sample at the same L (< 1: the surrogate pays).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcurate.model.nets import build_model, count_parameters, default_model_config  # noqa: E402
from diffcurate.solvers import solve  # noqa: E402
from diffcurate.solvers.problem import PRESETS, paint  # noqa: E402
from diffcurate.solvers.sampling import sample_configs  # noqa: E402

console = Console(width=150)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_solver(dev: torch.device, n: int, batch: int) -> float:
    """Seconds per solved sample (mixed sampler, 1-20 sources), after one warm-up batch."""
    p = PRESETS["paper"]
    cfg, _ = sample_configs("mixed", p.physics, 0, range(n + batch), p.sources)
    solve(p.physics, cfg[np.arange(batch)], "fast", device=str(dev), dtype="float32", batch_size=batch)
    sync(dev)
    t = time.perf_counter()
    solve(p.physics, cfg[np.arange(batch, batch + n)], "fast", device=str(dev), dtype="float32", batch_size=batch)
    sync(dev)
    return (time.perf_counter() - t) / n


def bench_model(arch: str, dev: torch.device, batch: int, steps: int) -> dict:
    p = PRESETS["paper"]
    net = build_model(default_model_config("paper", arch)).to(dev)
    cfg, _ = sample_configs("mixed", p.physics, 1, range(batch), p.sources)
    x = torch.as_tensor(paint(p.physics, cfg), device=dev)[:, None]  # (B, 1, 512, 512) float32
    y = torch.rand_like(x)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    amp = dev.type == "cuda"
    if amp:
        torch.cuda.reset_peak_memory_stats(dev)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = (net(x).float() - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    step()  # warm-up (allocations, cuDNN autotune)
    sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    train_s = (time.perf_counter() - t) / (steps * batch)
    net.eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
        net(x)
        sync(dev)
        t = time.perf_counter()
        for _ in range(steps):
            net(x)
        sync(dev)
    infer_s = (time.perf_counter() - t) / (steps * batch)
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {
        "arch": arch,
        "parameters": count_parameters(net),
        "batch": batch,
        "train_samples_per_s": 1 / train_s,
        "infer_ms": 1e3 * infer_s,
        "peak_gib": mem,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="timed training / inference steps per model")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    batch, steps = (32, args.steps or 10) if gpu else (2, args.steps or 2)
    solver_s = bench_solver(dev, 256 if gpu else 32, 64 if gpu else 8)
    rows = [bench_model(a, dev, batch, steps) for a in ("edcnn", "unet")]
    name = torch.cuda.get_device_name(dev) if gpu else f"CPU, {torch.get_num_threads()} threads"
    t = Table("what", "per sample", "samples/s", "peak GPU GiB", "vs fast solver", title=f"paper preset on {name}")
    t.add_row("fast solver (float32)", f"{1e3 * solver_s:.2f} ms", f"{1 / solver_s:,.1f}", "-", "1.00")
    for r in rows:
        t.add_row(
            f"{r['arch']} ({r['parameters'] / 1e6:.1f} M) train, batch {r['batch']}",
            f"{1e3 / r['train_samples_per_s']:.1f} ms",
            f"{r['train_samples_per_s']:,.1f}",
            "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}",
            "",
        )
        t.add_row(
            f"{r['arch']} inference",
            f"{r['infer_ms']:.2f} ms",
            f"{1e3 / r['infer_ms']:,.1f}",
            "",
            f"{r['infer_ms'] / (1e3 * solver_s):.2f}",
        )
    console.print(t)
    if args.json:
        args.json.write_text(json.dumps({"device": name, "solver_ms": 1e3 * solver_s, "models": rows}, indent=1))


if __name__ == "__main__":
    main()
