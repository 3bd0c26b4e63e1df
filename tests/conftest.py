"""Shared fixtures: one local Ray cluster on 127.0.0.1 for the whole session, a CLI runner, small solved data."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

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

    from diffcurate.curate.cluster.session import init_local

    init_local(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=True,
        logging_level="ERROR",
        log_to_driver=False,
        _system_config={"metrics_report_interval_ms": 2000},  # gauges reach the endpoint in seconds, not tens
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
    assert ray_processes_left() == [], "Ray processes outlived the tests' cluster"


def processes_left(candidates, wanted, wait: float) -> list[str]:
    """The processes of `candidates()` whose command line `wanted(cmd)` picks, still alive (not zombies) after up
    to `wait` s: processes being stopped exit shortly, so they are polled, not killed."""
    import time

    import psutil

    deadline = time.monotonic() + wait
    while True:
        left = []
        for p in candidates():
            try:
                cmd = " ".join(p.cmdline())
                if wanted(cmd) and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {cmd[:60]}")
            except psutil.Error:  # it ended meanwhile, or is not ours to read
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def ray_processes_left(wait: float = 30.0) -> list[str]:
    """This process's Ray children (GCS, raylet, workers, agents) still alive `wait` s after the shutdown."""
    import psutil

    return processes_left(lambda: psutil.Process().children(recursive=True), lambda cmd: "ray" in cmd, wait)


# the actors Ray Train starts for one fit: a test that trains on workers must leave none of them behind
TRAIN_ACTORS = ("ray::TrainController", "ray::DatasetManager", "ray::EpochCounter", "ray::_Mailbox")


def ray_train_leftovers(wait: float = 20.0) -> list[str]:
    """The Ray Train actors' processes still alive after up to `wait` s (a killed actor's process exits shortly)."""
    import psutil

    return processes_left(psutil.process_iter, lambda cmd: cmd.startswith(TRAIN_ACTORS), wait)


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


def flip_inside_a_weight(src: Path, dst: Path) -> None:
    """16 flipped bytes in the middle of the largest tensor's data (torch's zip stores tensors uncompressed and
    does not check the zip CRC on load: the file still loads, with other weights)."""
    import zipfile

    with zipfile.ZipFile(src) as z:
        big = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        name_len = len(big.filename.encode())
    raw = bytearray(src.read_bytes())
    extra = int.from_bytes(raw[big.header_offset + 28 : big.header_offset + 30], "little")
    start = big.header_offset + 30 + name_len + extra + big.file_size // 2
    raw[start : start + 16] = bytes(b ^ 0xFF for b in raw[start : start + 16])
    dst.write_bytes(bytes(raw))


@contextlib.contextmanager
def read_only(path: Path):
    """Directory `path` made unwritable for this process while the block runs: `chattr +i` as root (whom file
    permissions do not stop), else chmod 0555; a test that can do neither is skipped."""
    import os
    import subprocess

    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here (root ignores permissions)")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(mode)
