"""Samples through Ray's object store, as `curate run` ships a round's training set to its trainers: MiB/s of
`ray.put` in the driver and of an actor's `ray.get` (and a pass over the arrays), for what is sent (y and the
configurations; the actor paints x and the mask) against the baseline of sending x, y and the mask as well, in one
run (docs/benchmarks.md, "Data through Ray").

    .venv/bin/python bench/object_store.py                  # paper preset (L = 512), 512 samples
    .venv/bin/python bench/object_store.py --preset small --samples 4000

One node: the object store is shared memory, so this is the floor of a transfer; between nodes the network adds
its own rate. The actor's time includes painting x and the mask from the configurations where they are not sent.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_args import options  # noqa: E402


def main() -> int:
    args = options(__doc__, preset="paper", samples=512, repeats=3)

    import ray

    from diffcurate.curate.cluster.actors import Solved
    from diffcurate.curate.cluster.session import init_local
    from diffcurate.solvers.problem import PRESETS, disc_mask, paint
    from diffcurate.solvers.sampling import sample_configs

    p = PRESETS[args.preset]
    L, n = p.physics.lattice, args.samples
    cfg = sample_configs("mixed", p.physics, 0, range(n), p.sources)[0]
    y = np.random.default_rng(0).random((n, L, L), dtype=np.float32)  # (n, L, L): the bytes, not the physics
    sent = Solved(cfg, y)
    full = {"x": paint(p.physics, cfg), "y": y, "mask": disc_mask(p.physics, cfg), "configs": cfg}

    @ray.remote(num_cpus=1)
    class Receiver:
        def take(self, obj) -> float:
            """Seconds to have the arrays in hand: x and the mask painted where they were not sent."""
            t0 = time.perf_counter()
            if isinstance(obj, Solved):
                x, m = paint(p.physics, obj.configs), disc_mask(p.physics, obj.configs)
                total = float(obj.y.sum()) + float(x.sum()) + float(m.sum())
            else:
                total = float(obj["y"].sum()) + float(obj["x"].sum()) + float(obj["mask"].sum())
            return time.perf_counter() - t0 if total == total else -1.0

    init_local(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        recv = Receiver.remote()
        ray.get(recv.take.remote(ray.put(Solved(cfg[:1], y[:1]))))  # the actor started
        rows = {}
        for name, obj in (("y + configurations", sent), ("x + y + mask (baseline)", full)):
            mib = (y.nbytes + (0 if obj is sent else full["x"].nbytes + full["mask"].nbytes)) / 2**20
            puts, gets = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ref = ray.put(obj)
                puts.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ray.get(recv.take.remote(ref))
                gets.append(time.perf_counter() - t0)
                del ref
            rows[name] = (mib, float(np.median(puts)), float(np.median(gets)))
    finally:
        ray.shutdown()
    print(f"{args.preset} preset, {n} samples (L = {L}), median of {args.repeats}:")
    print("| sent | MiB | put s | put MiB/s | actor has it, s | end to end s |")
    print("|---|---|---|---|---|---|")
    for name, (mib, put, get) in rows.items():
        print(f"| {name} | {mib:.0f} | {put:.3f} | {mib / put:,.0f} | {get:.3f} | {put + get:.3f} |")
    a, b = rows["y + configurations"], rows["x + y + mask (baseline)"]
    print(f"bytes ratio {a[0] / b[0]:.2f}, end-to-end time ratio {(a[1] + a[2]) / (b[1] + b[2]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
