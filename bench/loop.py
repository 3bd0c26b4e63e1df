"""Wall time of curation rounds with and without pipelining, with 1 and 2 solver actors (same-run ratios).

    .venv/bin/python bench/loop.py                      # small preset, 2 acquisition rounds, 6 epochs per round
    .venv/bin/python bench/loop.py --rounds 3 --epochs 12

Pipelining solves round k+1's pool while round k trains; the gain is bounded by the pool's solve time, which on
this 2-core CPU is small next to CPU training (and both compete for the same cores). The run directories are
fresh each time; the initial sets (round 0's solves) are made in every configuration alike.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_args import options  # noqa: E402

from diffcurate.curate.cluster.session import ray_session  # noqa: E402
from diffcurate.curate.loop.config import default_config  # noqa: E402
from diffcurate.curate.loop.rundir import init_run, read_rounds  # noqa: E402
from diffcurate.curate.loop.runner import run  # noqa: E402


def main() -> None:
    args = options(__doc__, preset="small", rounds=2, epochs=6, pool=1000)
    rows = []
    with ray_session(num_cpus=2), tempfile.TemporaryDirectory() as d:
        for workers in (1, 2):
            for pipeline in (False, True):
                cfg = default_config(args.preset)
                cfg.rounds, cfg.data.pool = args.rounds, args.pool
                cfg.train = dataclasses.replace(cfg.train, epochs=args.epochs)
                cfg.ray.workers, cfg.ray.pipeline, cfg.ray.dashboard = workers, pipeline, False
                root = Path(d) / f"w{workers}-p{int(pipeline)}"
                init_run(root, cfg)
                t0 = time.perf_counter()
                run(root, log=lambda s: None, show_progress=False)
                wall = time.perf_counter() - t0
                rounds = read_rounds(root)
                solve = sum(r["seconds"]["solve"] for r in rounds[1:])
                train = sum(r["seconds"]["train"] for r in rounds[1:])
                rows.append((workers, pipeline, wall, solve, train))
    base = rows[0][2]
    t = Table(
        "solver actors",
        "pipelined",
        "wall s (all rounds)",
        "x vs 1 actor, sequential",
        "pool solve s",
        "train s",
        title=f"{args.preset}: round 0 + {args.rounds} rounds, pool {args.pool}, {args.epochs} epochs",
    )
    for w, p, wall, solve, train in rows:
        t.add_row(str(w), "yes" if p else "no", f"{wall:.1f}", f"{base / wall:.2f}", f"{solve:.1f}", f"{train:.1f}")
    Console(width=140).print(t)


if __name__ == "__main__":
    main()
