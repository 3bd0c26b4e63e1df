"""Error-estimator commands: `estimate-eval` (judge the estimators on a run's test split) and `predict`
(the surrogate guarded by an estimator). Thin wrappers over diffcurate.curate.loop.estimate and .predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from diffcurate.curate.cli.options import Device, Json, OutFile, RunDir
from diffcurate.curate.progress import console, say

# the names of model.estimators.ESTIMATORS, for help texts without importing torch (a test keeps them equal)
ESTIMATOR_NAMES = ("residual", "residual-l1", "residual-exact", "ensemble", "mc-dropout", "inverse", "tod")


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def eval_table(r: dict) -> Table:
    t = Table(
        "estimator",
        "Spearman",
        "min / max by stratum",
        "AUROC",
        "ms / sample",
        "calibration",
        "slack val / test",
        title=f"{r['run']} ({r['checkpoint']}): {r['n_test']} test samples, "
        f"{r['flagged']} with MAE > {r['threshold']:.4g} ({r['threshold_from']})",
    )
    for name, e in r["estimators"].items():
        if not e["available"]:
            t.add_row(name, "-", "-", "-", "-", "-", e["why"])
            continue
        by = [v for v in e["spearman_by_sources"].values() if v is not None]
        t.add_row(
            name,
            _fmt(e["spearman"]),
            f"{_fmt(min(by, default=None), '.2f')} / {_fmt(max(by, default=None), '.2f')}",
            _fmt(e["auroc"]),
            _fmt(e["ms_per_sample"], ".2f"),
            e["calibration"],
            f"{_fmt(e['val_slack'], '.2f')} / {_fmt(e['test_slack'], '.2f')}",
        )
    t.caption = (
        f"model {r['predict_ms_per_sample']:.2f} ms/sample, fast solve {r['solve_ms_per_sample']:.2f} "
        f"ms/sample; slack = worst true / estimated MAE"
    )
    return t


def estimate_eval_cmd(
    run_dir: RunDir,
    estimators: Annotated[
        str | None,
        typer.Option("--estimators", help=f"Comma-separated, from: {', '.join(ESTIMATOR_NAMES)} (default: all)."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="AUROC: flag MAE > E (default val p90).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the JSON to this file.")] = None,
    device: Device = "auto",
    json_out: Json = False,
) -> None:
    """Spearman, AUROC and cost of each error estimator on the run's test split (trains members as needed)."""
    from diffcurate.curate.loop.estimate import evaluate_estimators

    names = [n.strip() for n in estimators.split(",") if n.strip()] if estimators else None
    r = evaluate_estimators(run_dir, names, threshold, device, log=say)
    if out is not None:
        out.write_text(json.dumps(r, indent=1))
    if json_out:
        print(json.dumps(r))
    else:
        console.print(eval_table(r))


def predict_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A checkpoint or a run directory.")],
    input: Annotated[
        Path, typer.Option("--input", help="Configurations (npz/HDF5 in the config-array layout of docs/formats.md).")
    ],
    out: OutFile,
    max_error: Annotated[
        float | None, typer.Option("--max-error", help="Solve samples whose estimated MAE is not below E.")
    ] = None,
    estimator: Annotated[
        str | None,
        typer.Option(
            "--estimator",
            help=f"Error estimator: {', '.join(ESTIMATOR_NAMES)} (default: residual where the problem can correct "
            "its residual, else residual-l1, else ensemble).",
        ),
    ] = None,
    device: Device = "auto",
    json_out: Json = False,
) -> None:
    """Predict fields with the surrogate; with --max-error, hand what the estimator does not clear to the solver."""
    from diffcurate.curate.loop.predict import predict_file

    r = predict_file(checkpoint, input, out, max_error, estimator, device, log=say)
    if json_out:
        print(json.dumps(r))
        return
    worst = r["solved_model_error_max"]
    tail = f"; worst model error among the solved {worst:.4g}" if worst is not None else ""
    solved = f"{r['solved']} solved ({100 * r['solved_fraction']:.1f} %)"
    console.print(
        f"wrote {r['n']} fields to {r['out']}: {solved}, estimator {r['estimator']} ({r['calibration']}){tail}"
    )
