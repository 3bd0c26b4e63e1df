"""Physics commands: `solve`, `presets`, `samplers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from diffcurate.curate.cli.options import (
    BatchSize,
    Decay,
    Device,
    Diffusion,
    Dtype,
    Force,
    Json,
    Lattice,
    OutFile,
    Preset,
    Radius,
    Sampler,
    Seed,
    SourceModel,
    Sources,
)
from diffcurate.curate.progress import console
from diffcurate.solvers.problem import resolve_physics


def solve_cmd(
    out: OutFile,
    input: Annotated[Path | None, typer.Option("--input", help="Configurations file (npz/HDF5).")] = None,
    count: Annotated[int | None, typer.Option("--count", help="Sample this many configurations.")] = None,
    seed: Seed = 0,
    sampler: Sampler = "mixed",
    sources: Sources = None,
    preset: Preset = "small",
    lattice: Lattice = None,
    radius: Radius = None,
    diffusion: Diffusion = None,
    decay: Decay = None,
    source_model: SourceModel = None,
    solver: Annotated[str, typer.Option("--solver", help="fast, reference or timestep.")] = "fast",
    device: Device = "auto",
    dtype: Dtype = "float32",
    batch_size: BatchSize = 16,
    force: Force = False,
) -> None:
    """Solve configurations (from --input, or --count N sampled with --seed) and write x, y to --out."""
    from diffcurate.curate.cluster.solving import configs_for, solve_to_file

    physics, src = resolve_physics(preset, lattice, radius, diffusion, decay, source_model, sources)
    configs = configs_for(physics, input, count, seed, sampler, src)
    path = solve_to_file(out, physics, configs, solver, device, dtype, batch_size, force)
    console.print(f"wrote {len(configs)} solved samples to {path}")


def presets_cmd() -> None:
    """List the physics presets."""
    from diffcurate.solvers.problem import PRESETS

    t = Table("preset", "L", "R", "D", "gamma", "l_D", "sources", "notes", title="presets")
    for p in PRESETS.values():
        ph = p.physics
        t.add_row(
            p.name,
            str(ph.lattice),
            str(ph.radius),
            f"{ph.diffusion:g}",
            f"{ph.decay:.5g}",
            f"{ph.diffusion_length:g}",
            f"{p.sources[0]}-{p.sources[1]}",
            p.notes,
        )
    console.print(t)


def problems_dict() -> dict:
    """Every installed problem: its package, presets, samplers (held-out ones marked), what its strata count,
    and its optional capabilities; a plugin that does not load, with why."""
    from diffcurate.solvers.plugins import find_problems

    out = {}
    for name, f in find_problems().items():
        d = {"package": f.package, "version": f.version}
        if f.problem is None:
            out[name] = {**d, "error": f.error}
            continue
        p = f.problem
        try:
            out[name] = {**d, **_describe(p)}
        except Exception as e:  # a plugin whose description raises is listed with why, the others as usual
            out[name] = {**d, "error": f"{type(e).__name__}: {e}"}
    return out


def _describe(p) -> dict:
    """What `curate problems` shows of a problem that loads."""
    return {
        "description": p.description,
        "default_preset": p.default_preset,
        "presets": list(p.presets()),
        "samplers": list(p.samplers()),
        "held_out": list(p.held_out()),
        "families": list(p.families()),
        "stratum": p.stratum,
        "channels": {"in": p.channels[0], "out": p.channels[1]},
        "capabilities": list(p.capabilities()),
    }


def problems_cmd(as_json: Json = False) -> None:
    """List the problems (built in, and those installed plugins declare under `diffcurate.problems`)."""
    d = problems_dict()
    if as_json:
        typer.echo(json.dumps(d, indent=1))
        return
    t = Table("problem", "package", "presets", "samplers (held out*)", "strata", "capabilities", title="problems")
    for name, p in d.items():
        if "error" in p:
            t.add_row(name, f"{p['package']} {p['version']}", f"[red]does not load: {p['error']}[/red]", "", "", "")
            continue
        presets = ", ".join(f"{n}{' (default)' if n == p['default_preset'] else ''}" for n in p["presets"])
        samplers = ", ".join(f"{s}{'*' if s in p['held_out'] else ''}" for s in p["samplers"])
        t.add_row(name, f"{p['package']} {p['version']}", presets, samplers, p["stratum"], ", ".join(p["capabilities"]))
    console.print(t)


def samplers_cmd() -> None:
    """List the configuration samplers."""
    from diffcurate.solvers.sampling import DESCRIPTIONS

    t = Table("sampler", "what it draws", title="samplers")
    for name, text in DESCRIPTIONS.items():
        t.add_row(name, text)
    console.print(t)
