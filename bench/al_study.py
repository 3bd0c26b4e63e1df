"""Active learning versus random (and the other baselines) over seeds: learning curves, samples ratios, figures.

    .venv/bin/python bench/al_study.py --quick                 # 2 seeds x (al, random), 3 rounds: minutes
    .venv/bin/python bench/al_study.py --config bench/al_study.toml   # the full study

Every (strategy, seed) is an ordinary run directory under --out (resumable: re-running the command continues
where it stopped); all strategies of one seed share the initial set, the candidate pools and the test set.
Writes docs/results.json (CONTRACTS.md schema) and PNG figures into --docs.

Samples ratio of a metric = training-set size at which the baseline reaches its final value / size at which the
strategy reaches it, on the seed-mean curves, interpolated linearly in log(size) (> 1: fewer samples). `hard` =
per-sample MAE over the test samples with >= 15 sources or from the clustered sampler.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tomllib
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.actors import ray_session  # noqa: E402
from curate.config import default_config  # noqa: E402
from curate.loop import RunPaths, init_run, read_rounds, run  # noqa: E402
from curate.store import Store  # noqa: E402

console = Console(width=150)
QUICK = {"preset": "small", "strategies": ["al", "random"], "seeds": [0, 1], "rounds": 3, "overrides": {}}
HARD_SOURCES = 15


def hard_subsets(root: Path, k: int) -> dict:
    """Per-sample MAE means on the hard test subsets of round k."""
    ev = json.loads((RunPaths(root).state(k) / "eval.json").read_text())
    with Store(RunPaths(root).store, readonly=True) as st:
        idx = st.index().set_index("id")
    n_src = idx.loc[ev["ids"], "n_sources"].to_numpy()
    samp = np.array(ev["sampler"])
    e = np.array(ev["per_sample"])
    many, clus = n_src >= HARD_SOURCES, samp == "clustered"
    return {"many_sources": float(e[many].mean()), "clustered": float(e[clus].mean()),
            "hard": float(e[many | clus].mean())}  # fmt: skip


def curves(root: Path) -> dict[str, np.ndarray]:
    rounds = read_rounds(root)
    hard = [hard_subsets(root, r["round"]) for r in rounds]
    return {
        "n": np.array([r["train_size"] for r in rounds], float),
        "mae": np.array([r["test"]["mae"]["all"] for r in rounds]),
        "p99": np.array([r["test"]["per_sample_mae"]["p99"] for r in rounds]),
        "hard": np.array([h["hard"] for h in hard]),
        "many_sources": np.array([h["many_sources"] for h in hard]),
        "clustered": np.array([h["clustered"] for h in hard]),
        "solves": np.cumsum([r["solves"] for r in rounds]).astype(float),
        "seconds": np.cumsum([r["seconds"]["total"] for r in rounds]),
    }


def reach(n: np.ndarray, v: np.ndarray, target: float) -> float | None:
    """Smallest size at which the curve v(n) falls to target (linear in log n between points)."""
    if v[0] <= target:
        return float(n[0])
    for i in range(1, len(n)):
        if v[i] <= target:
            t = (v[i - 1] - target) / (v[i - 1] - v[i])
            return float(np.exp(np.log(n[i - 1]) + t * (np.log(n[i]) - np.log(n[i - 1]))))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="TOML: preset, strategies, seeds, rounds, [overrides]")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/study"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()
    spec = dict(QUICK)
    if args.config:
        spec.update(tomllib.loads(args.config.read_text()))
    t0 = time.time()
    out = args.out / ("quick" if args.quick else "full")
    runs: dict[str, list[Path]] = {}
    with ray_session(num_cpus=2):
        for seed in spec["seeds"]:
            for strategy in spec["strategies"]:
                root = out / f"{strategy}-s{seed}"
                cfg = default_config(spec["preset"])
                cfg.seed, cfg.rounds = seed, spec["rounds"]
                cfg.acquisition.strategy = strategy
                cfg.ray.dashboard = False
                for section, values in spec.get("overrides", {}).items():
                    for key, v in values.items():
                        target = cfg if section == "run" else getattr(cfg, section)
                        if isinstance(target, dict):
                            target[key] = v
                        else:
                            setattr(target, key, v)
                init_run(root, cfg)
                console.print(f"[bold]{strategy} seed {seed}[/] -> {root}")
                run(root, log=lambda s: console.print("  " + s), show_progress=False)
                runs.setdefault(strategy, []).append(root)
    summarise(spec, runs, args.docs, time.time() - t0, " ".join(sys.argv))


def summarise(spec: dict, runs: dict[str, list[Path]], docs: Path, seconds: float, command: str) -> dict:
    mean = {
        s: {k: np.mean([curves(r)[k] for r in roots], axis=0) for k in curves(roots[0])} for s, roots in runs.items()
    }
    spread = {s: {k: np.std([curves(r)[k] for r in roots], axis=0) for k in ("mae", "p99", "hard")}
              for s, roots in runs.items()}  # fmt: skip
    base = mean["random"]
    results = {"strategies": {}, "baseline": "random", "command": command, "seconds": round(seconds, 1),
               "preset": spec["preset"], "rounds": spec["rounds"]}  # fmt: skip
    table = Table("strategy", "seeds", "final n", "MAE", "p99", "hard (>=15 src | clustered)", ">=15 src", "clustered",
                  "ratio MAE", "ratio p99", "ratio hard", "solves", "wall s",
                  title=f"{spec['preset']}: test metrics at the final size, seed means (± std)")  # fmt: skip
    for s, m in mean.items():
        ratios = {}
        for key in ("mae", "p99", "hard"):
            n_s = reach(m["n"], m[key], base[key][-1])
            ratios[key] = None if n_s is None else base["n"][-1] / n_s
        last = read_rounds(runs[s][0])[-1]
        finals = [read_rounds(r)[-1]["test"] for r in runs[s]]
        results["strategies"][s] = {
            "samples_ratio": ratios,
            "final": last["test"],
            "final_mean": {
                "mae": float(m["mae"][-1]),
                "p99": float(m["p99"][-1]),
                "hard": float(m["hard"][-1]),
                "many_sources": float(m["many_sources"][-1]),
                "clustered": float(m["clustered"][-1]),
                "mae_20_sources": float(np.mean([f["mae_by_sources"]["all"].get("20") or np.nan for f in finals])),
            },  # fmt: skip
            "curve": {k: m[k].tolist() for k in m},
            "seeds": len(runs[s]),
        }
        table.add_row(s, str(len(runs[s])), f"{m['n'][-1]:.0f}",
                      *[f"{m[k][-1]:.4g} ± {spread[s][k][-1]:.2g}" for k in ("mae", "p99", "hard")],
                      f"{m['many_sources'][-1]:.4g}", f"{m['clustered'][-1]:.4g}",
                      *["-" if ratios[k] is None else f"{ratios[k]:.2f}" for k in ("mae", "p99", "hard")],
                      f"{m['solves'][-1]:.0f}", f"{m['seconds'][-1]:.0f}")  # fmt: skip
    console.print(table)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(mean, spread, runs, docs)
    console.print(f"wrote {docs / 'results.json'} and figures in {docs}/ ({seconds / 60:.1f} min)")
    return results


def plot(mean, spread, runs, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for s, m in mean.items():
        for a, key, title in zip(ax, ("mae", "p99", "hard"), ("test MAE", "p99 per-sample MAE", "hard subsets MAE"),
                                 strict=True):  # fmt: skip
            a.errorbar(m["n"], m[key], yerr=spread[s][key], marker="o", capsize=3, label=s)
            a.set(xscale="log", yscale="log", xlabel="training-set size", title=title)
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(docs / "learning_curves.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.5), squeeze=False)
    for a, (s, roots) in zip(ax[0], runs.items(), strict=True):
        rounds = read_rounds(roots[0])
        counts = sorted({int(c) for r in rounds for c in r["test"]["mae_by_sources"]["all"]})
        bottom = np.zeros(len(counts))
        for r in rounds[1:]:
            row = np.array([r["added_by_sources"].get(str(c), 0) for c in counts])
            a.bar(counts, row, bottom=bottom, label=f"round {r['round']}")
            bottom += row
        a.set(title=f"{s}: samples added per source count", xlabel="number of sources")
    ax[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "budget_by_sources.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, roots in runs.items():
        regions = read_rounds(roots[0])[-1]["test"]["mae_by_sources"]
        counts = sorted(regions["all"], key=int)
        for region, style in (("all", "-"), ("sources", "--")):
            ax.plot([int(c) for c in counts], [regions[region][c] for c in counts], style, marker=".",
                    label=f"{s} {region}")  # fmt: skip
    ax.set(yscale="log", xlabel="number of sources", ylabel="test MAE", title="final models: MAE per source count")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "mae_by_sources.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
