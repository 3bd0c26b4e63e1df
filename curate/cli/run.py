"""Run commands: `init`, `run`, `status`, `report`."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path
from typing import Annotated, get_type_hints

import typer
from rich.table import Table

from diffcurate.common.errors import hint
from diffcurate.curate.acquisition.ranker import ACQUISITIONS, STRATEGIES
from diffcurate.curate.cli.options import Json, PresetOfProblem, ProblemName, RunDir
from diffcurate.curate.progress import console, say


def init_cmd(
    run_dir: RunDir,
    problem: ProblemName = "diffusion",
    preset: PresetOfProblem = None,
    model: Annotated[str, typer.Option("--model", help="edcnn, unet or fno.")] = "edcnn",
    config: Annotated[Path | None, typer.Option("--config", help="A full run config (TOML) to start from.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="The run's seed (every random choice).")] = None,
) -> None:
    """Create a run directory: config.toml (problem, physics, samplers, model, training, acquisition, seeds, Ray)."""
    from diffcurate.curate.loop.config import RunConfig, default_config
    from diffcurate.curate.loop.rundir import init_run

    cfg = RunConfig.load(config) if config else default_config(preset, model, problem)
    if seed is not None:
        cfg.seed = seed
    paths = init_run(run_dir, cfg)
    console.print(
        f"initialised {run_dir} ({cfg.problem} {cfg.preset}, {cfg.acquisition.strategy} on "
        f"{cfg.acquisition.acquisition}); edit "
        f"{paths.config} or run {hint('run', run_dir)}"
    )


def run_cmd(
    run_dir: RunDir,
    rounds: Annotated[int | None, typer.Option("--rounds", min=0, help="Acquisition rounds (after round 0).")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="If another `curate run` holds RUN_DIR: wait for it, or refuse.")
    ] = True,
    **overrides,
) -> None:
    """Run (or resume after any interruption) the curation rounds of a run directory."""
    from diffcurate.curate.loop.config import RunOverrides
    from diffcurate.curate.loop.runner import run

    run(run_dir, rounds, log=say, overrides=RunOverrides(**overrides), wait=wait)


def _override_options(command):
    """Give `command` one option per `RunOverrides` field (the one list of what `curate run` may change), after
    its own parameters: typer reads the signature."""
    from diffcurate.curate.loop.config import RunOverrides

    names = {"strategies": ", ".join(STRATEGIES), "acquisitions": ", ".join(ACQUISITIONS)}
    hints = get_type_hints(RunOverrides)
    params = [p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    for f in fields(RunOverrides):
        cli = f.metadata["cli"]
        flag = cli["flag"] or "--" + f.name.replace("_", "-")
        option = typer.Option(flag, help=cli["help"].format(**names), min=cli["min"])
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[hints[f.name], option]
            )
        )
    command.__signature__ = inspect.signature(command).replace(parameters=params)
    return command


_override_options(run_cmd)


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
        "problem": cfg.problem,
        "stratum": cfg.task.problem.stratum,  # what the problem's strata count ("sources" for diffusion)
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
    """The round table and the last round's MAE by stratum and region, as one renderable."""
    from rich.console import Group

    from diffcurate.curate.loop.steps import TRAIN
    from diffcurate.model.metrics import Metrics

    # the first of the problem's own regions (for diffusion, the sources) gets a column of its own
    first = (
        next((r for r in Metrics.from_dict(d["rounds"][0]["test"]).mae if r != "all"), None) if d["rounds"] else None
    )
    t = Table(
        "round",
        "train",
        "added",
        "solves",
        "MAE",
        *([first] if first else []),
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
            *([_fmt(m.mae[first])] if first else []),
            f"{m.p99:.4g}",
            f"{m.per_sample_mae['max']:.4g}",
            _fmt(m.rel_l2_mean),
            f"{r['seconds'][TRAIN.name]:.1f}",
            f"{r['seconds']['total']:.1f}",
        )
    parts = [t]
    if d["rounds"]:
        last = d["rounds"][-1]
        by = Metrics.from_dict(last["test"]).mae_by_sources
        stratum = d["stratum"]
        t2 = Table(stratum, *by, title=f"round {last['round']}: test MAE by {stratum} and region")
        for n in by["all"]:
            t2.add_row(n, *[f"{by[r][n]:.3g}" if by[r][n] is not None else "-" for r in by])
        parts.append(t2)
    return Group(*parts)


def _fmt(v: float | None) -> str:
    return f"{v:.4g}" if v is not None else "-"


def report_cmd(run_dir: RunDir) -> None:
    """Write RUN_DIR/report/report.md with PNG plots (metrics per round, budget, worst test cases)."""
    from diffcurate.curate.loop.health import load_checked_run, log_warnings
    from diffcurate.curate.loop.report import write_report

    for w in log_warnings(run_dir, load_checked_run(run_dir)):
        typer.echo(f"warning: {w}", err=True)
    path = write_report(run_dir)
    console.print(f"wrote {path}")
