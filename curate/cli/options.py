"""Options shared by many commands, defined once as `typing.Annotated` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Preset = Annotated[str, typer.Option("--preset", help="Physics preset: paper, small or tiny.")]
Lattice = Annotated[int | None, typer.Option("--lattice", help="Override: lattice size L.")]
Radius = Annotated[int | None, typer.Option("--radius", help="Override: disc radius R.")]
Diffusion = Annotated[float | None, typer.Option("--diffusion", help="Override: diffusion constant D.")]
Decay = Annotated[float | None, typer.Option("--decay", help="Override: decay rate gamma.")]
SourceModel = Annotated[str | None, typer.Option("--source-model", help="Override: fixed or production.")]
Sources = Annotated[str | None, typer.Option("--sources", help="Source-count range MIN-MAX, e.g. 1-20 or 7-7.")]
Sampler = Annotated[str, typer.Option("--sampler", help="Sampler family (see `curate samplers`).")]
Seed = Annotated[int, typer.Option("--seed", help="Sampler seed: sample i depends only on (seed, i).")]
TrainSeed = Annotated[int, typer.Option("--seed", help="Training seed: network init, shuffle order, train/val split.")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda if torch sees a GPU, else cpu), cpu or cuda.")]
RunDir = Annotated[Path, typer.Argument(help="Run directory (made by `curate init`).", metavar="RUN_DIR")]
Dtype = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Samples per solver batch.")]
StoreDir = Annotated[Path, typer.Option("--store", help="LMDB store directory.")]
OutFile = Annotated[Path, typer.Option("--out", help="Output file.")]
Json = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Ray solver actors.")]
SolverGpus = Annotated[
    float, typer.Option("--gpus", min=0, help="GPUs per solver actor (1, or 0.5 to share one); 0 solves on the CPU.")
]
Address = Annotated[str | None, typer.Option("--address", help="Join an existing Ray cluster (auto or HOST:PORT).")]
ProblemName = Annotated[str, typer.Option("--problem", help="The problem (`curate problems` lists them).")]
PresetOfProblem = Annotated[
    str | None, typer.Option("--preset", help="One of the problem's presets (default: the problem's own).")
]
