#!/usr/bin/env bash
# The prepared GPU check (docs/benchmarks.md, "GPU"): bash bench/gpu_check.sh [--dry-run] [--out FILE]
# It never installs from a package index. The interpreter: .venv's python if its torch sees a CUDA device, else
# python3 if that one's does (--dry-run: any torch will do), else it stops with one line. On python3 (a bare GPU
# machine) the working tree's folders are mapped to diffcurate.* and what `bash bench/gpu_bundle.sh` packed
# into .gpu/ (run that where pip works, and bring .gpu/ along) is installed with
# `pip install --no-index --no-deps --target`; steps that need Ray are skipped, with the reason, if Ray did not
# come along. Every step's result lands in docs/gpu.json as it ends.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${GPU_CHECK_VENV:-.venv}
DRY=False
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=True; done

usable() {  # a python whose torch sees a CUDA device (dry run: whose torch imports)
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c "import sys, torch; sys.exit(0 if $DRY or torch.cuda.is_available() else 1)" >/dev/null 2>&1
}

PY=
for cand in "$VENV/bin/python" python3; do
  if usable "$cand"; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
  echo "error: neither $VENV/bin/python nor python3 has a torch that sees a CUDA device (nothing is installed from an index)" >&2
  exit 2
fi

if [ "$PY" = python3 ]; then
  GPU=${GPU_BUNDLE:-.gpu}
  SRC=$(mktemp -d)
  trap 'rm -rf "$SRC"' EXIT
  mkdir -p "$SRC/diffcurate"
  for room in common solvers model curate; do ln -s "$PWD/$room" "$SRC/diffcurate/$room"; done
  PATHS=$SRC
  if [ -d "$GPU/wheels" ]; then
    SITE=$(cd "$GPU" && pwd)/site
    if [ ! -f "$SITE/.installed" ]; then
      # only what this python lacks: the image's own numpy, click, packaging, ... stay as they are
      mapfile -t NEED < <(python3 - "$GPU/wheels" <<'EOF'
import importlib.metadata as md, os, sys
for f in sorted(os.listdir(sys.argv[1])):
    name = f.split("-")[0].replace("_", "-")
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(os.path.join(sys.argv[1], f))
EOF
)
      if [ "${#NEED[@]}" -gt 0 ]; then
        python3 -m pip install -q --no-index --no-deps --target "$SITE" "${NEED[@]}" ||
          { echo "error: could not install the wheels of $GPU/wheels" >&2; exit 2; }
      fi
      mkdir -p "$SITE"
      [ -f "$GPU/ray.tar.xz" ] && tar -C "$SITE" -xJf "$GPU/ray.tar.xz"
      touch "$SITE/.installed"
    fi
    PATHS=$PATHS:$SITE
  fi
  export PYTHONPATH=$PATHS${PYTHONPATH:+:$PYTHONPATH}
fi
echo "python: $PY ($("$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)'))" >&2
exec "$PY" bench/gpu_check.py "$@"
