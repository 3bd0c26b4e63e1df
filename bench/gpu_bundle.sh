#!/usr/bin/env bash
# Pack what a bare GPU machine lacks into .gpu/ (ignored by git), where pip reaches the package index:
#   bash bench/gpu_bundle.sh            # here; then, on the GPU machine: bash bench/gpu_check.sh
#   PYVER=3.11 GPU_BUNDLE=/tmp/b bash bench/gpu_bundle.sh   # the same for this machine's python (a trial run)
# The GPU image (docs/benchmarks.md, "GPU") has Python 3.12 with torch for CUDA, numpy, scipy, pandas, h5py,
# pyarrow, matplotlib, typer and rich, and no package index. .gpu/ holds:
#   wheels/       cp312 manylinux x86-64 wheels of the rest: lmdb, zlib-ng, tomli-w, and Ray's own small
#                 requirements (jsonschema and its dependencies, msgpack, protobuf, pyyaml, requests, ...)
#   ray.tar.xz    the Ray wheel unpacked without what a driver with include_dashboard=False never loads
#                 (ray/jars: Java; ray/rllib; ray/dashboard/client: the web UI's build; ray/tests)
#   sizes.json    what each part weighs, packed and unpacked
# The project itself is not packed: gpu_check.sh maps the working tree's folders to diffcurate.* at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GPU_BUNDLE:-.gpu}
RAY=${RAY:-ray==2.60.0}
PYVER=${PYVER:-3.12}  # the GPU image's; PYVER=3.11 packs the same for this machine's python, to try it here
TAGS=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}"
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
# what the project and Ray import that the GPU image lacks (the image's list is above)
WHEELS=(lmdb zlib-ng tomli-w msgpack protobuf pyyaml jsonschema jsonschema-specifications referencing rpds-py
        attrs requests urllib3 idna charset-normalizer certifi filelock packaging click)

rm -rf "$OUT" && mkdir -p "$OUT/wheels" "$OUT/tmp"
"$PY" -m pip download -q --no-deps "${TAGS[@]}" -d "$OUT/wheels" "${WHEELS[@]}"
"$PY" -m pip download -q --no-deps "${TAGS[@]}" -d "$OUT/tmp" "$RAY"
wheel=$(ls "$OUT"/tmp/ray-*.whl)
"$PY" - "$wheel" "$OUT/tmp/ray" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:  # extractall drops the mode bits: Ray's binaries must stay executable
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = info.external_attr >> 16
        if mode & 0o777:
            os.chmod(path, mode & 0o777)
EOF
full=$(du -sb "$OUT/tmp/ray" | cut -f1)
rm -rf "$OUT"/tmp/ray/ray/{jars,rllib,tests} "$OUT/tmp/ray/ray/dashboard/client"
pruned=$(du -sb "$OUT/tmp/ray" | cut -f1)
tar -C "$OUT/tmp/ray" -cf - . | xz -6 -T2 > "$OUT/ray.tar.xz"
"$PY" - "$OUT" "$wheel" "$full" "$pruned" <<'EOF'
import json, os, sys
out, wheel, full, pruned = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
wheels = {f: os.path.getsize(os.path.join(out, "wheels", f)) for f in sorted(os.listdir(os.path.join(out, "wheels")))}
mib = 2**20
sizes = {
    "ray_wheel": os.path.basename(wheel),
    "ray_wheel_mib": round(os.path.getsize(wheel) / mib, 1),
    "ray_unpacked_mib": round(full / mib, 1),
    "ray_pruned_mib": round(pruned / mib, 1),
    "ray_tar_xz_mib": round(os.path.getsize(os.path.join(out, "ray.tar.xz")) / mib, 1),
    "wheels_mib": round(sum(wheels.values()) / mib, 1),
    "wheels": wheels,
}
json.dump(sizes, open(os.path.join(out, "sizes.json"), "w"), indent=1)
print(f"ray {sizes['ray_wheel']}: wheel {sizes['ray_wheel_mib']} MiB, unpacked {sizes['ray_unpacked_mib']} MiB, "
      f"pruned {sizes['ray_pruned_mib']} MiB, tar.xz {sizes['ray_tar_xz_mib']} MiB; "
      f"{len(wheels)} other wheels {sizes['wheels_mib']} MiB")
EOF
rm -rf "$OUT/tmp"
du -sh "$OUT"
