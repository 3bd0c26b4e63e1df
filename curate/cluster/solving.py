"""`curate solve` as a library call: configurations (from a file or a sampler) -> solved fields in a file."""

from __future__ import annotations

from pathlib import Path

from diffcurate.common.errors import InputError
from diffcurate.curate.progress import progress_bar
from diffcurate.curate.store.arrays import format_of, load_configs, save_arrays
from diffcurate.curate.store.lock import check_writable
from diffcurate.solvers.problem import Configs, Physics, paint
from diffcurate.solvers.registry import check_request, solve
from diffcurate.solvers.sampling import sample_configs


def configs_for(
    physics: Physics,
    input_path: Path | None,
    count: int | None,
    seed: int,
    sampler: str,
    sources: tuple[int, int],
) -> Configs:
    """Configurations from exactly one of: a file (`--input`), or a seeded sampler (`--count`, `--seed`)."""
    if (input_path is None) == (count is None):
        raise InputError("give either --input CONFIGS or --count N (with --seed), not both and not neither")
    if input_path is not None:
        return load_configs(input_path, physics)
    if count < 1:
        raise InputError(f"--count must be >= 1, got {count}")
    return sample_configs(sampler, physics, seed, range(count), sources)[0]


def solve_to_file(
    out: Path,
    physics: Physics,
    configs: Configs,
    solver: str = "fast",
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 16,
    force: bool = False,
    show_progress: bool = True,
) -> Path:
    """Solve and write the config-array layout of docs/formats.md (configs, x, y, physics). Nothing is written on bad input."""
    format_of(out)  # refuse an unknown extension before any work
    if out.exists() and not force:
        raise InputError(f"{out} exists (use --force to overwrite)")
    if out.parent.is_dir():
        check_writable(out.parent)
    configs.validate(physics)
    check_request(solver, device, dtype)
    with progress_bar(len(configs), f"solving ({solver})", show=show_progress) as advance:
        y = solve(physics, configs, solver, device=device, dtype=dtype, batch_size=batch_size, progress=advance)
    return save_arrays(out, physics, configs, x=paint(physics, configs), y=y)
