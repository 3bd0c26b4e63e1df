"""The GPU check: every GPU number of the docs in one run (docs/gpu.json), each step kept even if a later one fails.

    bash bench/gpu_check.sh              # on a machine with one CUDA GPU: at most 8 minutes
    bash bench/gpu_check.sh --dry-run    # the same steps on the CPU at tiny sizes (a test runs it)

Steps: (1) the fast solver on CUDA against the reference solver at L = 512 with 20 sources, float32 and
float64, solves/s at batch 8, 32 and 128, and the same rows on the CPU; (2) the paper preset's ED-CNN and UNet:
a training step at batch 32 in fp32 and bf16 autocast (ms, peak memory) and inference ms/sample against the GPU
solver's time per sample; (3) `curate solve` then `curate train` on the GPU, without Ray (small preset, 1000
samples); (3b) the streamed data path at L = 512 by loader workers (bench/loader.py) against the ED-CNN's bf16
training rate; (4) `curate generate --preset paper --gpus 1`, 2000 samples; (5) `curate run` on the small preset,
round 0 + 2 rounds, with the trainer on the GPU (checked in state/actors.json). Steps 4 and 5 need Ray: where it
cannot be imported (a bare GPU machine without the bundle's Ray) they are recorded as skipped, with the reason.
`bench/gpu_render.py` writes the GPU rows of docs/benchmarks.md from docs/gpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = {
    "preset": "paper",
    "device": "cuda",
    "batches": [8, 32, 128],
    "ref_samples": 4,
    "model_batch": 32,
    "generate": 2000,
    "run_preset": "small",
    "run_rounds": 2,
    "repeats": 5,
    "train_preset": "small",
    "train_samples": 1000,
    "train_epochs": 5,
    "loader_samples": 512,
    "loader_workers": [0, 2, 4, 8, 14],
}
DRY = {
    "preset": "tiny",
    "device": "cpu",
    "batches": [2, 4],
    "ref_samples": 2,
    "model_batch": 4,
    "generate": 40,
    "run_preset": "tiny",
    "run_rounds": 1,
    "repeats": 2,
    "train_preset": "tiny",
    "train_samples": 40,
    "train_epochs": 2,
    "loader_samples": 64,
    "loader_workers": [0, 1],
}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def step_solvers(c: dict) -> dict:
    from diffcurate.solvers.problem import PRESETS
    from diffcurate.solvers.registry import solve
    from diffcurate.solvers.sampling import sample_configs

    ph = PRESETS[c["preset"]].physics
    k = 20 if c["preset"] == "paper" else 10
    cfg = sample_configs("uniform", ph, 0, range(max(c["batches"])), (k, k))[0]
    ref = solve(ph, cfg[: c["ref_samples"]], "reference", dtype="float64")
    rows = []
    for device in dict.fromkeys([c["device"], "cpu"]):
        for dtype in ("float32", "float64"):
            got = solve(ph, cfg[: c["ref_samples"]], "fast", device=device, dtype=dtype)
            row = {"device": device, "dtype": dtype, "max_error": float(np.abs(got - ref).max())}
            for b in c["batches"]:
                part = cfg[:b]
                s = _timed(
                    lambda p=part, d=device, t=dtype: solve(ph, p, "fast", device=d, dtype=t, batch_size=len(p)),
                    device,
                    c["repeats"],
                )
                row[f"solves_per_s_b{b}"] = b / s
                row[f"ms_per_solve_b{b}"] = 1000 * s / b
            rows.append(row)
    return {"lattice": ph.lattice, "sources": k, "rows": rows}


def step_models(c: dict, solver_ms: float | None) -> dict:
    from diffcurate.solvers.problem import PRESETS

    L = PRESETS[c["preset"]].physics.lattice
    return {"lattice": L, "rows": [_model_row(arch, c, L, solver_ms) for arch in ("edcnn", "unet", "fno")]}


def _model_row(arch: str, c: dict, L: int, solver_ms: float | None) -> dict:
    import torch

    from diffcurate.model.nets import build_model, count_parameters, default_model_config

    dev = torch.device(c["device"])
    net = build_model(default_model_config(c["preset"], arch)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(c["model_batch"], 1, L, L, device=dev)  # (B, 1, L, L) float32
    y = torch.rand_like(x)
    row = {"arch": arch, "parameters": count_parameters(net), "batch": c["model_batch"]}
    for mode in ("fp32", "bf16"):

        def train_step(mode: str = mode) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
                loss = (net(x).float() - y).abs().mean()
            loss.backward()
            opt.step()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        row[f"train_ms_per_step_{mode}"] = 1000 * _timed(train_step, c["device"], c["repeats"])
        if dev.type == "cuda":
            row[f"peak_mem_gib_{mode}"] = torch.cuda.max_memory_allocated(dev) / 2**30
    net.eval()
    with torch.no_grad():
        s = _timed(lambda: net(x), c["device"], c["repeats"])
    row["inference_ms_per_sample"] = 1000 * s / c["model_batch"]
    if solver_ms:
        row["solver_ms_per_sample"] = solver_ms
        row["inference_over_solver"] = row["inference_ms_per_sample"] / solver_ms
    return row


def step_train(c: dict, tmp: Path) -> dict:
    """`curate solve` a data file, then `curate train` on the device: the CLI's own path, no Ray."""
    from diffcurate.model.metrics import Metrics

    data, out = tmp / "train.npz", tmp / "train"
    t0 = time.perf_counter()
    n, p = str(c["train_samples"]), c["train_preset"]
    _check([*_curate(), "solve", "--out", str(data), "--count", n, "--preset", p, "--device", c["device"]])
    solved = time.perf_counter() - t0
    epochs = str(c["train_epochs"])
    cmd = [*_curate(), "train", str(out), "--data", str(data), "--preset", p, "--epochs", epochs]
    d = json.loads(_check([*cmd, "--device", c["device"], "--no-progress", "--json"]))
    history = [json.loads(line) for line in (out / "checkpoints" / "train.jsonl").read_text().splitlines()]
    return {
        "preset": p,
        "samples": c["train_samples"],
        "epochs": d["epochs_run"],
        "device": c["device"],  # `curate train --device cuda` refuses to fall back to the CPU
        "train_samples_per_s": [round(r["train_samples_per_s"], 1) for r in history],
        "val_mae": Metrics.from_dict(d["val"]).mae_all if d.get("val") else None,
        "solve_seconds": round(solved, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def step_loader(c: dict, tmp: Path, appetite: float | None) -> dict:
    """The streamed data path at the check's preset (bench/loader.py): items against whole batches with x painted
    on the device, by loader workers; against the ED-CNN's bf16 training appetite (samples/s) where measured."""
    from bench.loader import make_store, measure

    store = tmp / "loader"
    make_store(store, c["preset"], c["loader_samples"])
    rows = measure(store, c["model_batch"], c["loader_workers"], c["repeats"], c["device"])
    best = max(r["batches_samples_per_s"] for r in rows)
    return {
        "preset": c["preset"],
        "samples": c["loader_samples"],
        "batch": c["model_batch"],
        "rows": rows,
        "edcnn_bf16_samples_per_s": appetite,
        "best_over_appetite": best / appetite if appetite else None,
    }


def _appetite(res: dict) -> float | None:
    """The paper ED-CNN's bf16 training rate on the device (samples/s), from the models step."""
    m = res["steps"].get("models")
    if not m or not m.get("ok"):
        return None
    row = next(r for r in m["rows"] if r["arch"] == "edcnn")
    return row["batch"] / (row["train_ms_per_step_bf16"] / 1000)


def _joining(c: dict) -> list[str]:
    """`--address A` for the Ray commands when the check joins a running cluster, else nothing (a local one)."""
    return ["--address", c["address"]] if c.get("address") else []


def _check(cmd: list[str]) -> str:
    """Run a command; its stdout, or a RuntimeError with its last stderr line."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return r.stdout


def ray_missing() -> str | None:
    """Why Ray cannot be used here (None: it can)."""
    try:
        import ray  # noqa: F401
    except Exception as e:  # ImportError, or a pruned tree that fails on import
        return f"ray cannot be imported ({type(e).__name__}: {e})"
    return None


def ray_from() -> str | None:
    """Where Ray is imported from (the bundle's pruned tree, or an installed one)."""
    import importlib.util

    spec = importlib.util.find_spec("ray")
    return None if spec is None else str(Path(spec.origin).parent)


def step_generate(c: dict, tmp: Path) -> dict:
    gpus = "1" if c["device"] == "cuda" else "0"
    store = tmp / "gen"
    t0 = time.perf_counter()
    cmd = [*_curate(), "generate", "--store", str(store), "--count", str(c["generate"]), "--seed", "0"]
    d = json.loads(_check([*cmd, "--preset", c["preset"], "--gpus", gpus, "--json", *_joining(c)]))
    return {
        "count": c["generate"],
        "gpus_per_actor": float(gpus),
        "samples_per_s": d.get("samples_per_s"),
        "seconds": time.perf_counter() - t0,
    }


def step_run(c: dict, tmp: Path) -> dict:
    from diffcurate.curate.loop.config import RunConfig, default_config
    from diffcurate.curate.loop.rundir import RunPaths, init_run
    from diffcurate.model.metrics import Metrics

    root = tmp / "run"
    cfg: RunConfig = default_config(c["run_preset"])
    cfg.rounds = c["run_rounds"]
    cfg.ray.dashboard = False
    cfg.ray.trainer_gpus = 1.0 if c["device"] == "cuda" else 0.0
    init_run(root, cfg)
    t0 = time.perf_counter()
    _check([*_curate(), "run", str(root), "--no-dashboard", *_joining(c)])
    rounds = [json.loads(line) for line in (root / "rounds.jsonl").read_text().splitlines()]
    paths = RunPaths(root)
    fits = [json.loads(paths.round(k).fit.read_text()) for k in range(len(rounds))]
    actors = json.loads(paths.actors.read_text())
    gpu_trainer = _trainer_on_gpu(root) if c["device"] == "cuda" else False
    return {
        "preset": c["run_preset"],
        "rounds": len(rounds),
        "seconds": time.perf_counter() - t0,
        "train_seconds": [r["seconds"]["train"] for r in rounds],
        "train_samples_per_s": [f.get("train_samples_per_s") for f in fits],
        "test_mae": [Metrics.from_dict(r["test"]).mae_all for r in rounds],
        "trainer_on_gpu": gpu_trainer,
        "actors": actors[-1]["nodes"],
    }


def _trainer_on_gpu(root: Path) -> bool:
    """The checkpoint of round 0 records the device it was trained on (fit.json), or the run's log says so."""
    from diffcurate.curate.loop.rundir import RunPaths

    fit = json.loads(RunPaths(root).round(0).fit.read_text())
    return str(fit.get("device", "")).startswith("cuda")


def _curate() -> list[str]:
    """The CLI of this interpreter (a bare machine's python3 has no `curate` script)."""
    return [sys.executable, "-m", "diffcurate.curate"]


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (minutes): checks the script itself")
    ap.add_argument("--out", type=Path, help="JSON (default docs/gpu.json; with --dry-run a temp file)")
    ap.add_argument("--address", help="join this Ray cluster for the Ray steps (default: each starts a local one)")
    ap.add_argument(
        "--steps",
        help="comma-separated steps to run (default: all; a step that reads another's result runs without it)",
    )
    args = ap.parse_args()
    c = {**(DRY if args.dry_run else FULL), "address": args.address or ""}
    out = args.out or (Path(tempfile.gettempdir()) / "gpu_dry_run.json" if args.dry_run else ROOT / "docs" / "gpu.json")
    res: dict = {"dry_run": args.dry_run, "machine": machine(), "config": c, "steps": {}}
    if not args.dry_run and not res["machine"]["cuda"]:
        print("error: torch sees no CUDA device; use --dry-run on a CPU", file=sys.stderr)
        return 2

    def save() -> None:
        from diffcurate.common.files import atomic_text

        atomic_text(out, json.dumps(res, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        no_ray = ray_missing()
        res["ray"] = no_ray or "available"
        res["ray_from"] = ray_from()
        steps = [  # (name, needs Ray, step)
            ("solvers", False, lambda: step_solvers(c)),
            ("models", False, lambda: step_models(c, _solver_ms(res, c))),
            ("train", False, lambda: step_train(c, tmp)),
            ("loader", False, lambda: step_loader(c, tmp, _appetite(res))),
            ("generate", True, lambda: step_generate(c, tmp)),
            ("run", True, lambda: step_run(c, tmp)),
        ]
        wanted = args.steps.split(",") if args.steps else [name for name, _, _ in steps]
        unknown = sorted(set(wanted) - {name for name, _, _ in steps})
        if unknown:
            print(f"error: unknown steps {unknown} (choose from {', '.join(n for n, _, _ in steps)})", file=sys.stderr)
            return 2
        for name, needs_ray, fn in steps:
            if name not in wanted:
                continue
            t0 = time.perf_counter()
            if needs_ray and no_ray:
                res["steps"][name] = {"ok": True, "skipped": no_ray, "step_seconds": 0.0}
                save()
                print(f"{name}: skipped, {no_ray}", flush=True)
                continue
            try:
                res["steps"][name] = {"ok": True, **fn()}
            except Exception as e:  # keep what the other steps measure
                res["steps"][name] = {
                    "ok": False,
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=3),
                }
            res["steps"][name]["step_seconds"] = round(time.perf_counter() - t0, 1)
            save()
            print(
                f"{name}: {'ok' if res['steps'][name]['ok'] else res['steps'][name]['error']} "
                f"({res['steps'][name]['step_seconds']} s)",
                flush=True,
            )
    from bench.gpu_render import table

    print(table(res))
    print(f"wrote {out}")
    return 0 if all(s["ok"] for s in res["steps"].values()) else 1


def _solver_ms(res: dict, c: dict) -> float | None:
    s = res["steps"].get("solvers")
    if not s or not s.get("ok"):
        return None
    row = next(r for r in s["rows"] if r["device"] == c["device"] and r["dtype"] == "float32")
    return row[f"ms_per_solve_b{max(c['batches'])}"]


if __name__ == "__main__":
    sys.exit(main())
