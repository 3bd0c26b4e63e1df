"""Generation on real Ray actors into a real LMDB store: determinism, resume after kill -9, actor restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TINY

from diffcurate.common.errors import InputError
from diffcurate.curate.cluster.actors import make_solvers
from diffcurate.curate.cluster.generate import generate, solve_pending
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.solvers.problem import PRESETS, Physics
from diffcurate.solvers.sampling import sample_configs

SRC = PRESETS["tiny"].sources


def _contents(path) -> dict[str, np.ndarray]:
    with Store(path, readonly=True) as s:
        ids = sorted(s.ids())
        _, y, _ = s.get(ids)
    return dict(zip(ids, y, strict=True))


def test_same_seed_same_dataset_with_1_and_2_workers(ray_cluster, tmp_path):
    a = generate(tmp_path / "a", TINY, 60, seed=3, sources=SRC, workers=1, chunk=16, show_progress=False)
    b = generate(tmp_path / "b", TINY, 60, seed=3, sources=SRC, workers=2, chunk=16, show_progress=False)
    assert a.added == b.added == 60
    ca, cb = _contents(tmp_path / "a"), _contents(tmp_path / "b")
    assert list(ca) == list(cb)
    assert all(np.array_equal(ca[i], cb[i]) for i in ca)
    # a re-run after success adds nothing; another split of the same store keeps its own count
    again = generate(tmp_path / "a", TINY, 60, seed=3, sources=SRC, workers=2, show_progress=False)
    assert (again.added, again.present, again.solved) == (0, 60, 0)
    # that re-run was answered from the store's history (no Ray); a request not in it is planned, and the
    # plan finds its samples present (the first 50 of the same walk)
    fewer = generate(tmp_path / "a", TINY, 50, seed=3, sources=SRC, show_progress=False)
    assert (fewer.added, fewer.present, fewer.solved) == (0, 50, 0)
    val = generate(tmp_path / "a", TINY, 10, seed=4, sources=SRC, split="val", show_progress=False)
    with Store(tmp_path / "a", readonly=True) as s:
        assert (s.count("train"), s.count("val")) == (60, 10) and val.added == 10
        history = [(h["kind"], h["split"], h["seed"], h["count"], h["added"]) for h in s.history()]
        assert all(h["finished"].startswith(time.strftime("%Y-")) for h in s.history())  # stamped by Store.log
    assert history == [
        ("generate", "train", 3, 60, 60),
        ("generate", "train", 3, 50, 0),
        ("generate", "val", 4, 10, 10),
    ]


def test_exact_count_despite_repeated_configurations(ray_cluster, tmp_path):
    """One-source configurations on a small lattice repeat; the split still gets exactly N distinct samples."""
    ph = Physics(9, 2, 1.0, 0.25)  # 5x5 = 25 possible one-source centres, values all 1
    r = generate(tmp_path / "s", ph, 20, seed=0, sampler="uniform", sources=(1, 1), show_progress=False)
    with Store(tmp_path / "s", readonly=True) as s:
        assert s.count("train") == 20 == r.added
    cfg, _ = sample_configs("uniform", ph, 0, range(20), (1, 1))
    assert len({cfg.sample_id(s, ph) for s in range(20)}) < 20  # the first 20 indices alone held duplicates


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_generate_killed_or_interrupted_resumes_to_exact_count(ray_cluster, tmp_path, sig):
    """kill -9, Ctrl-C or SIGTERM (a scheduler's stop) mid-run, sent once the store holds committed samples: the
    store holds what was committed, and the same command completes it. Ctrl-C exits 130 and SIGTERM 143, with the
    one-line note and no traceback or Ray stack dump."""
    store = tmp_path / "k"
    cmd = [
        sys.executable,
        "-m",
        "diffcurate.curate",
        "generate",
        "--store",
        str(store),
        "--count",
        "3000",
        "--preset",
        "tiny",
        "--seed",
        "5",
        "--workers",
        "2",
        "--address",
        ray_cluster,
    ]
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 120
        n = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                with Store(store, readonly=True) as s:
                    n = s.count()
            except InputError:  # not created yet, or its metadata not yet committed
                continue
            if n >= 128:
                break
        assert proc.poll() is None, "generate finished before it could be killed"
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
    finally:  # never leave it running: its actors would hold the test cluster's CPUs
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    if sig in (signal.SIGINT, signal.SIGTERM):
        err = err_path.read_text()
        last = err.strip().splitlines()[-1]
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err[-2000:]
        assert last.startswith("interrupted: everything committed so far is kept")
        assert "Traceback" not in err and "SIGTERM received" not in err
        assert ".cc:" not in err  # no line of Ray's C++ core about the tasks the signal cut short
    else:
        assert proc.returncode == -signal.SIGKILL
    with Store(store, readonly=True) as s:
        partial = s.count()
        assert s.verify() == []
    assert 0 < partial < 3000
    r = generate(store, TINY, 3000, seed=5, sources=SRC, workers=2, show_progress=False)
    assert r.present == partial and r.added == 3000 - partial
    with Store(store, readonly=True) as s:
        assert s.count("train") == 3000 and s.verify() == []


def test_solver_actor_killed_mid_task_is_retried(ray_cluster, tmp_path):
    import ray

    cfg, fams = sample_configs("mixed", TINY, 9, range(256), SRC)
    chunks = [(cfg[i : i + 16], fams[i : i + 16]) for i in range(0, 256, 16)]
    solvers = make_solvers("diffusion", TINY, 2)
    victim = ray.get(solvers[0].pid.remote())
    killed = []

    def advance(n):
        if not killed:  # after the first result, with more calls in flight on both actors
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    with Store.create(tmp_path / "r", TINY) as store:
        added = solve_pending(store, chunks, solvers, advance, "train")
        distinct = len({cfg.sample_id(s, TINY) for s in range(len(cfg))})  # tiny repeats a few 1-source configs
        assert added == distinct == store.count() and distinct > 250
    assert killed and ray.get(solvers[0].pid.remote()) != victim  # restarted in a new process
    for a in solvers:
        ray.kill(a)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--count", "0"], "--count"),
        (["--count", "5", "--split", "holdout"], "unknown split"),
        (["--count", "5", "--sampler", "nope"], "unknown sampler"),
        (["--count", "5", "--preset", "huge"], "unknown preset"),
    ],
)
def test_generate_bad_input_exit_2(cli, tmp_path, args, msg):
    code, out, err = cli("generate", "--store", tmp_path / "s", "--preset", "tiny", *args)
    assert code == 2 and msg in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_generate_into_store_of_other_physics_is_refused(cli, ray_cluster, tmp_path):
    generate(tmp_path / "s", TINY, 5, seed=0, sources=SRC, show_progress=False)
    code, _, err = cli("generate", "--store", tmp_path / "s", "--count", "5", "--preset", "small")
    assert code == 2 and "other physics" in err
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = cli("generate", "--store", f, "--count", "5", "--preset", "tiny")
    assert code == 2 and "error" in err


def test_generate_asking_for_gpus_the_cluster_lacks_is_refused(cli, ray_cluster, tmp_path):
    """Ray would keep solver actors that need a missing GPU pending forever: refused, and no store is made."""
    code, _, err = cli("generate", "--store", tmp_path / "s", "--count", "5", "--preset", "tiny", "--gpus", "1")
    assert code == 2 and "need 1 GPUs; the cluster has 0" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
