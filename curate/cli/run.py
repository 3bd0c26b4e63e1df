"""Run commands: `init`, `run`, `status`, `report`."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from diffcurate.common.errors import hint
from diffcurate.curate.acquisition.ranker import ACQUISITIONS, STRATEGIES
from diffcurate.curate.cli.options import Address, Json, RunDir
from diffcurate.curate.progress import console, say


def init_cmd(
    run_dir: RunDir,
    preset: Annotated[str, typer.Option("--preset", help="paper, small or tiny.")] = "small",
    model: Annotated[str, typer.Option("--model", help="edcnn or unet.")] = "edcnn",
    config: Annotated[Path | None, typer.Option("--config", help="A full run config (TOML) to start from.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="The run's seed (every random choice).")] = None,
) -> None:
    """Create a run directory: config.toml (physics, samplers, model, training, acquisition, seeds, Ray)."""
    from diffcurate.curate.loop.config import RunConfig, default_config
    from diffcurate.curate.loop.rundir import init_run

    cfg = RunConfig.load(config) if config else default_config(preset, model)
    if seed is not None:
        cfg.seed = seed
    paths = init_run(run_dir, cfg)
    console.print(
        f"initialised {run_dir} ({cfg.preset}, {cfg.acquisition.strategy} on {cfg.acquisition.acquisition}); edit "
        f"{paths.config} or run {hint('run', run_dir)}"
    )


def run_cmd(
    run_dir: RunDir,
    rounds: Annotated[int | None, typer.Option("--rounds", min=0, help="Acquisition rounds (after round 0).")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help=f"One of: {', '.join(STRATEGIES)}.")] = None,
    acquisition: Annotated[
        str | None, typer.Option("--acquisition", help=f"How candidates are scored: {', '.join(ACQUISITIONS)}.")
    ] = None,
    address: Address = None,
    dashboard: Annotated[bool | None, typer.Option("--dashboard/--no-dashboard", help="Ray dashboard.")] = None,
    dashboard_host: Annotated[str | None, typer.Option("--dashboard-host", help="Dashboard bind address.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Solver actors.")] = None,
    trainers: Annotated[
        int | None, typer.Option("--trainers", min=1, help="Trainer actors: the surrogate + ensemble members.")
    ] = None,
    train_workers: Annotated[
        int | None,
        typer.Option("--train-workers", min=1, help="Ray Train workers per model (data-parallel DDP; 1: one actor)."),
    ] = None,
    max_solves: Annotated[int | None, typer.Option("--max-solves", min=1, help="Stop at this many solves.")] = None,
    target_p99: Annotated[float | None, typer.Option("--target-p99", help="Stop when test p99 <= E.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="If another `curate run` holds RUN_DIR: wait for it, or refuse.")
    ] = True,
) -> None:
    """Run (or resume after any interruption) the curation rounds of a run directory."""
    from diffcurate.curate.loop.config import RunOverrides
    from diffcurate.curate.loop.runner import run

    given = locals()
    overrides = RunOverrides(**{f.name: given[f.name] for f in fields(RunOverrides)})  # the options named alike
    run(run_dir, rounds, log=say, overrides=overrides, wait=wait)


def status_dict(run_dir: Path, checks: bool = True) -> dict:
    """The run's rounds; with `checks`, `warnings` too (a torn round log, a checkpoint that does not load, a round
    folder started under another config)."""
    from diffcurate.curate.loop.health import load_checked_run, run_warnings
    from diffcurate.curate.loop.record import rounds_with_state

    cfg = load_checked_run(run_dir)
    rounds = rounds_with_state(run_dir, cfg)
    warnings = run_warnings(run_dir, cfg) if checks else []
    # rounds_completed counts round 0 (the initial set); acquisition_rounds the rounds that added samples
    return {
        "run": str(run_dir),
        "preset": cfg.preset,
        "strategy": cfg.acquisition.strategy,
        "acquisition": cfg.acquisition.acquisition,
        "rounds_completed": len(rounds),
        "acquisition_rounds": max(0, len(rounds) - 1),
        "rounds": rounds,
        "warnings": warnings,
    }


def status_cmd(
    run_dir: RunDir,
    json_out: Json = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh the table live until the run has all its rounds (Ctrl-C stops).")
    ] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 2.0,
) -> None:
    """Rounds so far: sizes, solves, test metrics and step timings (`--json` for scripts)."""
    d = status_dict(run_dir)
    for w in d["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    if json_out:
        print(json.dumps(d))
        return
    if not watch:
        console.print(status_tables(d))
        return
    import time

    from rich.live import Live

    from diffcurate.curate.loop.rundir import load_run

    with Live(status_tables(d), console=console, refresh_per_second=4) as live:
        while d["rounds_completed"] <= load_run(run_dir).rounds:
            time.sleep(interval)
            d = status_dict(run_dir, checks=False)
            live.update(status_tables(d))


def status_tables(d: dict):
    """The round table and the last round's MAE by source count, as one renderable."""
    from rich.console import Group

    from diffcurate.curate.loop.steps import TRAIN
    from diffcurate.model.metrics import Metrics

    t = Table(
        "round",
        "train",
        "added",
        "solves",
        "MAE",
        "sources",
        "p99",
        "max",
        "rel L2",
        "train s",
        "total s",
        title=f"{d['run']}: {d['preset']}, {d['strategy']} on {d['acquisition']} ({d['acquisition_rounds']} "
        "acquisition rounds after round 0)",
    )
    for r in d["rounds"]:
        m = Metrics.from_dict(r["test"])
        t.add_row(
            str(r["round"]),
            str(r["train_size"]),
            str(r["added"]),
            str(r["solves"]),
            f"{m.mae_all:.4g}",
            f"{m.mae['sources']:.4g}",
            f"{m.p99:.4g}",
            f"{m.per_sample_mae['max']:.4g}",
            f"{m.rel_l2:.3g}",
            f"{r['seconds'][TRAIN.name]:.1f}",
            f"{r['seconds']['total']:.1f}",
        )
    parts = [t]
    if d["rounds"]:
        last = d["rounds"][-1]
        by = Metrics.from_dict(last["test"]).mae_by_sources
        t2 = Table("sources", *by, title=f"round {last['round']}: test MAE by number of sources and region")
        for n in by["all"]:
            t2.add_row(n, *[f"{by[r][n]:.3g}" if by[r][n] is not None else "-" for r in by])
        parts.append(t2)
    return Group(*parts)


def report_cmd(run_dir: RunDir) -> None:
    """Write RUN_DIR/report/report.md with PNG plots (metrics per round, budget, worst test cases)."""
    from diffcurate.curate.loop.health import load_checked_run, log_warnings
    from diffcurate.curate.loop.report import write_report

    for w in log_warnings(run_dir, load_checked_run(run_dir)):
        typer.echo(f"warning: {w}", err=True)
    path = write_report(run_dir)
    console.print(f"wrote {path}")
