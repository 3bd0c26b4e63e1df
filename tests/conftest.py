"""Shared fixtures: one local Ray cluster on 127.0.0.1 for the whole session, a CLI runner, small solved data."""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import pytest

from diffcurate.solvers.problem import PRESETS
from diffcurate.solvers.sampling import sample_configs

TINY = PRESETS["tiny"].physics


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One real local Ray for every test that needs it (2 CPUs, no dashboard); yields its GCS address so that
    subprocesses (`curate ... --address`) can join it instead of starting their own."""
    import ray

    from diffcurate.curate.cluster.actors import init_local

    init_local(num_cpus=2, include_dashboard=False, configure_logging=True, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `curate ARGS` in this process (so it reuses the session's Ray); returns (exit code, stdout, stderr)."""
    from diffcurate.curate.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["curate", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli():
    return run_cli


def tiny_configs(n: int, seed: int = 0, sampler: str = "mixed"):
    return sample_configs(sampler, TINY, seed, range(n), PRESETS["tiny"].sources)[0]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
