"""Model commands: `model-info`, `train`, `evaluate`, `export-model`. Thin wrappers over model/."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from diffcurate.common.errors import InputError
from diffcurate.curate.cli.options import Device, Json, OutFile, Preset, TrainSeed
from diffcurate.curate.progress import console

Checkpoint = Annotated[Path, typer.Option("--checkpoint", help="A checkpoint written by `curate train`.")]
DataFile = Annotated[
    Path, typer.Option("--data", help="A store, or an npz/HDF5 file in the config-array layout with y.")
]
ModelName = Annotated[str, typer.Option("--model", help="Architecture: edcnn, unet or fno.")]
TrainBatch = Annotated[int | None, typer.Option("--batch-size", min=1, help="Samples per training batch.")]
OptPreset = Annotated[
    str | None, typer.Option("--preset", help="Preset for model/training defaults (default: the data's).")
]


def _console(as_json: bool) -> Console:
    """Tables go to stderr when stdout carries the one JSON object."""
    return console if as_json else Console(width=None if sys.stdout.isatty() else 150)


def model_info_cmd(
    model: ModelName = "edcnn",
    preset: Preset = "small",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch for the memory estimate.")] = 32,
    as_json: Json = False,
) -> None:
    """Parameters, FLOPs per sample and memory estimate of a preset's default model."""
    from diffcurate.model.nets import default_model_config, model_info
    from diffcurate.solvers.problem import resolve_physics

    physics, _ = resolve_physics(preset)
    info = model_info(default_model_config(preset, model), physics.lattice, batch_size)
    info["preset"] = preset
    if as_json:
        typer.echo(json.dumps(info))
        return
    t = Table(title=f"{model} @ {preset} (L={physics.lattice})")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("parameters", f"{info['parameters']:,}")
    t.add_row("forward GFLOPs / sample", f"{info['flops_per_sample'] / 1e9:.3f}")
    t.add_row("weights (MB, fp32)", f"{info['weights_mb']:.1f}")
    t.add_row("activations (MB / sample)", f"{info['activation_mb_per_sample']:.1f}")
    t.add_row(f"train memory (MB, batch {batch_size}, Adam)", f"{info['train_memory_mb']:.0f}")
    t.add_row(f"inference memory (MB, batch {batch_size})", f"{info['inference_memory_mb']:.0f}")
    Console().print(t)


def train_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory; checkpoints go to RUN_DIR/checkpoints/.")],
    data: DataFile,
    preset: OptPreset = None,
    model: ModelName = "edcnn",
    loss: Annotated[str, typer.Option("--loss", help="mae, mse, huber or berhu.")] = "mae",
    weight: Annotated[str, typer.Option("--weight", help="Per-pixel weight: none, exp or step.")] = "none",
    alt_weight: Annotated[
        str | None, typer.Option("--alt-weight", help="Weight the schedule switches to (default: exp<->step).")
    ] = None,
    transform: Annotated[str, typer.Option("--transform", help="Target transform: none or sqrt.")] = "none",
    schedule: Annotated[str, typer.Option("--schedule", help="Loss schedule: fixed, toggle or random.")] = "fixed",
    period: Annotated[int, typer.Option("--period", min=1, help="Epochs between toggles.")] = 5,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default: the preset's).")] = None,
    batch_size: TrainBatch = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam learning rate (default: the preset's).")] = None,
    patience: Annotated[int | None, typer.Option("--patience", min=1, help="Early-stopping patience.")] = None,
    train_fraction: Annotated[float, typer.Option("--train-fraction", help="Train share of the split.")] = 0.9,
    init_from: Annotated[Path | None, typer.Option("--init-from", help="Warm start from a checkpoint.")] = None,
    device: Device = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue RUN_DIR/checkpoints/last.pt.")] = False,
    clamp_sources: Annotated[
        bool, typer.Option("--clamp-sources", help="Copy the known disc values into the output (fixed sources).")
    ] = False,
    seed: TrainSeed = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Ray Train workers (data-parallel DDP on a local cluster).")
    ] = 1,
    as_json: Json = False,
) -> None:
    """Train a surrogate on a data file (split train/val by seed); best weights -> checkpoints/best.pt."""
    from diffcurate.curate.store.dataset import load_data
    from diffcurate.curate.store.lock import check_writable
    from diffcurate.model.callbacks import ProgressBar
    from diffcurate.model.nets import default_model_config, fit_to_problem
    from diffcurate.model.train import default_train_config, train

    check_writable(run_dir)  # before the data is read and trained on, not at the first checkpoint
    train_set, physics = load_data(data, "train", seed, train_fraction, regions=False)  # physics: the data's Task
    val_set, _ = load_data(data, "val", seed, train_fraction)
    presets = physics.problem.presets()
    name = preset or physics.preset()
    if name is None:
        raise InputError(f"{data}: its physics matches no preset; pass --preset for model and training defaults")
    if name not in presets:
        raise InputError(f"unknown preset {name!r} (choose from {', '.join(presets)})")
    grid = physics.problem.grid(presets[name].params)
    if grid != physics.grid:
        raise InputError(f"--preset {name} is for a {grid} grid (L={grid[0]}), but {data} has L={physics.grid[0]}")
    scale = presets[name].scale  # the size of network and training the preset pairs with
    sizes = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "patience": patience}  # None: the preset's
    losses = {"loss": loss, "weight": weight, "alt_weight": alt_weight, "transform": transform}
    schedule_opts = {"schedule": schedule, "schedule_period": period, "seed": seed}
    tc = default_train_config(scale, **{k: v for k, v in sizes.items() if v is not None}, **losses, **schedule_opts)
    tc.loss_specs()  # validate names before any work
    model_config = default_model_config(scale, model)
    model_config.clamp_sources = clamp_sources
    fit_to_problem(model_config, physics.problem, physics.params)
    if workers > 1:
        if resume:
            raise InputError("--resume continues one process's epochs; data-parallel training restarts")
        _train_on_workers(
            run_dir, model_config, tc, train_set, val_set, physics, workers, device, init_from, progress, as_json
        )
        return
    res = train(
        model_config,
        tc,
        train_set,
        val_set,
        Path(run_dir) / "checkpoints",
        physics=physics,
        device=device,
        resume=resume,
        init_from=init_from,
        callbacks=[ProgressBar()] if progress and not as_json else [],
    )
    summary = {
        "checkpoint": str(res.checkpoint),
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "stopped_early": res.stopped_early,
        "train_size": len(train_set),
        "val_size": len(val_set),
        "val": res.val_metrics,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        # epochs count from 1, as the progress bar does (the JSON's best_epoch is the 0-based index)
        _console(False).print(
            f"best epoch {res.best_epoch + 1} of {len(res.history)}: val MAE {res.best_val:.4g} -> {res.checkpoint}"
        )


def _train_on_workers(run_dir, model_config, tc, train_set, val_set, physics, n, device, init_from, progress, as_json):
    """`curate train --workers N`: the same files and summary as one process, from what rank 0 mailed back."""
    from diffcurate.common.files import atomic_bytes, atomic_text
    from diffcurate.curate.cluster.data_parallel import train_on_workers
    from diffcurate.model.checkpoint import read_checkpoint
    from diffcurate.model.train import BEST

    out_dir = Path(run_dir) / "checkpoints"
    out = train_on_workers(
        model_config, tc, train_set, val_set, out_dir, physics, n, device, init_from, progress and not as_json
    )
    history = out["history"]
    ckpt = out_dir / BEST
    atomic_bytes(ckpt, out["checkpoint"])
    atomic_text(out_dir / "train.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    val = read_checkpoint(ckpt).get("metrics", {}).get("val")
    summary = {
        "checkpoint": str(ckpt),
        "best_epoch": out["best_epoch"],
        "epochs_run": len(history),
        "stopped_early": bool(history and history[-1].get("stopped_early")),
        "train_size": len(train_set),
        "val_size": len(val_set),
        "val": val,
        "workers": n,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        _console(False).print(
            f"best epoch {out['best_epoch'] + 1} of {len(history)} on {n} workers: val MAE {out['best_val']:.4g} -> {ckpt}"
        )


def metrics_table(d: dict, title: str = "evaluation", stratum: str = "stratum") -> Table:
    """The evaluate schema as a table: one row per stratum (and one for all), one column per region, so that
    20 strata fit any terminal. `stratum`: what the problem's strata count ("sources" for diffusion)."""
    from diffcurate.model.metrics import Metrics

    m = Metrics.from_dict(d)
    regions = list(m.mae)
    keys = sorted(next(iter(m.mae_by_sources.values()), {}), key=int)
    t = Table(
        stratum, *regions, title=f"{title}: n={m.n_samples}, rel L2 {_fmt(m.rel_l2_mean)} (pooled {_fmt(m.rel_l2)})"
    )
    t.add_row("all", *[_fmt(m.mae[r]) for r in regions], end_section=True)
    for k in keys:
        t.add_row(k, *[_fmt(m.mae_by_sources[r][k]) for r in regions])
    ps = m.per_sample_mae
    t.caption = "MAE per region; per-sample MAE: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ps.items())
    return t


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def evaluate_cmd(
    checkpoint: Checkpoint,
    data: DataFile,
    out: OutFile,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per batch.")] = 64,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="train, val, test or all: a store split, or the rows of a file marked so (an unmarked file is evaluated whole).",
        ),
    ] = "test",
    as_json: Json = False,
) -> None:
    """Metrics of a checkpoint on a store split or a data file (evaluate schema, docs/formats.md) -> --out JSON."""
    from diffcurate.common.device import resolve_device
    from diffcurate.curate.store.dataset import load_data
    from diffcurate.curate.store.lock import check_writable
    from diffcurate.model.checkpoint import load_checkpoint, transform_of
    from diffcurate.model.metrics import evaluate_model

    check_writable(out)
    dataset, physics = load_data(data, split)
    dev = resolve_device(device)
    net, meta = load_checkpoint(checkpoint, physics=physics, device=dev)
    transform = transform_of(meta)
    metrics, _ = evaluate_model(net, dataset, dev, transform, batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=1) + "\n")
    _console(as_json).print(metrics_table(metrics, f"{checkpoint.name} on {data.name}", physics.problem.stratum))
    if as_json:
        typer.echo(json.dumps(metrics))


def export_model_cmd(
    checkpoint: Checkpoint,
    fmt: Annotated[
        str, typer.Option("--format", help="export (torch.export .pt2), torchscript (deprecated by torch) or onnx.")
    ] = "export",
    out: OutFile = Path("model.pt2"),
) -> None:
    """Export a checkpoint as a standalone model (x -> y, target transform inverted)."""
    from diffcurate.model.export import export_model

    typer.echo(str(export_model(checkpoint, fmt, out)))
