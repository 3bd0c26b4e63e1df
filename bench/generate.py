"""End-to-end `generate` throughput (solve + Ray + LMDB) with 1 and 2 solver actors, ratio in the same run.

    .venv/bin/python bench/generate.py                       # small (2000 samples) and paper (48 samples)
    .venv/bin/python bench/generate.py --presets small paper --paper-count 1000 --repeats 5   # the README's table

With --repeats N the 1- and 2-actor runs alternate N times (this machine is noisy) and the table gives the median
rate of each and the ratio of the medians, with the range of the per-pair ratios.

Rates are over the solve phase (first dispatch to last write); Ray start-up and actor start are reported apart.
Each solver actor runs one torch / FFT thread (num_cpus=1), so 2 actors use the 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcurate.curate.cluster.generate import generate  # noqa: E402
from diffcurate.curate.cluster.session import ray_session  # noqa: E402
from diffcurate.solvers.problem import PRESETS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["small", "paper"])
    ap.add_argument("--small-count", type=int, default=2000)
    ap.add_argument("--paper-count", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=1, help="alternate 1- and 2-actor runs this many times")
    ap.add_argument(
        "--paper-chunk",
        type=int,
        default=None,
        help="configurations per solver task at the paper preset (default: generate's, 8)",
    )
    args = ap.parse_args()
    t = Table(
        "preset",
        "workers",
        "samples",
        "samples/s (solving, median)",
        "x vs 1 worker",
        "pair ratios",
        "seconds in all",
        title=f"curate generate, end to end (mixed sampler, 1-20 sources, {args.repeats} alternating repeats)",
    )
    pair_text: dict[str, str] = {}
    for name in args.presets:  # a fresh cluster and directory per preset: one preset's runs don't tax the next's
        with ray_session(num_cpus=2), tempfile.TemporaryDirectory() as d:
            n = args.paper_count if name == "paper" else args.small_count
            p = PRESETS[name]
            rates: dict[int, list[float]] = {1: [], 2: []}
            secs: dict[int, list[float]] = {1: [], 2: []}
            for rep in range(args.repeats):
                for workers in (1, 2):
                    r = generate(
                        Path(d) / f"{name}-{workers}-{rep}",
                        p.physics,
                        n,
                        seed=0,
                        sources=p.sources,
                        workers=workers,
                        chunk=args.paper_chunk if name == "paper" else None,
                        show_progress=False,
                    )
                    rates[workers].append(r.samples_per_s)
                    secs[workers].append(r.seconds)
        base = float(np.median(rates[1]))
        pairs = [b / a for a, b in zip(rates[1], rates[2], strict=True)]
        for workers in (1, 2):
            med = float(np.median(rates[workers]))
            span = "-" if workers == 1 else f"{min(pairs):.2f}-{max(pairs):.2f}"
            t.add_row(
                name, str(workers), str(n), f"{med:,.1f}", f"{med / base:.2f}", span, f"{np.median(secs[workers]):.1f}"
            )
        pair_text[name] = " ".join(f"{a:.1f}->{b:.1f}" for a, b in zip(rates[1], rates[2], strict=True))
    Console(width=160).print(t)
    for name, text in pair_text.items():
        print(f"{name} pairs (samples/s, 1 -> 2 actors, in run order): {text}")


if __name__ == "__main__":
    main()
