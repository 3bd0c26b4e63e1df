#!/usr/bin/env bash
# The prepared GPU check (docs/benchmarks.md, "GPU"): bash bench/gpu_check.sh [--dry-run]
# Needs one CUDA GPU and a Python with torch for CUDA: .venv if it exists, else it makes one (pip needs the
# package index: torch==2.13.0 from PyPI is the CUDA build). Every step's result lands in docs/gpu.json as it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "no .venv: making one with torch for CUDA" >&2
  python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 && .venv/bin/pip install -q -e . || {
    echo "error: could not set up .venv (no package index reachable?)" >&2; exit 2; }
fi
exec "$PY" bench/gpu_check.py "$@"
