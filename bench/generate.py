"""End-to-end `generate` throughput (solve + Ray + LMDB) with 1 and 2 solver actors, ratio in the same run.

    .venv/bin/python bench/generate.py                       # small (2000 samples) and paper (48 samples)
    .venv/bin/python bench/generate.py --presets paper --paper-count 96

Rates are over the solve phase (first dispatch to last write); Ray start-up and actor start are reported apart.
Each solver actor runs one torch / FFT thread (num_cpus=1), so 2 actors use the 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.actors import ray_session  # noqa: E402
from curate.generate import generate  # noqa: E402
from solvers.problem import PRESETS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "paper"])
    ap.add_argument("--small-count", type=int, default=2000)
    ap.add_argument("--paper-count", type=int, default=48)
    args = ap.parse_args()
    t = Table("preset", "workers", "samples", "samples/s (solving)", "x vs 1 worker", "seconds in all",
              title="curate generate, end to end (mixed sampler, 1-20 sources)")  # fmt: skip
    with ray_session(num_cpus=2), tempfile.TemporaryDirectory() as d:
        for name in args.presets:
            n = args.paper_count if name == "paper" else args.small_count
            base = None
            for workers in (1, 2):
                p = PRESETS[name]
                r = generate(Path(d) / f"{name}-{workers}", p.physics, n, seed=0, sources=p.sources, workers=workers,
                             chunk=4 if name == "paper" else 64, show_progress=False)  # fmt: skip
                base = base or r.samples_per_s
                t.add_row(name, str(workers), str(r.solved), f"{r.samples_per_s:,.1f}", f"{r.samples_per_s / base:.2f}",
                          f"{r.seconds:.1f}")  # fmt: skip
    Console(width=140).print(t)


if __name__ == "__main__":
    main()
