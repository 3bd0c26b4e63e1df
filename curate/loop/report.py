"""`curate report`: a Markdown report with PNG plots of a run (matplotlib, Agg backend, no screen needed)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError, hint
from diffcurate.curate.loop.health import load_checked_run
from diffcurate.curate.loop.record import rounds_with_state
from diffcurate.curate.loop.rundir import RunPaths
from diffcurate.curate.loop.steps import TRAIN
from diffcurate.model.metrics import Metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _first_region(test: dict) -> str | None:
    """The first of the problem's own metric regions (for diffusion, the sources), if it has any."""
    return next((r for r in test["mae"] if r != "all"), None)


def _metrics_per_round(rounds: list[dict], out: Path) -> None:
    plt = _plt()
    n = [r["train_size"] for r in rounds]
    tests = [Metrics.from_dict(r["test"]) for r in rounds]
    first = _first_region(rounds[0]["test"])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(n, [t.mae_all for t in tests], "o-", label="all pixels")
    if first:
        ax[0].plot(n, [t.mae[first] for t in tests], "s--", label=first)
    ax[0].set(xlabel="training-set size", ylabel="test MAE", xscale="log", yscale="log", title="test MAE")
    ax[0].legend()
    for q in ("p50", "p95", "p99", "max"):
        ax[1].plot(n, [t.per_sample_mae[q] for t in tests], "o-", label=q)
    ax[1].set(xlabel="training-set size", ylabel="per-sample MAE", xscale="log", yscale="log", title="tails")
    ax[1].legend()
    for a in ax:  # the rounds' sizes as plain numbers, not 2 x 10^2
        a.set_xticks(n, [str(v) for v in n])
        a.xaxis.set_minor_locator(_null_locator())
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _by_stratum(rounds: list[dict], out: Path, lo: int, hi: int, stratum: str) -> None:
    plt = _plt()
    strata = [str(c) for c in range(lo, hi + 1)]
    by = [Metrics.from_dict(r["test"]).mae_by_sources["all"] for r in rounds]
    err = np.array([[b.get(c) or np.nan for c in strata] for b in by])
    added = np.array([[r["added_by_sources"].get(c, 0) for c in strata] for r in rounds])
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    im = ax[0].imshow(
        err, aspect="auto", cmap="magma", origin="lower", extent=(lo - 0.5, hi + 0.5, -0.5, len(rounds) - 0.5)
    )
    fig.colorbar(im, ax=ax[0], label="test MAE")
    ax[0].set(xlabel=stratum, ylabel="round", title=f"test MAE per stratum ({stratum})")
    for a in ax:
        a.xaxis.set_major_locator(_integer_locator())
    ax[0].yaxis.set_major_locator(_integer_locator())
    bottom = np.zeros(len(strata))
    for k, row in enumerate(added[1:], start=1):
        ax[1].bar(range(lo, hi + 1), row, bottom=bottom, label=f"round {k}")
        bottom += row
    ax[1].set(xlabel=stratum, ylabel="samples added", title="where the budget went")
    if len(rounds) > 1:
        ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


GAP = 60.0  # s: a pause longer than this between steps is a new invocation (`curate run` resumed)


def _segments(steps: list[dict]) -> tuple[dict[int, float], list[float]]:
    """Plot offset per step (by id) so that each invocation follows the previous one after a 2 s break, and the
    plot x of every break: a resumed run is drawn as separate segments, not across the idle hours."""
    t0 = min((s["start"] for s in steps), default=0.0)
    shift, last_end, offsets, breaks = 0.0, None, {}, []
    for s in sorted(steps, key=lambda s: s["start"]):
        if last_end is not None and s["start"] - last_end > GAP:
            breaks.append(last_end - t0 - shift + 1.0)  # the middle of the 2 s break, in plot seconds
            shift += s["start"] - last_end - 2.0
        offsets[id(s)] = t0 + shift
        last_end = s["end"] if last_end is None else max(last_end, s["end"])
    return offsets, breaks


def _timeline(rounds: list[dict], out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.35 * len(rounds)))
    steps = [s for r in rounds for s in r.get("timeline", [])]
    offsets, breaks = _segments(steps)
    colours = {}
    for r in rounds:
        for s in r.get("timeline", []):
            c = colours.setdefault(s["step"], f"C{len(colours)}")
            ax.barh(
                r["round"],
                s["end"] - s["start"],
                left=s["start"] - offsets[id(s)],
                color=c,
                label=s["step"] if list(colours).index(s["step"]) == len(colours) - 1 else None,
            )
    for x in breaks:
        ax.axvline(x, color="grey", ls="--", lw=1)
    ax.set(
        xlabel="seconds of work (dashed: the run was resumed there)" if breaks else "seconds since the first step",
        ylabel="round",
        title="timeline of the steps (actors in report.md)",
    )
    ax.yaxis.set_major_locator(_integer_locator())
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _worst_cases(root: Path, rounds: list[dict], out: Path, n: int = 4) -> list[dict]:
    """Input, truth, prediction and |error| of the n worst test samples of the last round."""
    from diffcurate.curate.store.lmdbstore import Store
    from diffcurate.model.checkpoint import load_checkpoint, transform_of
    from diffcurate.model.inference import predict

    paths = RunPaths(root)
    k = rounds[-1]["round"]
    ev = json.loads(paths.round(k).eval.read_text())
    order = np.argsort(ev["per_sample"])[::-1][:n]
    ids = [ev["ids"][i] for i in order]
    with Store(paths.store, readonly=True) as st:
        cfg, y, headers = st.get(ids)  # y (n, H, W)
        task = st.task
    net, meta = load_checkpoint(paths.checkpoint(k), physics=task)
    x = task.encode(cfg)[:, 0]  # (n, H, W): the input's first channel
    pred = predict(net, task.encode(cfg), transform_of(meta))[:, 0]  # (n, H, W): the first output channel
    strata = task.strata(cfg)
    plt = _plt()
    fig, ax = plt.subplots(len(ids), 4, figsize=(11, 2.7 * len(ids)), squeeze=False)
    for r in range(len(ids)):
        err = np.abs(pred[r] - y[r])
        top = float(max(y[r].max(), pred[r].max(), 1e-12))  # truth and prediction share one colour scale
        panels = (
            (x[r], "input x", "viridis", 0.0, float(max(x[r].max(), 1e-12))),
            (y[r], "truth y", "viridis", 0.0, top),
            (pred[r], "prediction (same scale)", "viridis", 0.0, top),
            (err, "|error|", "inferno", 0.0, float(max(err.max(), 1e-12))),
        )
        for c, (img, title, cmap, lo, hi) in enumerate(panels):
            im = ax[r, c].imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax[r, c].set_xticks([])
            ax[r, c].set_yticks([])
            fig.colorbar(im, ax=ax[r, c], fraction=0.046)
            ax[r, c].set_title(title if r == 0 else "", fontsize=9)
        ax[r, 0].set_ylabel(f"{strata[r]} {task.problem.stratum}, {headers[r]['sampler']}", fontsize=8)
        ax[r, 3].set_title(f"|error|, per-sample MAE {float(err.mean()):.3g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return [
        {
            "id": i,
            "per_sample_mae": float(ev["per_sample"][j]),
            "stratum": int(strata[r]),
            "sampler": headers[r]["sampler"],
        }
        for r, (i, j) in enumerate(zip(ids, order, strict=True))
    ]


def write_report(root: Path) -> Path:
    root = Path(root)
    cfg = load_checked_run(root)
    rounds = rounds_with_state(root, cfg)  # a round that a torn log lost is read from state/
    if not rounds:
        raise InputError(f"{root} has no completed round yet; run {hint('run', root)} first")
    # made in a temp folder and moved in at the end: a report refused half-way (a damaged checkpoint, say)
    # leaves the report folder as it was
    with tempfile.TemporaryDirectory(prefix=".report.", dir=root) as tmp:
        path = _write_report(root, cfg, rounds, Path(tmp))
        rep = RunPaths(root).report
        rep.mkdir(exist_ok=True)
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, rep / f.name)
    return rep / path.name


def _write_report(root: Path, cfg, rounds: list[dict], rep: Path) -> Path:
    lo, hi = cfg.strata
    worst = _worst_cases(root, rounds, rep / "worst.png")  # first: the step that reads the checkpoint
    _metrics_per_round(rounds, rep / "metrics.png")
    stratum = cfg.task.problem.stratum
    _by_stratum(rounds, rep / "by_stratum.png", lo, hi, stratum)
    _timeline(rounds, rep / "timeline.png")
    params = ", ".join(f"{k}={v}" for k, v in cfg.task.params_dict().items())
    first = _first_region(rounds[0]["test"])
    lines = [
        f"# diffcurate report: {root.name}",
        "",
        f"Problem `{cfg.problem}`, preset `{cfg.preset}` ({params}), strategy `{cfg.acquisition.strategy}` / "
        f"`{cfg.acquisition.acquisition}`, budget {cfg.acquisition.budget} per round from pools of "
        f"{cfg.data.pool}, seed {cfg.seed}.",
        "",
        f"| round | train size | added | solves | test MAE | {first or 'all'} MAE | p99 | max | rel L2 | train s | "
        "total s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        m = Metrics.from_dict(r["test"])
        lines.append(
            f"| {r['round']} | {r['train_size']} | {r['added']} | {r['solves']} | {m.mae_all:.4g} | "
            f"{m.mae[first or 'all']:.4g} | {m.p99:.4g} | {m.per_sample_mae['max']:.4g} | "
            f"{_g3(m.rel_l2_mean)} | {r['seconds'][TRAIN.name]:.1f} | {r['seconds']['total']:.1f} |"
        )
    if any("members" in r for r in rounds):  # ray.trainers > 1: the ensemble members, each on its own
        lines += [
            "",
            "Ensemble members (trained beside the surrogate, own seeds):",
            "",
            "| round | member | test MAE | p99 | rel L2 (pooled) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['round']} | {m['member']} | {m['mae']:.4g} | {m['p99']:.4g} | {m['rel_l2']:.3g} |"
            for r in rounds
            for m in r.get("members", [])
        ]
    lines += [
        "",
        "![metrics per round](metrics.png)",
        "",
        f"![per stratum ({stratum})](by_stratum.png)",
        "",
        "## Timeline",
        "",
        "Which step ran when, and on which actor:",
        "",
        "![timeline](timeline.png)",
        "",
        "| round | step | actor | start (s) | seconds |",
        "|---|---|---|---|---|",
    ]
    t0 = min((s["start"] for r in rounds for s in r.get("timeline", [])), default=0.0)
    for r in rounds:
        for s in r.get("timeline", []):
            lines.append(
                f"| {r['round']} | {s['step']} | {s['actor']} | {s['start'] - t0:.1f} | {s['end'] - s['start']:.2f} |"
            )
    lines += [
        "",
        f"## Worst test cases (round {rounds[-1]['round']})",
        "",
        "![worst](worst.png)",
        "",
        f"| id | {stratum} | sampler | per-sample MAE |",
        "|---|---|---|---|",
    ]
    lines += [f"| {w['id']} | {w['stratum']} | {w['sampler']} | {w['per_sample_mae']:.4g} |" for w in worst]
    path = rep / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _g3(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"
