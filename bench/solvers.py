"""Per-solve time and accuracy of every solver, 20 sources, with ratios measured in the same run.

    .venv/bin/python bench/solvers.py                  # L = 64, 128, 256, 512 on the CPU (and CUDA if present)
    .venv/bin/python bench/solvers.py --sizes 512 --cli  # also `curate solve` end to end (64 vs 4 configs)
    .venv/bin/python bench/solvers.py --problem darcy    # the Darcy solvers at every preset against spsolve

Ratios are against `reference` (SuperLU) and `timestep` (explicit Euler to max|du| < 1e-6) timed in this run,
because this machine is noisy. Accuracy is max |u - u_reference| (float64 reference).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcurate.solvers import Configs, Physics, solve  # noqa: E402

console = Console(width=150)


def configs(L: int, R: int, n: int, k: int = 20, seed: int = 0) -> Configs:
    rng = np.random.default_rng(seed)
    vals = [np.r_[1.0, 1.0 - rng.random(k - 1)] for _ in range(n)]
    return Configs.from_lists([rng.integers(R, L - R, size=(k, 2)) for _ in range(n)], vals)


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_size(L: int, args) -> list[dict]:
    R = 5 if L >= 128 else 2
    ph = Physics(L, R, 1.0, 1.0 / 400.0 if L >= 128 else 1.0 / 64.0)
    rows = []
    one = configs(L, R, 1)
    t_ref, ref = timed(lambda: solve(ph, one, "reference"), 1 if L >= 256 else args.repeats)
    rows.append(dict(L=L, solver="reference", device="cpu", dtype="float64", ms=t_ref * 1e3, err=0.0))
    t_ts = None
    if not args.no_timestep:
        t_ts, ts = timed(lambda: solve(ph, one, "timestep"), 1)
        rows.append(
            dict(
                L=L, solver="timestep", device="cpu", dtype="float64", ms=t_ts * 1e3, err=float(np.abs(ts - ref).max())
            )
        )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    batch = args.batch
    many = configs(L, R, batch, seed=1)
    for dev in devices:
        for dt in ("float64", "float32"):
            solve(ph, many[:2], "fast", device=dev, dtype=dt)  # warm caches (Green's table, FFT plans)

            def run(dev=dev, dt=dt):
                out = solve(ph, many, "fast", device=dev, dtype=dt, batch_size=batch)
                if dev == "cuda":
                    torch.cuda.synchronize()
                return out

            t, _ = timed(run, args.repeats)
            err = float(np.abs(solve(ph, one, "fast", device=dev, dtype=dt) - ref).max())
            rows.append(dict(L=L, solver="fast", device=dev, dtype=dt, ms=t / batch * 1e3, err=err))
    for r in rows:
        r["vs_reference"] = t_ref * 1e3 / r["ms"]
        r["vs_timestep"] = (t_ts * 1e3 / r["ms"]) if t_ts else None
    return rows


def bench_cli(L: int) -> dict:
    """`curate solve` end to end: (t(64) - t(4)) / 60 removes start-up and file writing."""
    exe = str(Path(sys.executable).with_name("curate"))
    times = {}
    with tempfile.TemporaryDirectory() as d:
        for n in (4, 64):
            cmd = [
                exe,
                "solve",
                "--out",
                f"{d}/o{n}.npz",
                "--count",
                str(n),
                "--lattice",
                str(L),
                "--radius",
                "5",
                "--decay",
                "0.0025",
                "--sources",
                "20-20",
                "--sampler",
                "uniform",
                "--dtype",
                "float64",
                "--device",
                "cpu",
                "--batch-size",
                "16",
            ]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[n] = time.perf_counter() - t
    return dict(L=L, ms_per_solve=(times[64] - times[4]) / 60 * 1e3, t4=times[4], t64=times[64])


def bench_darcy(args) -> list[dict]:
    """The Darcy problem's solvers on `grf` media at every preset: the default SuperLU call (minimum-degree
    ordering of A + A^T), AMG-preconditioned CG (when pyamg is installed), and scipy's `spsolve` with its
    default ordering, the baseline of the ratios; accuracy against the default call's solution."""
    from scipy.sparse.linalg import spsolve

    from diffcurate.solvers import darcy_solver as ds
    from diffcurate.solvers.darcy import PRESETS
    from diffcurate.solvers.darcy_media import sample_media

    rows = []
    for name, preset in PRESETS.items():
        s = preset.params.size
        media = sample_media("grf", s, 0, range(args.batch if s < 200 else 2))[0]
        fields = [np.where(m, 12.0, 3.0) for m in media]

        def plain(fields=fields):
            out = []
            for a in fields:
                mat = ds.operator(a)
                out.append(spsolve(mat.tocsc(), np.ones(mat.shape[0])))
            return out

        t_base, _ = timed(plain, args.repeats)
        methods = ["direct"] + (["amg"] if ds.amg_available() else [])
        t_direct, ref = timed(lambda fields=fields: [ds.solve_one(a, 1.0, "direct") for a in fields], args.repeats)
        for m in methods:
            t_m, u = (
                (t_direct, ref)
                if m == "direct"
                else timed(lambda fields=fields, m=m: [ds.solve_one(a, 1.0, m) for a in fields], args.repeats)
            )
            err = max(float(np.abs(x - r).max() / np.abs(r).max()) for x, r in zip(u, ref, strict=True))
            rows.append(
                dict(preset=name, s=s, solver=m, ms=t_m / len(fields) * 1e3, vs_spsolve=t_base / t_m, rel_err=err)
            )
        rows.append(dict(preset=name, s=s, solver="spsolve (default)", ms=t_base / len(fields) * 1e3, vs_spsolve=1.0))
    t = Table("preset", "s", "solver", "ms/solve", "x vs spsolve", "max rel diff vs direct", title="darcy solvers")
    for r in rows:
        t.add_row(
            r["preset"],
            str(r["s"]),
            r["solver"],
            f"{r['ms']:.1f}",
            f"{r['vs_spsolve']:.2f}",
            f"{r.get('rel_err', 0):.1e}",
        )
    console.print(t)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="diffusion", choices=["diffusion", "darcy"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-timestep", action="store_true")
    ap.add_argument("--cli", action="store_true", help="also time `curate solve` end to end at the largest size")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args()
    if args.problem == "darcy":
        rows = bench_darcy(args)
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=1))
        return
    rows = [r for L in args.sizes for r in bench_size(L, args)]
    t = Table(
        "L",
        "solver",
        "device",
        "dtype",
        "ms/solve",
        "x vs reference",
        "x vs timestep",
        "max err vs ref",
        title=f"solvers, 20 sources, {torch.get_num_threads()} torch threads",
    )
    for r in rows:
        vt = f"{r['vs_timestep']:.0f}" if r["vs_timestep"] else "-"
        t.add_row(
            str(r["L"]),
            r["solver"],
            r["device"],
            r["dtype"],
            f"{r['ms']:.1f}",
            f"{r['vs_reference']:.1f}",
            vt,
            f"{r['err']:.1e}",
        )
    console.print(t)
    out = {"rows": rows}
    if args.cli:
        c = bench_cli(max(args.sizes))
        fast = next(r for r in rows if r["L"] == c["L"] and r["solver"] == "fast" and r["dtype"] == "float64")
        ref = next(r for r in rows if r["L"] == c["L"] and r["solver"] == "reference")
        c["vs_reference"] = ref["ms"] / c["ms_per_solve"]
        console.print(
            f"curate solve end to end at L={c['L']}: {c['ms_per_solve']:.1f} ms/solve "
            f"(4 configs {c['t4']:.1f} s, 64 configs {c['t64']:.1f} s) = {c['vs_reference']:.0f}x reference, "
            f"{fast['ms'] / c['ms_per_solve']:.2f} of the library's speed"
        )
        out["cli"] = c
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
