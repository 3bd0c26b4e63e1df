"""results.json, the markdown tables (docs/study.md, the README) and the figures, from the records alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.study import records
from bench.study.protocol import COPIES, HARD, SETS, families, first_arm, jobs, problem_name, run_dir, schedule
from bench.study.stats import Errors, best_strategy, control_block, summarise_arm, transfer_table
from diffcurate.common.files import atomic_text


def summarise(spec: dict, recs: Path, docs: Path, command: str, default: str, extra: Path | None, out: Path) -> dict:
    later = any("best" in a["strategies"] for a in spec["arms"].values()) or spec.get("transfer")
    best = best_strategy(spec, recs) if later or spec.get("control") else None
    E = Errors(spec, recs, best)
    arms = {a: summarise_arm(E, a, spec) for a in spec["arms"]}
    first = first_arm(spec)
    p = spec["protocol"]
    sizes = schedule(spec)
    seconds = sum(r["seconds"]["total"] for a in E.meta.values() for ms in a.values() for m in ms for r in m["rounds"])
    results = {
        "protocol": {
            "problem": problem_name(spec),
            "arm": first,
            "preset": spec["preset"],
            "test_size": int(E.masks["mixed"].sum()),
            "held_out_size": int(E.masks["held_out"].sum()),
            "held_out_families": families(spec)[1],
            "test_split": "one split for every seed (data.test_seed), disjoint from every training draw",
            "seeds": {a: {s: list(v) for s, v in E.seeds[a].items()} for a in E.seeds},
            "initial": p["initial"],
            "schedule": sizes,
            "random_extended_rounds": spec["arms"][first].get("extend_random", 0),
            "pool_size": p["pool"],
            "picked_share": (sizes[-1] - p["initial"]) / sizes[-1],
            "training": {
                "mode": "scratch every round",
                "stop": "plateau: constant lr until val MAE stalls for `patience` epochs, cosine cool-down, best on val",
                "train_config": E.meta[first]["random"][0]["config"]["train"],
                "batch_size": p["batch_size"],
                "val_size": p["val"],
                "control": control_block(spec, recs, E, best),
            },
            "cost": "seconds of training and acquisition per round (" + ", ".join(records.COST_STEPS) + ")",
            "bootstrap": {
                "reps": int(spec.get("bootstrap", 1000)),
                "over": ["seeds", "test samples"],
                "paired": True,
                "interval": 0.9,
            },
            "sbal_beta": spec.get("sbal_beta"),
            "stratified_from": spec.get("stratified_from"),
            "stratified_copies": {c: src for c, src in COPIES.items() if c in arms[first]},
            "best": best,
            "code": sorted({m["code"] for a in E.meta.values() for ms in a.values() for m in ms}),
        },
        "baseline": "random",
        "default": default,
        "strategies": arms[first],
        "arms": arms if len(arms) > 1 else None,
        "transfer": transfer_table(spec, recs, E, best) if spec.get("transfer") else None,
        "budget_by_sources": budget_by_sources(spec, recs, best),
        "command": command,
        "run_seconds": round(seconds, 1),
    }
    if extra is not None:
        results["extra_test"] = extra_test(spec, out, best, extra)
    atomic_text(docs / "results.json", json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    plot(results, docs)
    print(f"wrote {docs / 'results.json'} and figures in {docs}/")
    return results


def extra_test(spec: dict, out: Path, best: str | None, path: Path) -> dict:
    """Every final model (every arm, strategy, seed) on an outside file: the evaluate schema, seed means. Needs the
    run directories (checkpoints are not part of the records)."""
    import torch

    from diffcurate.curate.store.dataset import load_file_dataset
    from diffcurate.model.checkpoint import load_checkpoint, transform_of
    from diffcurate.model.metrics import evaluate_model

    torch.set_num_threads(2)
    ds, physics = load_file_dataset(path)
    res: dict = {"file": str(path), "n_samples": len(ds), "strategies": {}}
    for arm_name, name, seed in jobs(spec, best):
        ckpt = run_dir(out, arm_name, name, seed) / "checkpoints" / f"round-{spec['rounds']:03d}.pt"
        net, meta = load_checkpoint(ckpt, physics=physics)
        m, _ = evaluate_model(net, ds, "cpu", transform_of(meta))
        res["strategies"].setdefault(arm_name, {}).setdefault(name, []).append({"seed": seed, **m})
    return res


def budget_by_sources(spec: dict, recs: Path, best: str | None) -> dict:
    """{strategy: {source count: picks, seed mean}} of the first arm's acquisition rounds (at the common size)."""
    first = first_arm(spec)
    acc: dict = {}
    for arm_name, name, seed in jobs(spec, best):
        if arm_name != first:
            continue
        total: dict[str, int] = {}
        for r in records.load(recs, arm_name, name, seed)[0]["rounds"][1 : spec["rounds"] + 1]:
            for c, v in r["added_by_sources"].items():
                total[c] = total.get(c, 0) + v
        acc.setdefault(name, []).append(total)
    keys = {c for runs in acc.values() for t in runs for c in t}
    return {
        s: {c: float(np.mean([t.get(c, 0) for t in runs])) for c in sorted(keys, key=int)} for s, runs in acc.items()
    }


def _f(x) -> str:
    return "inf" if x is None else f"{x:.2f}"


def _ci(d: dict) -> str:
    return f"[{_f(d['lo'])}, {_f(d['hi'])}]"


def markdown(res: dict) -> str:
    """The study's tables as markdown: per arm and test set, plus the control and transfer."""
    out = []
    arms = res["arms"] or {res["protocol"].get("arm", "edcnn"): res["strategies"]}
    for arm, strategies in arms.items():
        for set_name in SETS:
            label = "held-out families" if set_name == "held_out" else "mixed test split"
            out += [
                f"**{arm}, {label}** (final round, seed means; ratios of p99 per-sample MAE with 90 % intervals: "
                "vs random and vs stratified (the copy of the strategy's own allocation where the study runs one) at "
                "equal size, vs random at equal seconds; samples ratio = random's "
                "size to match / the strategy's, `>=`: random never matches within its schedule; `*`: the strategy spent "
                "more seconds than random's whole schedule, whose last value is then held):",
                "",
                "| strategy | seeds | MAE | p99 | MAE vs random | p99 vs random | p99 vs stratified | "
                "p99 vs random, equal seconds | p99 samples ratio (fit) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for s, b0 in strategies.items():
                b = b0 if set_name == "mixed" else b0["held_out"]
                ci = b["final_vs_random_ci90"]
                own = b0.get("stratified_baseline", "stratified")
                strat = (
                    f"{b['final_vs_stratified']['p99']:.3f} {_ci(b['final_vs_stratified_ci90']['p99'])}"
                    + (f" (vs {own})" if own != "stratified" else "")
                    if "final_vs_stratified" in b
                    else "-"
                )
                lb = ">=" if b["samples_ratio_lower_bound"]["p99"] else ""
                star = "*" if b.get("equal_cost_beyond_random", {}).get("p99") else ""
                name = f"{s} (peer)" if b0["peer"] else s
                out.append(
                    f"| {name} | {b0['seeds']} | {b['final_mean']['mae']:.4g} | {b['final_mean']['p99']:.4g} | "
                    f"{b['final_vs_random']['mae']:.3f} {_ci(ci['mae'])} | {b['final_vs_random']['p99']:.3f} "
                    f"{_ci(ci['p99'])} | {strat} | {b['final_vs_random_equal_cost']['p99']:.3f}{star} "
                    f"{_ci(b['final_vs_random_equal_cost_ci90']['p99'])} | {lb}{b['samples_ratio']['p99']:.2f} "
                    f"({_f(b['samples_ratio_fit']['p99'])}) |"
                )
            out.append("")
        ablation = {s: b for s, b in strategies.items() if "vs_base" in b}
        if ablation:
            out += [
                f"**{arm}, ablation**: each lever against the strategy it varies, final round, on the seeds both ran "
                "(paired), 90 % intervals over seeds and test samples:",
                "",
                "| strategy | against | seeds | mixed MAE | mixed p99 | held-out MAE | held-out p99 |",
                "|---|---|---|---|---|---|---|",
            ]
            for s, b in ablation.items():
                cells = [
                    f"{blk['final_vs_base'][m]:.3f} {_ci(blk['final_vs_base_ci90'][m])}"
                    for blk in (b, b["held_out"])
                    for m in ("mae", "p99")
                ]
                out.append(f"| {s} | {b['vs_base']} | {len(b['base_seed_list'])} | {' | '.join(cells)} |")
            out.append("")
    control = res["protocol"]["training"].get("control")
    if control:
        out += [
            "**Training control**: the final set retrained with twice the maximum budget, over the run's own model:",
            "",
            "| strategy | seed | size | epochs | MAE | p99 | held-out MAE | held-out p99 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s, c in control.items():
            out.append(
                f"| {s} | {c['seed']} | {c['n_train']} | {c['epochs_twice']} | {c['mae_ratio']:.3f} | "
                f"{c['p99_ratio']:.3f} | {c['held_out_mae_ratio']:.3f} | {c['held_out_p99_ratio']:.3f} |"
            )
        out.append("")
    tr = res.get("transfer")
    if tr:
        out += [
            f"**Transfer**: the {tr['model']} trained from scratch on the {tr['from']} arm's final sets, against the "
            "same model on random's sets of the same seeds and size:",
            "",
            "| set curated by | seeds | mixed MAE | mixed p99 | held-out MAE | held-out p99 | mixed p99 vs random | "
            "held-out p99 vs random |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s, r in tr["strategies"].items():
            out.append(
                f"| {s} | {len(r['seeds'])} | {r['mixed']['mae']:.4g} | {r['mixed']['p99']:.4g} | "
                f"{r['held_out']['mae']:.4g} | {r['held_out']['p99']:.4g} | {r['vs_random']['mixed']['p99']:.3f} "
                f"| {r['vs_random']['held_out']['p99']:.3f} |"
            )
    return "\n".join(out)


def plot(res: dict, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    strategies = res["strategies"]
    fig, ax = plt.subplots(2, 3, figsize=(13, 7.5))
    panels = [
        ("mixed", "mae", "mixed test: MAE"),
        ("mixed", "p99", "mixed test: p99 per-sample MAE"),
        ("mixed", "hard", HARD.get(res["protocol"].get("problem", "diffusion"), ("mixed test: hard rows",))[0]),
        ("held_out", "mae", "held-out families: MAE"),
        ("held_out", "p99", "held-out families: p99"),
        ("held_out", "p99", "held-out p99 against cost (s)"),
    ]
    for a, (set_name, m, title) in zip(ax.ravel(), panels, strict=True):
        for s, b in strategies.items():
            b = b if set_name == "mixed" else b["held_out"]
            curve = b.get("curve_extended", b["curve"])
            x = curve["cost_s"] if "cost" in title else curve["n"]
            a.plot(x, curve[m], marker="o", ls="--" if strategies[s]["peer"] else "-", label=s)
        a.set(xscale="log", yscale="log", title=title, xlabel="cost (s)" if "cost" in title else "training-set size")
    ax[0][0].set_ylabel("per-sample MAE")
    ax[1][0].set_ylabel("per-sample MAE")
    fig.legend(*ax[0][0].get_legend_handles_labels(), loc="lower center", ncol=min(8, len(strategies)), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(docs / "learning_curves.png", dpi=110)
    plt.close(fig)
    budget = res.get("budget_by_sources")
    if budget:
        names = list(budget)
        cols = min(4, len(names))
        rows = -(-len(names) // cols)
        fig, ax = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), sharex=True, sharey=True, squeeze=False)
        for a, s in zip(ax.ravel(), names, strict=False):
            counts = sorted(budget[s], key=int)
            a.bar([int(c) for c in counts], [budget[s][c] for c in counts], color="tab:blue")
            a.set_title(s, fontsize=10)
            a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        for a in ax.ravel()[len(names) :]:
            a.axis("off")
        for a in ax[-1]:
            a.set_xlabel(_stratum_label(res))
        for a in ax[:, 0]:
            a.set_ylabel("samples picked (seed mean)")
        fig.suptitle("Where each strategy spent its picks (first arm, all rounds)")
        fig.tight_layout()
        fig.savefig(docs / "budget_by_sources.png", dpi=110)
        plt.close(fig)


def _stratum_label(res: dict) -> str:
    """What the study's problem's strata count, for axes."""
    from diffcurate.solvers.plugins import get_problem

    name = res["protocol"].get("problem", "diffusion")
    return "number of sources" if name == "diffusion" else get_problem(name).stratum
