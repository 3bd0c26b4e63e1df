"""The curation loop end to end on the tiny preset with real Ray, LMDB and training: rounds, resume after kill -9,
solver-actor kills, strategies that spend identical budgets, status and report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flip_inside_a_weight, read_only

from diffcurate.curate.cluster.dispatch import solve_ordered
from diffcurate.curate.loop.config import default_config
from diffcurate.curate.loop.rundir import RunPaths, init_run, read_rounds
from diffcurate.curate.loop.runner import Runner, run
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.solvers.registry import solve
from diffcurate.solvers.sampling import sample_configs


def tiny_config(strategy: str = "al", seed: int = 0, acquisition: str = "true-error"):
    cfg = default_config("tiny")
    cfg.acquisition.strategy, cfg.acquisition.acquisition = strategy, acquisition
    cfg.ray.dashboard = False
    cfg.seed = seed
    return cfg


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def al_run(ray_cluster, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "al"
    init_run(root, tiny_config("al"))
    run(root, log=quiet, show_progress=False)
    return root


def _train_ids(root: Path) -> list[str]:
    with Store(RunPaths(root).store, readonly=True) as st:
        return sorted(st.ids("train"))


def test_two_rounds_end_to_end(al_run):
    cfg = tiny_config()
    rounds = read_rounds(al_run)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["train_size"] for r in rounds] == [40, 60, 80]
    assert [r["added"] for r in rounds] == [0, 20, 20]
    assert sum(rounds[1]["added_by_sources"].values()) == 20
    assert rounds[1]["solves"] == cfg.data.pool  # true-error acquisition solves the whole pool
    for r in rounds:
        assert set(r) >= {"round", "train_size", "added", "added_by_sources", "solves", "test", "seconds"}
        assert set(r["seconds"]) >= {"generate", "solve", "score", "train", "evaluate", "total"}
        assert set(r["test"]) == {"n_samples", "mae", "mae_by_sources", "rel_l2", "per_sample_mae", "rel_l2_mean"}
        assert set(r["test"]["mae"]) == {"all", "sources", "field", "r1", "r2", "r3"}
    with Store(RunPaths(al_run).store, readonly=True) as st:
        idx = st.index()
        assert st.count("val") == 20 and st.count("test") >= 95
        assert set(idx[idx["split"] == "test"]["sampler"]) == set(cfg.data.test_families)
        picked = idx[idx["round"] == 1]
        assert len(picked) == 20 and picked["score"].notna().all() and (picked["strategy"] == "al").all()
    for k in range(3):  # checkpoints rebuild their model from plain data
        ck = torch.load(RunPaths(al_run).checkpoint(k), weights_only=True)
        assert ck["model_config"]["arch"] == "edcnn" and "state_dict" in ck
    assert rounds[-1]["test"]["mae"]["all"] < rounds[0]["test"]["mae"]["all"]


def test_the_default_scores_without_solving_the_pool(ray_cluster, tmp_path):
    """`curate run`'s default acquisition (sbal on the calibrated residual estimate, docs/study.md): round 1 solves
    only its picks, scores every candidate of the pool, and the residual estimator's calibration is kept."""
    from diffcurate.curate.loop.config import AcquisitionConfig

    a = AcquisitionConfig()
    assert (a.strategy, a.acquisition) == ("sbal", "residual")
    root = tmp_path / "default"
    cfg = default_config("tiny")
    cfg.rounds, cfg.ray.dashboard = 1, False
    init_run(root, cfg)
    rounds = run(root, log=quiet, show_progress=False)
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["added"] == cfg.acquisition.budget
    assert rounds[1]["solves"] == rounds[1]["added"]  # the picks, not the pool
    scores = np.load(RunPaths(root).round(1).scores)
    assert scores.shape == (cfg.data.pool,) and np.all(np.isfinite(scores)) and np.all(scores > 0)
    assert RunPaths(root).estimator("residual").is_file()


def test_rerun_after_completion_does_nothing(al_run):
    before = (RunPaths(al_run).rounds.read_text(), _train_ids(al_run))
    run(al_run, log=quiet, show_progress=False)
    assert (RunPaths(al_run).rounds.read_text(), _train_ids(al_run)) == before


def test_random_spends_the_same_budget_on_the_same_pools(al_run, tmp_path):
    root = tmp_path / "random"
    init_run(root, tiny_config("random"))
    rr = run(root, log=quiet, show_progress=False)
    ra = read_rounds(al_run)
    assert [r["train_size"] for r in rr] == [r["train_size"] for r in ra]
    assert [r["added"] for r in rr] == [r["added"] for r in ra]
    assert rr[1]["solves"] == 20 < ra[1]["solves"]  # random solves only what it picks
    ids_a, ids_r = set(_train_ids(al_run)), set(_train_ids(root))
    with Store(RunPaths(root).store, readonly=True) as st:
        initial = set(st.index().query("round == 0 and split == 'train'")["id"])
    assert initial <= ids_a and ids_a != ids_r  # same initial set, other picks


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_sigkill_or_sigterm_of_the_driver(al_run, ray_cluster, tmp_path, sig):
    """kill -9, or a scheduler's SIGTERM, to the driver mid-round (once round 1 has picked), re-run: the same
    samples, rounds and store as the uninterrupted run. SIGTERM is Ctrl-C's clean stop: exit 143 and the one
    "interrupted" line. The child has its own process group, as a scheduler's job does."""
    root = tmp_path / "killed"
    init_run(root, tiny_config("al"))
    cmd = [sys.executable, "-m", "diffcurate.curate", "run", str(root), "--address", ray_cluster]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    marker = RunPaths(root).round(1).selection
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith("interrupted: everything committed so far is kept"), err
    assert len(read_rounds(root)) <= 2
    run(root, log=quiet, show_progress=False)
    rounds, ref = read_rounds(root), read_rounds(al_run)
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["train_size"] for r in rounds] == [r["train_size"] for r in ref]
    assert _train_ids(root) == _train_ids(al_run)  # nothing lost, nothing duplicated, same picks
    with Store(RunPaths(root).store, readonly=True) as st:
        assert st.verify() == []


def test_solver_actor_killed_mid_round(al_run, ray_cluster):
    import ray

    cfg = tiny_config()
    runner = Runner(al_run, cfg, quiet, show_progress=False)
    try:
        pool, _ = sample_configs("mixed", cfg.physics, 77, range(3000), tuple(cfg.strata))
        solvers = runner.ctx.solvers
        victim = ray.get(solvers[0].pid.remote())
        landed = []

        def kill_after_first(offset):  # the fault comes from the dispatcher's callback, not a timer
            landed.append(offset)
            if len(landed) == 1:
                os.kill(victim, signal.SIGKILL)

        y = solve_ordered(solvers, pool, cfg.task.grid, on_chunk=kill_after_first)[0]
        assert len(landed) == len(range(0, 3000, 64))  # every chunk landed once, the killed actor's retried
        assert ray.get(solvers[0].pid.remote()) != victim  # it was restarted
        assert np.allclose(y, solve(cfg.physics, pool, "fast", dtype="float32"), atol=1e-6)
    finally:
        runner.close()


def test_status_json_and_report(al_run, cli):
    code, out, _ = cli("status", al_run, "--json")
    d = json.loads(out)
    assert code == 0 and d["rounds_completed"] == 3 and d["strategy"] == "al" and d["preset"] == "tiny"
    assert d["acquisition"] == "true-error" and d["warnings"] == []
    assert d["rounds"] == read_rounds(al_run)
    code, _, _ = cli("report", al_run)
    rep = al_run / "report"
    assert code == 0 and (rep / "report.md").exists()
    for png in ("metrics.png", "by_stratum.png", "timeline.png", "worst.png"):
        assert (rep / png).stat().st_size > 10_000
    assert "| 2 | 80 | 20 |" in (rep / "report.md").read_text()


def test_run_bad_input(cli, tmp_path, al_run):
    code, _, err = cli("run", tmp_path / "nothing")
    assert code == 2 and "not a run directory" in err
    code, _, err = cli("run", al_run, "--strategy", "random")
    assert code == 2 and "already ran acquisition rounds" in err
    code, _, err = cli("init", tmp_path / "x", "--preset", "huge")
    assert code == 2 and "unknown preset" in err
    cfg = tiny_config()
    cfg.seed = 99
    with pytest.raises(Exception, match="another config"):
        init_run(al_run, cfg)
    bad = tmp_path / "bad.toml"
    bad.write_text('preset = "tiny"\nphysics = 3\n')
    code, _, err = cli("init", tmp_path / "y", "--config", bad)
    assert code == 2 and "error" in err and "Traceback" not in err


def test_init_refuses_a_place_inside_a_store(al_run, cli):
    store = RunPaths(al_run).store
    for target in (store / "sub", store):
        code, _, err = cli("init", target, "--preset", "tiny")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "inside the store" in err, err
    assert not (store / "sub").exists()


def _other_physics(root: Path) -> None:
    p = RunPaths(root).config
    p.write_text(p.read_text().replace("lattice = 32", "lattice = 48"))


def _newer_schema(root: Path) -> None:
    import lmdb

    from diffcurate.curate.store.env import MAX_DBS

    env = lmdb.open(str(RunPaths(root).store), max_dbs=MAX_DBS, subdir=True)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"schema_version", b"99")
    env.close()


def _stale_round(root: Path) -> None:
    """Round 3's folder started under budget 30; the config says 20."""
    from diffcurate.curate.loop.health import mark_started
    from diffcurate.curate.loop.rundir import load_run

    cfg = load_run(root)
    cfg.acquisition.budget = 30
    mark_started(root, 3, cfg)
    np.save(RunPaths(root).round(3).dir / "pool_y.npy", np.zeros(3))


def _damaged_checkpoint(root: Path) -> None:
    ckpt = RunPaths(root).checkpoint(2)
    flip_inside_a_weight(ckpt, ckpt)


# (what is wrong, how it is made, the command, exit code, words of the one stderr line)
REFUSED = [
    ("other physics in config.toml", _other_physics, ["run", "{root}", "--rounds", "3"], 2, "other physics"),
    ("a store of a newer schema", _newer_schema, ["run", "{root}", "--rounds", "3"], 2, "store schema"),
    ("a round started under another config", _stale_round, ["run", "{root}", "--rounds", "3"], 2, "rm -r"),
    ("a read-only run directory", None, ["run", "{root}", "--rounds", "3"], 2, "read-only"),
    ("a damaged checkpoint: run", _damaged_checkpoint, ["run", "{root}", "--rounds", "3"], 1, "checksum mismatch"),
    ("a damaged checkpoint: report", _damaged_checkpoint, ["report", "{root}"], 1, "checksum mismatch"),
    (
        "a damaged checkpoint: estimate-eval",
        _damaged_checkpoint,
        ["estimate-eval", "{root}", "--estimators", "residual", "--device", "cpu"],
        1,
        "checksum mismatch",
    ),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refusals_leave_the_run_as_it_was(al_run, cli, tmp_path, case):
    """Each refusal decided by the config, the store or the checkpoints comes before Ray starts and before any
    file is written: its exit code, exactly one stderr line, no traceback, and the run directory unchanged (so the
    run resumes once the cause is put right)."""
    import contextlib
    import shutil

    _, make, args, code, words = case
    root = tmp_path / "run"
    shutil.copytree(al_run, root)
    if make:
        make(root)
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "lock.mdb"}
    with read_only(root) if make is None else contextlib.nullcontext():
        got, _, err = cli(*[a.format(root=root) if isinstance(a, str) else a for a in args])
    assert got == code and err.count("\n") == 1 and words in err and "Traceback" not in err, err
    assert "starting Ray" not in err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != "lock.mdb"} == files


def test_status_and_verify_warn_about_a_torn_log_and_a_damaged_checkpoint(al_run, cli, tmp_path):
    """`status` warns (exit 0) about a torn round log and a checkpoint that fails its checksum; `verify --run`
    checks the store, every checkpoint and the log, and calls both damage (exit 1)."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(al_run, root)
    code, out, err = cli("verify", "--run", root, "--json")
    assert code == 0 and err == "" and json.loads(out)["checkpoints"] == 3, err
    with open(RunPaths(root).rounds, "a") as f:
        f.write('{"round": 3, "trai')  # killed mid-append
    _damaged_checkpoint(root)
    code, out, err = cli("status", root, "--json")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 2 and "torn" in lines[0] and "checksum mismatch" in lines[1], err
    assert json.loads(out)["rounds_completed"] == 3 and len(json.loads(out)["warnings"]) == 2
    code, _, err = cli("verify", "--run", root)  # the report, then the one line of the failed check
    ckpt = RunPaths(root).checkpoint(2)
    assert code == 1 and f"{ckpt}: checksum mismatch" in err and "torn" in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"check failed: 2 problems in {root}"  # a torn log is damage too


def test_pipelined_rounds_pick_the_same_samples_and_overlap(al_run, tmp_path):
    """al_run is pipelined (the default): round k+1's pool is solved while round k trains. A sequential run with
    the same seed picks exactly the same samples."""
    root = tmp_path / "sequential"
    cfg = tiny_config("al")
    cfg.ray.pipeline = False
    init_run(root, cfg)
    run(root, log=quiet, show_progress=False)
    assert _train_ids(root) == _train_ids(al_run)
    piped = {r["round"]: {s["step"]: s for s in r["timeline"]} for r in read_rounds(al_run)}
    assert piped[2]["solve"]["start"] < piped[1]["train"]["end"]  # solving round 2 overlapped training round 1
    assert piped[2]["solve"]["actor"] == "solvers (pipelined)"
    assert read_rounds(al_run)[2]["seconds"]["total"] < piped[2]["evaluate"]["end"] - piped[2]["solve"]["start"]
    seq = {r["round"]: {s["step"]: s for s in r["timeline"]} for r in read_rounds(root)}
    assert seq[2]["solve"]["start"] >= seq[1]["train"]["end"]


def test_two_trainers_train_independent_ensemble_members(ray_cluster, tmp_path):
    """ray.trainers = 2: member 1 trains beside the surrogate with its own seed, is warm-started from its own
    previous round, is evaluated per member, and the ensemble estimator reuses it instead of training one."""
    from diffcurate.curate.loop.estimate import Source, prepare

    root = tmp_path / "ens"
    cfg = tiny_config("al")
    cfg.rounds, cfg.ray.trainers, cfg.ray.trainer_cpus = 1, 2, 0.5
    init_run(root, cfg)
    run(root, log=quiet, show_progress=False)
    paths, rounds = RunPaths(root), read_rounds(root)
    for k in (0, 1):
        ck, mem = (torch.load(p, weights_only=True) for p in (paths.checkpoint(k), paths.member(k, 1)))
        assert mem["train_config"]["seed"] == ck["train_config"]["seed"] + 1000
        assert mem["model_config"] == ck["model_config"]
        pairs = zip(ck["state_dict"].values(), mem["state_dict"].values(), strict=True)
        assert not all(torch.equal(a, b) for a, b in pairs)
        assert [m["member"] for m in rounds[k]["members"]] == [1]
        assert rounds[k]["members"][0]["mae"] != rounds[k]["test"]["mae"]["all"]
        assert {s["step"]: s["actor"] for s in rounds[k]["timeline"]}["train"] == "trainers x2"
    fit = json.loads((paths.state(1) / "fit.json").read_text())
    assert fit["members"][0]["member"] == 1 and fit["members"][0]["train_size"] == fit["train_size"]
    member = paths.member(1, 1)
    before = member.stat().st_mtime_ns
    prepare(Source(paths.checkpoint(1), root, 1), ["ensemble"], ensemble_size=2)
    assert member.stat().st_mtime_ns == before  # reused, not retrained
    placed = json.loads(RunPaths(root).actors.read_text())[-1]["nodes"]
    assert {"trainer", "trainer-1"} <= set(placed)
    from diffcurate.curate.loop.report import write_report

    text = write_report(root).read_text()
    assert "Ensemble members" in text and f"| 1 | 1 | {rounds[1]['members'][0]['mae']:.4g} |" in text


def test_peer_strategy_lcmd_picks_in_feature_space(al_run, tmp_path):
    """bmdal-reg's LCMD on the surrogate's bottleneck features: no pool solves, the same budget, other picks."""
    root = tmp_path / "lcmd"
    cfg = tiny_config("lcmd")
    cfg.rounds = 1
    init_run(root, cfg)
    rounds = run(root, log=quiet, show_progress=False)
    assert rounds[1]["added"] == 20 == rounds[1]["solves"] and rounds[1]["train_size"] == 60
    with np.load(RunPaths(root).round(1).embed) as z:
        assert z["pool"].shape[1] == z["train"].shape[1] and len(z["train"]) == 40
    picked = {}
    for r in (root, al_run):
        with Store(RunPaths(r).store, readonly=True) as st:
            picked[r] = set(st.index().query("round == 1")["id"])
    assert len(picked[root]) == 20 and picked[root] != picked[al_run]  # same pool (seed), other picks


def test_count_prior_scores_round_one_then_keeps_its_allocation(al_run, tmp_path):
    """count-prior: round 1 scores its (solved) pool and splits the budget by the mean score per source count;
    round 2 reuses those shares without scoring, so it solves only its picks."""
    root = tmp_path / "count-prior"
    init_run(root, tiny_config("count-prior"))
    rounds = run(root, log=quiet, show_progress=False)
    files = RunPaths(root).round
    assert files(1).scores.exists() and not files(2).scores.exists()
    sel = [json.loads(files(k).selection.read_text()) for k in (1, 2)]
    assert sel[0]["allocation"] == sel[1]["allocation"] and sum(sel[0]["allocation"].values()) == pytest.approx(1)
    assert rounds[2]["solves"] == rounds[2]["added"] == 20 < rounds[1]["solves"]
    with Store(RunPaths(root).store, readonly=True) as st:
        idx = st.index()
    for k in (1, 2):
        picked = idx[idx["round"] == k]["stratum"].value_counts().to_dict()
        top = max(sel[0]["allocation"], key=sel[0]["allocation"].get)
        assert picked.get(int(top), 0) == max(picked.values())  # the largest share gets the most picks


def test_strata_fits_the_round_scores_by_descriptors(al_run, tmp_path):
    """strata: the solved, scored pool of round 1 is fitted by its descriptors (the fit is kept in selection.json)
    and the budget is spent in one pick of the same size as every strategy's."""
    root = tmp_path / "strata"
    cfg = tiny_config("strata")
    cfg.rounds = 1
    init_run(root, cfg)
    rounds = run(root, log=quiet, show_progress=False)
    sel = json.loads(RunPaths(root).round(1).selection.read_text())
    assert len(sel["index"]) == rounds[1]["added"] == 20 and len(sel["fit"]["weights"]) == 13
    assert -1.0 <= sel["fit"]["r2"] <= 1.0


def test_one_run_per_run_directory(al_run):
    """A second `curate run` on a directory another one holds is refused with --no-wait (nothing changed), or
    waits with one line naming the holder's pid and goes on when the holder ends."""
    from diffcurate.common.errors import InputError
    from diffcurate.curate.loop.rundir import run_lock

    before = RunPaths(al_run).config.read_text()
    with run_lock(al_run):
        with pytest.raises(InputError, match=rf"in use by another `curate run` \(pid {os.getpid()}\)"):
            run(al_run, log=quiet, show_progress=False, wait=False)
        cmd = [sys.executable, "-m", "diffcurate.curate", "run", str(al_run), "--max-solves", "1000000"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()  # printed once it finds the lock held, before it changes anything
            assert f"waiting for the other `curate run` of {al_run} (pid {os.getpid()})" in line, line
            assert RunPaths(al_run).config.read_text() == before
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=120)  # the holder has ended: it goes on (a finished run answers at once)
    assert proc.returncode == 0 and "stopped:" in err, err
    cfg = RunPaths(al_run).config.read_text()
    assert cfg != before and "max_solves = 1000000" in cfg  # its override was written after it got the lock
    RunPaths(al_run).config.write_text(before)


def test_round_metrics_reach_the_prometheus_endpoint(ray_cluster, tmp_path):
    """The diffcurate_* gauges a tiny run publishes show up on the node's metrics endpoint with the run's tag (what
    Prometheus scrapes and the dashboard's Metrics view shows), scraped right after the run's round."""
    import urllib.request

    import ray

    al_run = tmp_path / "metrics-run"
    init_run(al_run, tiny_config("al"))
    run(al_run, rounds=0, log=quiet, show_progress=False)

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    # Ray's exporter prefixes application metrics with ray_
    wanted = ("ray_diffcurate_round", "ray_diffcurate_train_size", "ray_diffcurate_test_mae", "ray_diffcurate_test_p99")
    text, deadline = "", time.time() + 60
    while time.time() < deadline:  # the agent exports every few seconds
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        lines = [line for line in text.splitlines() if f'run="{al_run.name}"' in line]
        if all(any(line.startswith(w + "{") for line in lines) for w in wanted):
            break
        time.sleep(2)
    lines = [line for line in text.splitlines() if f'run="{al_run.name}"' in line]
    for w in wanted:
        assert any(line.startswith(w + "{") for line in lines), f"{w} not exported"
    size = next(line for line in lines if line.startswith("ray_diffcurate_train_size{"))
    assert float(size.rsplit(" ", 1)[1]) == read_rounds(al_run)[-1]["train_size"]


def test_status_watch_and_finished_run_answer_at_once(al_run, cli):
    t0 = time.time()
    code, _, err = cli("run", al_run)  # a finished run: no Ray start, one line
    assert code == 0 and time.time() - t0 < 5
    code, _, _ = cli("status", al_run, "--watch", "--interval", "0.1")  # returns: the run has all its rounds
    assert code == 0


def test_an_error_inside_an_actor_is_one_line(ray_cluster, tmp_path, cli):
    """A damaged checkpoint read by the trainer actor (scoring round 1 with round 0's model) reaches the user as
    the error table's one line, like a local error, not as Ray's remote traceback."""
    root = tmp_path / "bad"
    cfg = tiny_config("al")
    init_run(root, cfg)
    run(root, rounds=0, log=quiet, show_progress=False)
    ckpt = RunPaths(root).checkpoint(0)
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # truncated
    code, _, err = cli("run", root, "--rounds", "1", "--address", ray_cluster)
    assert code in (1, 2) and "Traceback" not in err and 'File "' not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(("error: ", "damaged: ", "check failed: ")), err[-1000:]
    assert str(ckpt) in err.strip().splitlines()[-1]
