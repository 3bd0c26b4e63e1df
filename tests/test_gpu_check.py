"""The prepared GPU check runs end to end on the CPU (--dry-run), so it cannot rot while no GPU is around."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(out: Path, env: dict | None = None, *extra: str) -> subprocess.CompletedProcess:
    cmd = ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_gpu_check_dry_run(ray_cluster, tmp_path):
    """Its Ray steps join the tests' cluster (`--address`), as the check's commands join any running one; every step
    but `train`, which the bare machine's test runs."""
    out = tmp_path / "gpu.json"
    steps = "solvers,models,loader,generate,run"  # train: the bare machine's test runs it
    r = _dry_run(out, None, "--address", ray_cluster, "--steps", steps)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(out.read_text())
    assert d["dry_run"] and d["ray"] == "available"
    assert list(d["steps"]) == steps.split(",")
    assert [r["workers"] for r in d["steps"]["loader"]["rows"]] == [0, 1]
    assert all(r["batches_samples_per_s"] > 0 and r["items_samples_per_s"] > 0 for r in d["steps"]["loader"]["rows"])
    assert all(s["ok"] for s in d["steps"].values()), d["steps"]
    rows = d["steps"]["solvers"]["rows"]
    assert {(r["dtype"]) for r in rows} == {"float32", "float64"}
    assert max(r["max_error"] for r in rows if r["dtype"] == "float64") < 1e-10  # fast agrees with the reference
    assert all(r["solves_per_s_b4"] > 0 for r in rows)
    assert [m["arch"] for m in d["steps"]["models"]["rows"]] == ["edcnn", "unet", "fno"]
    assert d["steps"]["run"]["rounds"] == 2 and d["steps"]["generate"]["samples_per_s"] > 0  # round 0 and 1
    assert "| cpu | float32 |" in r.stdout  # the rendered table


def test_gpu_check_dry_run_on_a_bare_machine(tmp_path):
    """The bare GPU machine's path: no .venv, a `python3` with torch, and no Ray (`import ray` fails through a
    PYTHONPATH shim). The Ray-free steps run; the Ray steps are recorded as skipped, with the reason."""
    import os
    import sys

    bin_dir, shim = tmp_path / "bin", tmp_path / "shim" / "ray"
    bin_dir.mkdir()
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("no ray on this machine")\n')
    py = bin_dir / "python3"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(shim.parent),
        "GPU_CHECK_VENV": str(tmp_path / "no-venv"),
        "GPU_BUNDLE": str(tmp_path / "no-bundle"),
    }
    out = tmp_path / "gpu.json"
    r = _dry_run(out, env, "--steps", "train,generate,run")  # the others are the first test's, with Ray or not
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.startswith("python: python3 "), r.stderr
    d = json.loads(out.read_text())
    assert d["ray"].startswith("ray cannot be imported") and "no ray on this machine" in d["ray"]
    steps = d["steps"]
    assert [n for n, s in steps.items() if s.get("skipped")] == ["generate", "run"]
    assert all(s["ok"] for s in steps.values()) and steps["train"]["epochs"] == 2
    assert steps["train"]["device"] == "cpu" and min(steps["train"]["train_samples_per_s"]) > 0


def test_gpu_check_stops_with_one_line_without_a_usable_python(tmp_path):
    """Neither .venv nor python3 with a torch that sees CUDA (no --dry-run here): one line, exit 2, nothing run."""
    import os

    env = {**os.environ, "GPU_CHECK_VENV": str(tmp_path / "no-venv"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "CUDA device" in r.stderr, r.stderr
