"""Active learning versus random (and the other baselines) over seeds: learning curves, samples ratios, figures.

    .venv/bin/python bench/al_study.py --quick                 # 2 seeds x (al, random), 3 rounds: < 10 min
    .venv/bin/python bench/al_study.py --config bench/al_study.toml   # the full study (5 variants x 4 seeds)

Every (variant, seed) is an ordinary run directory under --out (resumable: re-running the command continues
where it stopped); all variants of one seed share the initial set, the candidate pools and the test set.
Writes docs/results.json (docs/formats.md schema) and PNG figures into --docs.

Variants: `al` (true error), `al-residual` (the best ground-truth-free estimator), `random`, `uniform-per-count`,
`lcmd` (bmdal-reg's LCMD on the network's bottleneck features: the field's implementation).

Samples ratio of a metric = training-set size at which the baseline reaches its final value / size at which the
variant reaches it (> 1: fewer samples). Two estimates: interpolated linearly in log(size) on the seed-mean
curves, and from a power law v = c n^b fitted to each seed-mean curve, with a 90 % bootstrap interval over seeds
(seeds resampled with replacement, curves refitted). `hard` = per-sample MAE over the test samples with >= 15
sources or from the clustered sampler. The cross-count matrix (the paper's Fig. 16) trains one model per
source-count bin P on the final training set's samples with P sources and tests it on every bin M.
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
from rich.progress import Progress, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffcurate.curate.cluster.actors import ray_session  # noqa: E402
from diffcurate.curate.loop.config import default_config  # noqa: E402
from diffcurate.curate.loop.rundir import RunPaths, init_run, read_rounds  # noqa: E402
from diffcurate.curate.loop.runner import run  # noqa: E402
from diffcurate.curate.store.lmdbstore import Store  # noqa: E402

console = Console(width=210)
# --quick: no cross-count matrix (its 8 trainings would take it past 10 minutes); results go to docs/quick/
QUICK = {"preset": "small", "strategies": ["al", "random"], "seeds": [0, 1], "rounds": 3, "overrides": {},
         "bootstrap": 500, "cross_count_bins": []}  # fmt: skip
HARD_SOURCES = 15
# variant -> run-config overrides (section -> key -> value); a study config may add its own [variants.NAME]
VARIANTS: dict[str, dict] = {
    "al": {"acquisition": {"strategy": "al", "acquisition": "true-error"}},
    "al-residual": {"acquisition": {"strategy": "al", "acquisition": "residual"}},
    # a more exploitative ranker: less budget floor per count, no random share, tighter candidate set
    "al-focus": {
        "acquisition": {
            "strategy": "al",
            "acquisition": "true-error",
            "floor": 0.2,
            "exploration": 0.0,
            "candidates_factor": 1.5,
        }
    },
    "random": {"acquisition": {"strategy": "random"}},
    "uniform-per-count": {"acquisition": {"strategy": "uniform-per-count"}},
    "lcmd": {"acquisition": {"strategy": "lcmd"}},
    "coreset": {"acquisition": {"strategy": "coreset"}},
}


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


def _apply(cfg, overrides: dict) -> None:
    for section, values in overrides.items():
        for key, v in values.items():
            target = cfg if section == "run" else getattr(cfg, section)
            if isinstance(target, dict):
                target[key] = v
            else:
                setattr(target, key, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="TOML: preset, strategies, seeds, rounds, [overrides], [variants]")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/study"))
    ap.add_argument("--docs", type=Path, help="results.json and figures (default: docs/, or docs/quick/ with --quick)")
    args = ap.parse_args()
    args.docs = args.docs or Path("docs/quick" if args.quick else "docs")
    spec = dict(QUICK)
    if args.config:
        spec.update(tomllib.loads(args.config.read_text()))
    variants = {**VARIANTS, **spec.get("variants", {})}
    unknown = [s for s in spec["strategies"] if s not in variants]
    if unknown:
        sys.exit(f"error: unknown variants {unknown} (choose from {', '.join(variants)})")
    t0 = time.time()
    out = args.out / ("quick" if args.quick else "full")
    runs: dict[str, list[Path]] = {}
    n_runs = len(spec["seeds"]) * len(spec["strategies"])
    with ray_session(num_cpus=2), Progress(*Progress.get_default_columns(), TimeElapsedColumn(),
                                           console=console) as bar:  # fmt: skip
        task = bar.add_task("study", total=n_runs)
        for seed in spec["seeds"]:
            for name in spec["strategies"]:
                root = out / f"{name}-s{seed}"
                cfg = default_config(spec["preset"])
                cfg.seed, cfg.rounds = seed, spec["rounds"]
                cfg.ray.dashboard = False
                _apply(cfg, spec.get("overrides", {}))
                _apply(cfg, variants[name])
                init_run(root, cfg)
                bar.update(task, description=f"{name} seed {seed}")
                run(root, log=lambda s: bar.console.print("  " + s), show_progress=False)
                runs.setdefault(name, []).append(root)
                bar.advance(task)
    matrix = cross_count(runs, spec, out)
    summarise(spec, runs, args.docs, time.time() - t0, " ".join(sys.argv), matrix)


def power_fit(n: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(c, b) of v = c n^b, least squares in log-log."""
    b, logc = np.polyfit(np.log(n), np.log(v), 1)
    return float(np.exp(logc)), float(b)


def fit_ratio(n_base: np.ndarray, v_base: np.ndarray, n: np.ndarray, v: np.ndarray) -> float | None:
    """Samples ratio from power laws: the baseline's fitted final value, reached by the variant's fitted curve."""
    c0, b0 = power_fit(n_base, v_base)
    c, b = power_fit(n, v)
    if b >= 0:
        return None
    return float(n_base[-1] / (c0 * n_base[-1] ** b0 / c) ** (1 / b))


def bootstrap_ratio(per_seed: dict[str, list[dict]], name: str, key: str, reps: int, rng) -> dict:
    """Median and 90 % interval of `fit_ratio` over seed resamples (paired: variants of a seed share data)."""
    k = len(per_seed[name])
    base_n = per_seed["random"][0]["n"]
    out = []
    for _ in range(reps):
        pick = rng.integers(k, size=k)
        vb = np.mean([per_seed["random"][i][key] for i in pick], axis=0)
        vs = np.mean([per_seed[name][i][key] for i in pick], axis=0)
        r = fit_ratio(base_n, vb, per_seed[name][0]["n"], vs)
        out.append(np.inf if r is None else r)
    q = np.quantile(out, [0.05, 0.5, 0.95])
    fin = lambda x: float(x) if np.isfinite(x) else None  # noqa: E731
    return {"lo": fin(q[0]), "median": fin(q[1]), "hi": fin(q[2])}


def _bins(spec: dict) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in spec["cross_count_bins"]]


def cross_count(runs: dict[str, list[Path]], spec: dict, out: Path) -> dict | None:
    """{variant: (P bins x M bins) test MAE}: train on the final training set's samples with P sources (the
    run's own model and training config, seed-0 run), test on M sources. Cached in out/cross_count.json."""
    from diffcurate.curate.loop.rundir import load_run
    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.metrics import evaluate_model
    from diffcurate.model.train import TrainConfig, train

    if not spec["cross_count_bins"]:
        return None
    path = out / "cross_count.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    bins = _bins(spec)
    for name in [s for s in ("al", "random") if s in runs]:
        if name in cache:
            continue
        root = runs[name][0]
        cfg = load_run(root)
        with Store(RunPaths(root).store, readonly=True) as st:
            idx = st.index()
            got = {sp: st.get(idx[idx["split"] == sp]["id"].tolist()) for sp in ("train", "val", "test")}
            ph = st.physics
        val = dataset_from_configs(ph, got["val"][0], got["val"][1])
        rows = []
        for lo, hi in bins:
            cfg_tr, y_tr, _ = got["train"]
            keep = np.nonzero((cfg_tr.counts >= lo) & (cfg_tr.counts <= hi))[0]
            console.print(f"cross-count: {name} trains on {lo}-{hi} sources ({len(keep)} samples)")
            res = train(cfg.model, TrainConfig.from_dict(cfg.train), dataset_from_configs(ph, cfg_tr[keep], y_tr[keep]),
                        val, physics=ph, device="cpu")  # fmt: skip
            row = []
            cfg_te, y_te, _ = got["test"]
            for mlo, mhi in bins:
                t = np.nonzero((cfg_te.counts >= mlo) & (cfg_te.counts <= mhi))[0]
                m, _ = evaluate_model(res.model, dataset_from_configs(ph, cfg_te[t], y_te[t]))
                row.append(m["mae"]["all"])
            rows.append(row)
        cache[name] = rows
        path.write_text(json.dumps(cache))
    return {"bins": [list(b) for b in bins], "mae": cache}


def _ci(point: float | None, ci: dict) -> str:
    f = lambda x: "inf" if x is None else f"{x:.2f}"  # noqa: E731
    return f"{f(point)} [{f(ci['lo'])}, {f(ci['hi'])}]"


def summarise(spec: dict, runs: dict[str, list[Path]], docs: Path, seconds: float, command: str,
              matrix: dict | None = None) -> dict:  # fmt: skip
    per_seed = {s: [curves(r) for r in roots] for s, roots in runs.items()}
    mean = {s: {k: np.mean([c[k] for c in cs], axis=0) for k in cs[0]} for s, cs in per_seed.items()}
    spread = {s: {k: np.std([c[k] for c in cs], axis=0) for k in ("mae", "p99", "hard")}
              for s, cs in per_seed.items()}  # fmt: skip
    base = mean["random"]
    rng = np.random.default_rng(0)
    results = {"strategies": {}, "baseline": "random", "command": command, "seconds": round(seconds, 1),
               "preset": spec["preset"], "rounds": spec["rounds"], "seeds": spec["seeds"],
               "cross_count": matrix,
               "round_seconds_all_runs": round(float(sum(c["seconds"][-1] for cs in per_seed.values() for c in cs)), 1)}  # fmt: skip
    table = Table("strategy", "seeds", "final n", "MAE", "p99", "hard (>=15 src | clustered)", ">=15 src", "clustered",
                  "ratio MAE", "ratio p99", "ratio hard", "fit p99 [90 % CI]", "fit hard [90 % CI]", "solves",
                  "wall s",
                  title=f"{spec['preset']}: test metrics at the final size, seed means (± std)")  # fmt: skip
    for s, m in mean.items():
        ratios, fits, boot = {}, {}, {}
        for key in ("mae", "p99", "hard"):
            n_s = reach(m["n"], m[key], base[key][-1])
            ratios[key] = None if n_s is None else base["n"][-1] / n_s
            fits[key] = fit_ratio(base["n"], base[key], m["n"], m[key])
            boot[key] = bootstrap_ratio(per_seed, s, key, int(spec.get("bootstrap", 500)), rng)
        last = read_rounds(runs[s][0])[-1]
        finals = [read_rounds(r)[-1]["test"] for r in runs[s]]
        results["strategies"][s] = {
            "samples_ratio": ratios,
            "samples_ratio_fit": fits,
            "samples_ratio_fit_ci90": boot,
            "power_law_slope": {k: power_fit(m["n"], m[k])[1] for k in ("mae", "p99", "hard")},
            "final_vs_random": {k: float(m[k][-1] / base[k][-1]) for k in ("mae", "p99", "hard")},
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
                      *[_ci(fits[k], boot[k]) for k in ("p99", "hard")],
                      f"{m['solves'][-1]:.0f}", f"{m['seconds'][-1]:.0f}")  # fmt: skip
    console.print(table)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(mean, spread, runs, docs, matrix)
    console.print(f"wrote {docs / 'results.json'} and figures in {docs}/ ({seconds / 60:.1f} min)")
    return results


def plot(mean, spread, runs, docs: Path, matrix: dict | None = None) -> None:
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
    regions = ("all", "sources", "field", "r1", "r2", "r3")  # the paper's Fig. 9/12: one panel per region
    fig, ax = plt.subplots(1, len(regions), figsize=(3.2 * len(regions), 3.2), sharey=True)
    for s, roots in runs.items():
        finals = [read_rounds(r)[-1]["test"]["mae_by_sources"] for r in roots]
        counts = sorted(finals[0]["all"], key=int)
        for a, region in zip(ax, regions, strict=True):
            v = [np.nanmean([f[region].get(c) or np.nan for f in finals]) for c in counts]
            a.plot([int(c) for c in counts], v, marker=".", label=s)
            a.set(yscale="log", xlabel="number of sources", title=f"region {region}")
    ax[0].set_ylabel("test MAE (final models, seed mean)")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "mae_by_sources.png", dpi=110)
    plt.close(fig)
    if matrix and matrix["mae"]:
        names = list(matrix["mae"])
        labels = [f"{a}-{b}" for a, b in matrix["bins"]]
        fig, ax = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.8), squeeze=False)
        for a, name in zip(ax[0], names, strict=True):
            m = np.array(matrix["mae"][name])
            im = a.imshow(m, cmap="viridis")
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    a.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", color="w", fontsize=7)
            a.set(
                xticks=range(len(labels)),
                xticklabels=labels,
                yticks=range(len(labels)),
                yticklabels=labels,
                xlabel="test: sources M",
                ylabel="train: sources P",
                title=f"{name}: MAE, train P -> test M",
            )
            fig.colorbar(im, ax=a, fraction=0.046)
        fig.tight_layout()
        fig.savefig(docs / "cross_count.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
