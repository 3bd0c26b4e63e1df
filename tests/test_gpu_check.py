"""The prepared GPU check runs end to end on the CPU (--dry-run), so it cannot rot while no GPU is around."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(out.read_text())
    assert d["dry_run"] and set(d["steps"]) == {"solvers", "models", "generate", "run"}
    assert all(s["ok"] for s in d["steps"].values()), d["steps"]
    rows = d["steps"]["solvers"]["rows"]
    assert {(r["dtype"]) for r in rows} == {"float32", "float64"}
    assert max(r["max_error"] for r in rows if r["dtype"] == "float64") < 1e-10  # fast agrees with the reference
    assert all(r["solves_per_s_b4"] > 0 for r in rows)
    assert [m["arch"] for m in d["steps"]["models"]["rows"]] == ["edcnn", "unet"]
    assert d["steps"]["run"]["rounds"] == 3 and d["steps"]["generate"]["samples_per_s"] > 0
    assert "| cpu | float32 |" in r.stdout  # the rendered table
