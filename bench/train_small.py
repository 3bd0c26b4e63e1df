"""Reproduce the paper's qualitative training findings on the `small` preset (L=64) on a CPU in minutes.

Measures: error vs number of sources; which region errs most; MAE vs training-set size (log-law slope); sqrt
transform and loss toggling vs plain MAE; pooled test rel L2; seed spread of test MAE; training samples/s and
inference ms/sample per preset vs the fast solver's time per sample. Writes docs/train_small.json and
docs/train_small.png. Not run by the tests.

    .venv/bin/python bench/train_small.py            # ~10 minutes on 2 cores
    .venv/bin/python bench/train_small.py --quick    # ~3 minutes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffcurate.model.data import dataset_from_configs, synthetic_configs  # noqa: E402
from diffcurate.model.metrics import Metrics, evaluate_model  # noqa: E402
from diffcurate.model.nets import build_model, count_parameters, default_model_config  # noqa: E402
from diffcurate.model.train import default_train_config, train  # noqa: E402
from diffcurate.solvers import solve  # noqa: E402
from diffcurate.solvers.problem import PRESETS  # noqa: E402

console = Console(stderr=True)


def make(preset: str, n: int, seed: int):
    """(dataset, solver seconds per sample) for n uniform configurations."""
    p = PRESETS[preset]
    configs = synthetic_configs(p.physics, n, p.sources, seed)
    t = time.perf_counter()
    y = solve(p.physics, configs, "fast", dtype="float32", batch_size=64)
    return dataset_from_configs(p.physics, configs, y), (time.perf_counter() - t) / n


def run(name, args, tr, va, te, **kw):
    """Train one model; returns a result row with the test metrics."""
    seed = kw.pop("seed", 0)
    epochs = kw.pop("epochs", args.epochs)
    tc = default_train_config("small", epochs=epochs, seed=seed, **kw)
    t = time.perf_counter()
    res = train(default_model_config("small", args.model), tc, tr, va, physics=PRESETS["small"].physics, device="cpu")
    secs = time.perf_counter() - t
    m, _ = evaluate_model(res.model, te, "cpu", tc.transform)
    sps = float(np.median([h["train_samples_per_s"] for h in res.history]))
    console.log(
        f"{name}: n={len(tr)} epochs={epochs} test MAE {m['mae']['all']:.4g} rel L2 {m['rel_l2']:.3g} ({secs:.0f} s)"
    )
    return {
        "name": name,
        "train_size": len(tr),
        "epochs": epochs,
        "seed": seed,
        "seconds": secs,
        "train_samples_per_s": sps,
        "test": m,
        "options": kw,
    }


def timings(quick: bool) -> dict:
    """Training samples/s and inference ms/sample of each preset's default edcnn vs the fast solver."""
    out = {}
    for preset in ["tiny", "small"] + ([] if quick else ["paper"]):
        L = PRESETS[preset].physics.lattice
        model = build_model(default_model_config(preset, "edcnn"))
        bs = {"tiny": 32, "small": 32, "paper": 1}[preset]
        reps = {"tiny": 10, "small": 5, "paper": 1}[preset]
        x = torch.rand(bs, 1, L, L)
        opt = torch.optim.Adam(model.parameters())
        model.train()
        for i in range(reps + 1):
            if i == 1:
                t = time.perf_counter()
            loss = model(x).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_sps = reps * bs / (time.perf_counter() - t)
        model.eval()
        with torch.no_grad():
            model(x[:1])
            t = time.perf_counter()
            for _ in range(reps):
                model(x)
            infer_ms = 1000 * (time.perf_counter() - t) / (reps * bs)
        n_solve = {"tiny": 64, "small": 64, "paper": 4}[preset]
        _, solve_s = make(preset, n_solve, 99)
        out[preset] = {
            "parameters": count_parameters(model),
            "train_samples_per_s": train_sps,
            "inference_ms_per_sample": infer_ms,
            "fast_solver_ms_per_sample": 1000 * solve_s,
        }
        del model, opt
    return out


def by_sources_slope(m: dict) -> float:
    """Least-squares slope of test MAE (all pixels) vs number of sources."""
    d = m["mae_by_sources"]["all"]
    k = np.array([int(s) for s in d])
    v = np.array([d[s] for s in d])
    return float(np.polyfit(k, v, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets and fewer epochs (~3 min)")
    ap.add_argument("--model", default="edcnn", choices=["edcnn", "unet"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_max, args.epochs, n_val, n_test = (600, 8, 150, 400) if args.quick else (1600, 12, 300, 1000)
    t0 = time.perf_counter()

    full, solve_s = make("small", n_max, 0)
    va, _ = make("small", n_val, 1)
    te, _ = make("small", n_test, 2)
    console.log(f"data: {n_max}+{n_val}+{n_test} samples, fast solver {1000 * solve_s:.2f} ms/sample")

    rows = [run("mae", args, full, va, te)]
    for s in (1, 2):
        rows.append(run(f"mae-seed{s}", args, full, va, te, seed=s))
    rows.append(run("sqrt", args, full, va, te, transform="sqrt"))
    rows.append(run("exp", args, full, va, te, weight="exp"))
    period = max(1, args.epochs // 4)
    rows.append(run(f"toggle-{period}", args, full, va, te, weight="exp", schedule="toggle", schedule_period=period))
    sizes = []
    for frac in (8, 4, 2):
        n = n_max // frac
        sub = full.subset(np.arange(n))
        sizes.append(run(f"mae-n{n}", args, sub, va, te))  # same epochs for every size, as the paper
    sizes.append(rows[0])

    base = rows[0]["test"]
    ns = np.array([r["train_size"] for r in sizes])
    maes = np.array([Metrics.from_dict(r["test"]).mae_all for r in sizes])
    slope, icept = np.polyfit(np.log(ns), maes, 1)
    seed_maes = np.array([Metrics.from_dict(r["test"]).mae_all for r in rows[:3]])
    spread = float((seed_maes.max() - seed_maes.min()) / 2 / seed_maes.mean())
    region = {k: v for k, v in base["mae"].items() if k != "all"}
    findings = {
        "mae_vs_sources_slope": by_sources_slope(base),
        "mae_grows_with_sources": by_sources_slope(base) > 0,
        "largest_error_region": max(region, key=lambda k: region[k] or -1),
        "log_law": {
            "slope_per_ln_n": float(slope),
            "intercept": float(icept),
            "sizes": ns.tolist(),
            "mae": maes.tolist(),
        },
        "rel_l2": base["rel_l2"],
        "rel_l2_below_5pct": base["rel_l2"] < 0.05,
        "seed_mae": seed_maes.tolist(),
        "seed_half_spread_frac": spread,
        "seed_spread_within_10pct": spread <= 0.10,
        "variants_vs_mae": {
            r["name"]: Metrics.from_dict(r["test"]).mae_all / Metrics.from_dict(base).mae_all for r in rows[3:]
        },
    }
    timing = timings(args.quick)
    total = time.perf_counter() - t0
    command = "python bench/train_small.py" + (" --quick" if args.quick else "") + f" --model {args.model}"
    result = {
        "command": command,
        "preset": "small",
        "model": args.model,
        "threads": args.threads,
        "parameters": count_parameters(build_model(default_model_config("small", args.model))),
        "fast_solver_ms_per_sample": 1000 * solve_s,
        "runs": rows,
        "size_runs": sizes[:-1],
        "findings": findings,
        "timings": timing,
        "seconds": total,
    }
    report(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "train_small_quick" if args.quick else "train_small"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / f"{stem}.png")
    console.log(f"wrote {args.out / stem}.json/.png in {total:.0f} s")


def report(r: dict) -> None:
    out = Console()
    t = Table(title=f"small preset, {r['model']} ({r['parameters']:,} params): test set")
    for c in ("run", "n", "epochs", "MAE", "sources", "field", "r1", "r2", "r3", "rel L2", "p99", "train s"):
        t.add_column(c, justify="right")
    for row in r["runs"] + r["size_runs"]:
        m = row["test"]
        t.add_row(
            row["name"],
            str(row["train_size"]),
            str(row["epochs"]),
            *[_f(m["mae"][k]) for k in ("all", "sources", "field", "r1", "r2", "r3")],
            _f(m["rel_l2"]),
            _f(Metrics.from_dict(m).p99),
            f"{row['seconds']:.0f}",
        )
    out.print(t)
    f = r["findings"]
    t2 = Table(title="findings")
    t2.add_column("finding")
    t2.add_column("value", justify="right")
    t2.add_row("MAE vs #sources slope (per source)", f"{f['mae_vs_sources_slope']:.3g}")
    t2.add_row("largest-error region", f["largest_error_region"])
    t2.add_row("log law: dMAE / d ln n", f"{f['log_law']['slope_per_ln_n']:.3g}")
    t2.add_row("pooled test rel L2", f"{f['rel_l2']:.3%}")
    t2.add_row("seed half-spread of test MAE", f"±{f['seed_half_spread_frac']:.1%}")
    for k, v in f["variants_vs_mae"].items():
        t2.add_row(f"{k} MAE / plain MAE", f"{v:.3f}")
    out.print(t2)
    t3 = Table(title="speed (CPU, edcnn per preset)")
    for c in ("preset", "params", "train samples/s", "inference ms/sample", "fast solver ms/sample"):
        t3.add_column(c, justify="right")
    for p, v in r["timings"].items():
        t3.add_row(
            p,
            f"{v['parameters']:,}",
            f"{v['train_samples_per_s']:.3g}",
            f"{v['inference_ms_per_sample']:.3g}",
            f"{v['fast_solver_ms_per_sample']:.3g}",
        )
    out.print(t3)


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    base = r["runs"][0]["test"]["mae_by_sources"]
    for region in ("all", "sources", "field", "r1", "r2", "r3"):
        k = sorted(base[region], key=int)
        ax[0].plot([int(s) for s in k], [base[region][s] for s in k], marker="o", ms=3, label=region)
    ax[0].set(xlabel="number of sources", ylabel="test MAE", yscale="log", title="MAE by region vs sources")
    ax[0].legend(fontsize=7)
    law = r["findings"]["log_law"]
    ax[1].semilogx(law["sizes"], law["mae"], "o-", label="measured")
    ns = np.geomspace(min(law["sizes"]), max(law["sizes"]), 20)
    ax[1].semilogx(ns, law["intercept"] + law["slope_per_ln_n"] * np.log(ns), "--", label="a + b ln n")
    ax[1].set(xlabel="training samples", ylabel="test MAE", title="MAE vs training-set size")
    ax[1].legend(fontsize=7)
    names = [row["name"] for row in r["runs"]]
    ax[2].bar(names, [Metrics.from_dict(row["test"]).mae_all for row in r["runs"]])
    ax[2].set(ylabel="test MAE", title="loss variants and seeds")
    ax[2].tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
