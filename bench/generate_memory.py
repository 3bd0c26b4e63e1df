"""The memory of `curate generate`'s driver over request sizes: does it stay flat as the count grows?

    .venv/bin/python bench/generate_memory.py [--preset tiny] [--counts 300,3000,30000]

Each count runs `generate` into a fresh store in a fresh process on its own local Ray (2 CPUs), while a thread
samples /proc/self/status every 0.2 s. It prints the peak of the driver's private memory (RssAnon), of its
file-backed pages (RssFile: the libraries and the store's mapped pages in the page cache, clean and reclaimable)
and of its shared memory (RssShmem: Ray's object store), each with its ratio to the smallest count's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, re, sys, threading, time
from diffcurate.curate.cluster.generate import generate
from diffcurate.curate.cluster.session import ray_session
from diffcurate.solvers.problem import PRESETS

preset, count, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
peak, stop = {}, []

def watch():
    while not stop:
        for k, v in re.findall(r"(RssAnon|RssFile|RssShmem):\\s+(\\d+) kB", open("/proc/self/status").read()):
            peak[k] = max(peak.get(k, 0), int(v))
        time.sleep(0.2)

threading.Thread(target=watch, daemon=True).start()
with ray_session(num_cpus=2):
    t0 = time.perf_counter()
    r = generate(store, PRESETS[preset].physics, count, seed=0, sources=PRESETS[preset].sources, show_progress=False)
    seconds = time.perf_counter() - t0
stop.append(1)
time.sleep(0.3)
print(json.dumps({"count": count, "added": r.added, "seconds": seconds, **{k: v / 1024 for k, v in peak.items()}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--counts", default="300,3000,30000")
    args = ap.parse_args()
    rows = []
    for n in [int(c) for c in args.counts.split(",")]:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, args.preset, str(n), str(Path(d) / "store")],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print(f"| count | seconds | peak RssAnon MiB | peak RssFile MiB | peak RssShmem MiB |  ({args.preset})")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = {k: r[k] / base[k] if base[k] else float("nan") for k in ("RssAnon", "RssFile", "RssShmem")}
        print(
            f"| {r['count']:,} | {r['seconds']:.1f} | {r['RssAnon']:.0f} ({ratio['RssAnon']:.2f}x) | "
            f"{r['RssFile']:.0f} ({ratio['RssFile']:.2f}x) | {r['RssShmem']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
