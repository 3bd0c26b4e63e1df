"""Cases found by probing as a careful user would, one row each: what must be refused is refused with the exact exit
code and exactly one stderr line, what must warn warns, and a refused command leaves the run directory or store
byte for byte as it was (lock files aside: `run.lock` and `writer.lock` hold their last holder's pid, and LMDB's
`lock.mdb` is its reader table, which every reader writes).

The file readers' cases (wrong dtypes, 0 samples, a text file or a symlink named .npz, a directory) are rows of
`test_reliability.CONFIG_KINDS`, where every reader meets every bad file."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY, read_only, run_cli, tiny_configs
from test_estimators import build_tiny_run
from test_reliability import _flip, _record_offset

from diffcurate.curate.loop.config import default_config
from diffcurate.curate.loop.rundir import RunPaths, init_run
from diffcurate.curate.store.arrays import save_arrays
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.solvers.registry import solve

CURATE = str(Path(sys.executable).with_name("curate"))
LOCKS = {"run.lock", "writer.lock", "lock.mdb"}


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` but the lock files."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in LOCKS
    }


def tiny_run_config(seed: int = 0):
    cfg = default_config("tiny")
    cfg.ray.dashboard, cfg.seed, cfg.rounds = False, seed, 0
    return cfg


@pytest.fixture(scope="module")
def finished(ray_cluster, tmp_path_factory) -> Path:
    """A finished tiny run (round 0 and 2 rounds, the session's shared one); each case works on a copy."""
    return build_tiny_run(tmp_path_factory)


def flip_record(store: Path, split: str) -> Path:
    """Flip 8 bytes inside the target of one record of `split`; returns the store."""
    _flip(store, _record_offset(store, split, 3))
    return store


def tear_last_line(root: Path) -> None:
    path = RunPaths(root).rounds
    text = path.read_text()
    path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])


def adopt_other_store(root: Path) -> Path:
    """Run r2 (seed 5) whose store is a copy of another run's, of the same physics."""
    r2 = root.parent / "r2"
    init_run(r2, tiny_run_config(seed=5))
    shutil.copytree(RunPaths(root).store, RunPaths(r2).store)
    return r2


def edit_lattice(root: Path) -> Path:
    path = RunPaths(root).config
    path.write_text(path.read_text().replace("lattice = 32", "lattice = 100000"))
    return root


def delete_state(root: Path) -> Path:
    for f in RunPaths(root).state(0).iterdir():
        if f.is_file():
            f.unlink()
    return root


@dataclass
class Case:
    """One probed case: `make(copy of the finished run) -> the directory that must not change`, the command (with
    {run}, {store}, {address} filled in), its exit code, and words its one stderr line holds."""

    name: str
    make: Callable[[Path], Path]
    args: list[str]
    code: int
    words: str
    expect: str = "refusal"  # exactly one stderr line; "verdict": verify's report, its last line the verdict;
    # "warning": the command's output with exactly one warning line


CASES = [
    # 1. another run's store of the same physics: not adopted
    Case("adopted-store", adopt_other_store, ["run", "{run}", "--rounds", "1"], 2, "not this run's store"),
    # 3. a config edited after the store was made: every command that reads the run checks it
    Case("edited-config-status", edit_lattice, ["status", "{run}"], 2, "other physics"),
    Case("edited-config-report", edit_lattice, ["report", "{run}"], 2, "other physics"),
    Case("edited-config-verify", edit_lattice, ["verify", "--run", "{run}"], 1, "other physics", expect="verdict"),
    # 12. a damaged test record refuses the run before any round, naming the repair
    Case(
        "damaged-test-record",
        lambda r: flip_record(RunPaths(r).store, "test").parent,
        ["run", "{run}", "--rounds", "1"],
        1,
        "--repair",
    ),
    # 15. damage that verify --run must call damage
    Case(
        "verify-torn-log", lambda r: tear_last_line(r) or r, ["verify", "--run", "{run}"], 1, "torn", expect="verdict"
    ),
    Case("verify-missing-state", delete_state, ["verify", "--run", "{run}"], 1, "lacks meta.json", expect="verdict"),
    # 2. a torn log: report and status say so (and read the lost round from state/), changing nothing there
    Case(
        "torn-log-report",
        lambda r: tear_last_line(r) or RunPaths(r).state(0).parent,
        ["report", "{run}"],
        0,
        "torn",
        expect="warning",
    ),
    Case("torn-log-status", lambda r: tear_last_line(r) or r, ["status", "{run}"], 0, "torn", expect="warning"),
    # 4. info on a store with a damaged record warns, naming the command that finds it
    Case(
        "info-damaged-record",
        lambda r: flip_record(RunPaths(r).store, "train"),
        ["info", "--store", "{run}/store"],
        0,
        "damaged records",
        expect="warning",
    ),
    # 6. a count no disk holds: refused before Ray starts, no store made
    Case(
        "generate-count-beyond-disk",
        lambda r: r.parent,
        ["generate", "--store", "{run}/../new-store", "--count", str(10**12), "--preset", "tiny"],
        2,
        "GiB",
    ),
    # 9. training into a directory it may not write: refused before training
    Case("train-read-only", lambda r: r, ["train", "{run}", "--data", "{data}", "--preset", "tiny"], 2, "read-only"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_probed_case(finished, tmp_path, case):
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    data = tmp_path / "d.npz"
    cfg = tiny_configs(8, seed=2)
    save_arrays(data, TINY, cfg, y=solve(TINY, cfg, "fast", dtype="float32"))
    watched = case.make(root)
    before = snapshot(watched)
    fill = {"run": str(watched if case.name == "adopted-store" else root), "data": str(data)}
    args = [a.format(**fill) for a in case.args]
    if case.name == "train-read-only":
        with read_only(root):
            code, _, err = run_cli(*args)
    else:
        code, _, err = run_cli(*args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code and case.words in err and "Traceback" not in err, (args, code, err)
    if case.expect == "refusal":
        assert len(lines) == 1, err
    elif case.expect == "verdict":
        assert lines[-1].startswith("check failed: "), err
    else:
        warnings = [line for line in lines if line.startswith("warning:")]
        assert len(warnings) == 1 and case.words in warnings[0], err
    assert snapshot(watched) == before, f"{case.name}: {watched} changed"


def test_a_torn_log_is_read_from_state_and_rewritten(finished, tmp_path):
    """2. report and status warn about a torn rounds.jsonl and read the lost round from state/; `curate run`
    rewrites the log byte for byte as it was, before Ray starts, and the hint it printed runs as printed."""
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    whole = RunPaths(root).rounds.read_bytes()
    tear_last_line(root)
    for cmd in (["report", root], ["status", root, "--json"]):
        code, out, err = run_cli(*cmd)
        assert code == 0 and err.count("warning:") == 1 and "torn" in err, (cmd, err)
    assert json.loads(out)["rounds_completed"] == 3  # round 2, from state/
    assert "| 0 | 40 |" in (RunPaths(root).report / "report.md").read_text()
    code, _, err = run_cli(*hinted(err)[0])
    assert code == 0 and RunPaths(root).rounds.read_bytes() == whole, err


def test_info_warns_about_a_damaged_record_and_its_hint_repairs_it(finished, tmp_path):
    """4, 12, 13. info names a record that fails its checksum; the printed `verify` command runs as printed (exit 1:
    damage), and `verify --repair`, the command a refused run prints, re-solves it from its configuration."""
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    store = RunPaths(root).store
    flip_record(store, "test")
    code, _, err = run_cli("info", "--store", store)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1 and "1 damaged records" in warnings[0], err
    code, out, err = run_cli(*hinted(err)[0])
    assert code == 1 and "checksum" in out + err
    code, _, err = run_cli("run", root, "--rounds", "0")
    repair = hinted(err)[0]
    assert code == 1 and repair[-1] == "--repair", err
    assert run_cli(*repair)[0] == 0
    assert run_cli("verify", "--run", root, "--resolve", "20")[0] == 0
    with Store(store, readonly=True) as st:
        assert st.damaged_records() == []


def hinted(text: str) -> list[list[str]]:
    """The `curate ...` commands a message prints, as argument lists (without the program name)."""
    import re

    return [shlex.split(m)[1:] for m in re.findall(r"`(curate [^`]+)`", text)]


def test_every_hint_runs_as_printed(finished, tmp_path):
    """13. The commands our messages print parse as the CLI's own commands (no usage error, exit 2): the hints of a
    damaged store (info, export), of a missing run and of a run directory with no rounds yet."""
    root = tmp_path / "r"
    shutil.copytree(finished, root)
    store = RunPaths(root).store
    flip_record(store, "train")
    messages = [
        run_cli("info", "--store", store)[2],
        run_cli("export", "--store", store, "--out", tmp_path / "e.npz")[2],
    ]
    messages.append(run_cli("status", tmp_path / "nowhere")[2])
    init_run(tmp_path / "empty", tiny_run_config())
    messages.append(run_cli("report", tmp_path / "empty")[2])
    hints = [h for m in messages for h in hinted(m)]
    assert len(hints) == 4, messages
    for args in hints:
        code, _, err = run_cli(*args)
        assert code in (0, 1) and "Traceback" not in err, (args, code, err)  # 1: the damage it was sent to find


def test_ray_that_does_not_start_is_one_line(monkeypatch, tmp_path):
    """10. A local Ray start that times out (Ray's own words, raised here in place of a loaded machine's GCS) is
    one line naming the wait and the resume, exit 1, with no store made."""
    import ray

    def timed_out(*a, **k):
        raise Exception(
            "The current node timed out during startup. This could happen because some of the raylet failed"
        )

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "shutdown", lambda: None)  # the tests' own cluster stays up
    monkeypatch.setenv("CURATE_RAY_START_TIMEOUT", "0")
    code, _, err = run_cli("generate", "--store", tmp_path / "s", "--count", "10", "--preset", "tiny")
    assert code == 1 and len(err.splitlines()) == 1 and "Ray did not start within 0 s" in err, err
    assert "re-run" in err and "CURATE_RAY_START_TIMEOUT" in err and not (tmp_path / "s").exists()


def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(finished, tmp_path):
    """8. A file size limit stands in for a full disk: one line, exit 1, no export file, no cards, no temp file."""
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10)); "
        "from diffcurate.curate.cli.app import main; sys.argv = ['curate'] + sys.argv[1:]; main()"
    )
    args = ["export", "--store", str(RunPaths(finished).store), "--out", str(out / "e.npz")]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "full" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and list(out.iterdir()) == []


# 16. a SIGTERM just after the work: sent by the process itself once it has printed its result line
SIGTERM_AFTER_RESULT = """
import os, signal, sys
import rich.console
orig = rich.console.Console.print
def print_then_term(self, *a, **k):
    orig(self, *a, **k)
    if a and any(w in str(a[0]) for w in ("added", "wrote")):
        os.kill(os.getpid(), signal.SIGTERM)
rich.console.Console.print = print_then_term
from diffcurate.curate.cli.app import main
sys.argv = ["curate"] + sys.argv[1:]
main()
"""


def test_sigterm_after_the_work_is_the_interrupted_line_not_a_silent_death(ray_cluster, tmp_path):
    store = tmp_path / "s"
    for args in (
        ["generate", "--store", str(store), "--count", "20", "--preset", "tiny", "--address", ray_cluster],
        ["export", "--store", str(store), "--out", str(tmp_path / "e.npz")],
    ):
        r = subprocess.run(
            [sys.executable, "-c", SIGTERM_AFTER_RESULT, *args], capture_output=True, text=True, timeout=300
        )
        lines = [line for line in r.stderr.splitlines() if line.strip() and "━" not in line]
        assert r.returncode in (0, 143), (args, r.returncode, r.stderr)  # never -15 without a word
        if r.returncode == 143:
            assert lines[-1] == "interrupted: everything committed so far is kept; re-run the same command to resume"
            assert "Traceback" not in r.stderr
    with Store(store, readonly=True) as st:
        assert st.count() == 20 and st.verify() == []
    assert (tmp_path / "e.npz").is_file()


def test_generate_count_says_what_it_counts(tmp_path):
    """Also probed: `--count` is the first N distinct samples of (sampler, seed), not the split's total."""
    r = subprocess.run(
        [CURATE, "generate", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    assert "first N distinct samples of (sampler, seed)" in " ".join(r.stdout.split()), r.stdout
