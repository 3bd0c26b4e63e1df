"""Store commands: `generate`, `info`, `verify`, `export`, `import`."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from diffcurate.common.errors import CheckError, InputError, hint
from diffcurate.curate.cli.options import (
    Address,
    Decay,
    Diffusion,
    Force,
    Json,
    Lattice,
    OutFile,
    PresetOfProblem,
    ProblemName,
    Radius,
    Seed,
    SolverGpus,
    SourceModel,
    Sources,
    StoreDir,
    Workers,
)
from diffcurate.curate.progress import console

Split = Annotated[str, typer.Option("--split", help="train, val or test.")]


def _command() -> str:
    return shlex.join(["curate", *sys.argv[1:]])


def generate_cmd(
    store: StoreDir,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            help="The first N distinct samples of (sampler, seed) to have in the split: a re-run adds what is "
            "missing, another seed adds its own N.",
        ),
    ],
    seed: Seed = 0,
    sampler: Annotated[
        str | None, typer.Option("--sampler", help="Sampler family (default: the problem's pool sampler, `mixed`).")
    ] = None,
    sources: Sources = None,
    split: Split = "train",
    workers: Workers = 1,
    gpus: SolverGpus = 0.0,
    address: Address = None,
    problem: ProblemName = "diffusion",  # (the parameter overrides below are the diffusion problem's)
    preset: PresetOfProblem = None,
    lattice: Lattice = None,
    radius: Radius = None,
    diffusion: Diffusion = None,
    decay: Decay = None,
    source_model: SourceModel = None,
    json_out: Json = False,
) -> None:
    """Solve N samples of (sampler, seed) on Ray actors into the store; resumable and idempotent."""
    from diffcurate.curate.cluster.generate import generate as run
    from diffcurate.solvers.plugins import get_problem, resolve_params

    overrides = {"lattice": lattice, "radius": radius, "diffusion": diffusion, "decay": decay}
    params, src, name = resolve_params(problem, preset, {**overrides, "source_model": source_model}, sources)
    r = run(
        store,
        params,
        count,
        seed,
        sampler or get_problem(problem).pool_sampler(),
        src,
        split,
        workers,
        address,
        preset=name,
        command=_command(),
        show_progress=not json_out,
        gpus=gpus,
        problem=problem,
    )
    if json_out:
        print(json.dumps(r.to_dict()))
    else:
        console.print(
            f"{split}: {r.added} added, {r.present} already present, {count} requested; "
            f"{r.samples_per_s:,.0f} samples/s while solving, {r.seconds:.1f} s in all"
        )


def info_cmd(store: StoreDir, json_out: Json = False) -> None:
    """Problem, physics and counts per split / stratum / round / sampler, size on disk."""
    from diffcurate.curate.store.lmdbstore import Store

    with Store(store, readonly=True) as s:
        d = s.info()
    if d.get("damaged_records"):
        typer.echo(
            f"warning: {len(d['damaged_records'])} damaged records (checksum mismatch), counted here but skipped by "
            f"export and refused by a run; run {hint('verify', '--store', store)}",
            err=True,
        )
    if d.get("damaged"):
        typer.echo(
            f"warning: skipped {len(d['damaged'])} damaged index entries; run {hint('verify', '--store', store)}",
            err=True,
        )
    if json_out:
        print(json.dumps(d))
        return
    params = " ".join(f"{k}={v}" for k, v in d["physics"].items())
    console.print(
        f"[bold]{store}[/]  problem {d['problem']['name']}  preset {d['preset'] or '-'}  {params}  "
        f"schema {d['schema_version']}  {d['encoding']}  {d['count']} samples  {d['bytes'] / 2**20:.1f} MiB"
    )
    for key in ("by_split", "by_sampler", "by_round", "by_stratum"):
        name = d["stratum"] if key == "by_stratum" else key.removeprefix("by_")
        t = Table(name, "samples", title=f"by {name}")
        for k, v in sorted(d[key].items(), key=lambda kv: (len(kv[0]), kv[0])):
            t.add_row(k, str(v))
        console.print(t)
    if d["history"]:
        t = Table("finished", "command", "added", title="history")
        for h in d["history"]:
            t.add_row(h.get("finished", "-"), h.get("command") or h["kind"], str(h.get("added", "-")))
        console.print(t)


def verify_cmd(
    store: Annotated[Path | None, typer.Option("--store", help="LMDB store directory.")] = None,
    run: Annotated[
        Path | None,
        typer.Option("--run", help="A run directory: its store, every checkpoint, its round log and round folders."),
    ] = None,
    resolve: Annotated[int, typer.Option("--resolve", help="Re-solve K random samples and compare.")] = 0,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Re-solve the records that fail their checksum from their configurations."),
    ] = False,
    seed: Seed = 0,
    json_out: Json = False,
) -> None:
    """Check every record's checksum (and re-solve K samples), or with --run a whole run; exit 1 on any problem."""
    if (store is None) == (run is None):
        raise InputError("give exactly one of --store STORE and --run RUN_DIR")
    if repair:
        if store is None:
            raise InputError("--repair takes --store STORE (a run's store is RUN_DIR/store)")
        from diffcurate.curate.store.verify import repair_store

        r, where = repair_store(store), store
        if not json_out:
            console.print(f"re-solved {len(r['repaired'])} damaged records")
    elif run is not None:
        from diffcurate.curate.loop.health import verify_run

        r, where = verify_run(run, resolve, seed), run
    else:
        from diffcurate.curate.store.verify import verify_store

        r, where = verify_store(store, resolve, seed), store
    if json_out:
        print(json.dumps(r))
    else:
        for p in r["problems"][:20]:
            console.print(f"[red]{p}")
        for w in r.get("warnings", []):
            typer.echo(f"warning: {w}", err=True)
        ckpt = f", {r['checkpoints']} checkpoints checked" if "checkpoints" in r else ""
        console.print(
            f"{r['checked']} records checked, {r['resolved']} re-solved (max error {r['max_error']:.2g}){ckpt}, "
            f"{len(r['problems'])} problems"
        )
    if r["problems"]:
        raise CheckError(f"{len(r['problems'])} problems in {where}")


def export_cmd(
    store: StoreDir,
    out: OutFile,
    format: Annotated[
        str | None, typer.Option("--format", help="npz, hdf5 or parquet (default: from --out's extension).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="train, val, test or all.")] = "all",
    max_round: Annotated[int | None, typer.Option("--max-round", help="Only samples of rounds <= R.")] = None,
    force: Force = False,
) -> None:
    """Export samples in the config-array layout (docs/formats.md) plus a dataset card (<out>.card.md / .card.json)."""
    from diffcurate.curate.store.export import export_store

    card = export_store(store, out, format, split, max_round, force, _command())
    if card["skipped_damaged"]:
        typer.echo(
            f"warning: skipped {card['skipped_damaged']} damaged samples; run {hint('verify', '--store', store)}",
            err=True,
        )
    console.print(f"wrote {card['n_samples']} samples to {out} (+ {out}.card.md, .card.json)")


def import_cmd(
    store: StoreDir,
    input: Annotated[
        Path, typer.Option("--input", help="npz/HDF5 file in the config-array layout (docs/formats.md), with y.")
    ],
    split: Split = "train",
) -> None:
    """Add the solved samples of a file (e.g. from `curate solve` or `curate export`) to a store."""
    from diffcurate.curate.store.export import import_arrays

    n = import_arrays(store, input, split, command=_command())
    console.print(f"imported {n} new samples into {store}")
