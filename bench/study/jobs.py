"""Running the study: runs spread over worker processes (one Ray each, one torch thread each), in phases, each
finished run turned into its record (and committed with --commit); then the retrain jobs.

Phases: (1) the first arm's runs, the copied strategies first (`stratified_from`, `COPIES`) and the stratified
copies next (a copy waits for the record of its seed's source run, whose final allocation it copies); (2) once
every first-arm record is there, the training control and the transfer, then the other arms (whose `best` is the
first arm's best non-peer strategy).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np

from bench.study import records
from bench.study.protocol import copied_from, first_arm, jobs, run_config, run_dir


def commit(files: list[Path], message: str) -> None:
    """Commit just these files (other staged work is left alone); a busy index is retried."""
    root = Path(__file__).resolve().parents[2]
    for _ in range(30):
        add = subprocess.run(["git", "add", "--", *map(str, files)], cwd=root, capture_output=True, text=True)
        done = (
            add.returncode == 0
            and subprocess.run(
                ["git", "commit", "-q", "-m", message, "--", *map(str, files)], cwd=root, capture_output=True, text=True
            ).returncode
            == 0
        )
        if done:
            return
        time.sleep(2)
    print(f"warning: could not commit {files}", flush=True)


def do_runs(
    spec: dict, todo: list, out: Path, recs: Path, log, commit_records: bool, address: str | None = None
) -> None:
    """Run (or resume) the given runs in this process, on one local Ray (or the cluster at `address`), writing
    each one's record."""
    import torch

    from diffcurate.curate.cluster.session import ray_session
    from diffcurate.curate.loop.rundir import init_run
    from diffcurate.curate.loop.runner import run

    torch.set_num_threads(1)
    todo = [j for j in todo if not records.exists(recs, *j)]
    if not todo:
        return
    with ray_session(address, num_cpus=None if address else 2):
        for arm_name, name, seed in todo:
            root = run_dir(out, arm_name, name, seed)
            alloc = None
            source = copied_from(spec, name)
            if source:
                wait_for(recs, [(arm_name, source, seed)])
                alloc = records.allocation(recs, arm_name, source, seed)
            init_run(root, run_config(spec, spec["arms"][arm_name], name, seed, alloc))
            t0 = time.time()
            share_round0(spec, out, arm_name, name, seed, root, log)
            run(root, log=lambda s, r=root: log(f"{r.parent.name}/{r.name}: {s}"), show_progress=False)
            files = records.write_run(recs, root, arm_name, name, seed)
            if commit_records:
                commit(
                    [*files, recs / "test_set.json", recs / "test_set.npz"], f"Study record {arm_name}/{name}-s{seed}"
                )
            log(f"{arm_name}/{name}-s{seed} done in {time.time() - t0:.0f} s")


def share_round0(spec: dict, out: Path, arm: str, name: str, seed: int, root: Path, log) -> None:
    """Give a new run the round 0 of its (arm, seed): every strategy's round 0 is the same (the test split, the
    initial sets, the first model: one seed, no acquisition), so it is made once, in a template run directory
    with no acquisition rounds, and copied (store, checkpoint, state, record) into each run before it starts."""
    import fcntl
    import shutil

    from diffcurate.curate.loop.rundir import RunPaths, append_round, init_run, read_rounds
    from diffcurate.curate.loop.runner import run

    if read_rounds(root) or (root / "store").exists():
        return
    template = out / arm / f"round0-s{seed}"
    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.parent / f"round0-s{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker may be making it
        if not read_rounds(template):
            cfg = run_config(spec, spec["arms"][arm], "random", seed)
            cfg.rounds = 0
            init_run(template, cfg)
            run(template, rounds=0, log=lambda s: log(f"{arm}/round0-s{seed}: {s}"), show_progress=False)
    src, dst = RunPaths(template), RunPaths(root)
    shutil.copytree(src.store, dst.store)
    shutil.copytree(src.state(0), dst.state(0))
    dst.checkpoint(0).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.checkpoint(0), dst.checkpoint(0))
    record = read_rounds(template)[0]
    append_round(root, {**record, "strategy": run_config(spec, spec["arms"][arm], name, seed).acquisition.strategy})


def wait_for(recs: Path, todo: list) -> None:
    while not all(records.exists(recs, *j) for j in todo):
        time.sleep(10)


def missing(done: set[Path], recs: Path, todo: list) -> list:
    """The jobs of `todo` whose record was not in `done`, in order: what a shard deals out, so that a resumed study
    spreads its remaining work over every shard. `done` is the records there were when the shards started, before
    any of them landed one, so every shard deals from the same list."""
    return [j for j in todo if records.paths(recs, *j)[0] not in done]


def shard_main(spec: dict, i: int, n: int, out: Path, recs: Path, commit_records: bool, address: str | None) -> None:
    def log(s):
        print(f"[{i}] {s}", flush=True)

    done = set(recs.rglob("*.json"))
    first = first_arm(spec)
    all_first = [j for j in jobs(spec, None) if j[0] == first]
    do_runs(spec, missing(done, recs, all_first)[i::n], out, recs, log, commit_records, address)
    later = {k: v for k, v in spec["arms"].items() if k != first}
    if later or spec.get("transfer") or spec.get("control"):
        wait_for(recs, all_first)
        from bench.study.stats import best_strategy

        best = best_strategy(spec, recs)
        retrain_jobs(spec, recs, missing(done, recs, retrain_list(spec, best))[i::n], log, commit_records)
        phase3 = [j for j in jobs({**spec, "arms": later}, best)] if later else []
        do_runs(spec, missing(done, recs, phase3)[i::n], out, recs, log, commit_records, address)


def retrain_list(spec: dict, best: str | None) -> list[tuple[str, str, int]]:
    """(kind, strategy, seed): the control, then transfer (another model on the first arm's final sets)."""
    work = []
    for s in spec.get("control") or []:
        s = best if s == "best" else s
        work.append(("control", s, spec["arms"][first_arm(spec)]["seeds"][0]))
    tr = spec.get("transfer")
    if tr:
        for s in [best if x == "best" else x for x in tr["strategies"]]:
            work += [("transfer", s, seed) for seed in tr["seeds"]]
    return work


def retrain_jobs(spec: dict, recs: Path, todo: list, log, commit_records: bool) -> None:
    """The control and transfer retrains of `todo` (they need the first arm's records alone)."""
    for kind, s, seed in todo:
        if records.exists(recs, kind, s, seed):
            continue
        t0 = time.time()
        meta, per = retrain(spec, recs, kind, s, seed)
        meta["seconds"] = round(time.time() - t0, 1)
        files = records.write_retrain(recs, kind, s, seed, meta, per)
        if commit_records:
            commit(files, f"Study record {kind}/{s}-s{seed}")
        log(f"{kind} {s}-s{seed} done in {meta['seconds']:.0f} s")


def retrain(spec: dict, recs: Path, kind: str, name: str, seed: int) -> tuple[dict, np.ndarray]:
    """Train a fresh model on the final training set of a first-arm run (at the common final size) and test it
    like the runs do. transfer: the transfer arm's model; control: the run's own model with twice the maximum
    budget (epochs, max_steps and patience doubled)."""
    from dataclasses import replace

    import torch

    from diffcurate.curate.loop.config import RunConfig, default_config
    from diffcurate.curate.loop.rundir import round_train_config
    from diffcurate.model.data import dataset_from_configs
    from diffcurate.model.metrics import evaluate_model
    from diffcurate.model.nets import config_to_dict
    from diffcurate.model.train import train

    torch.set_num_threads(1)
    meta, arr = records.load(recs, first_arm(spec), name, seed)
    cfg = RunConfig.from_dict(meta["config"])
    ph = cfg.task
    keys = list(ph.problem.schema(ph.params))
    keep = arr["train_round"] <= spec["rounds"]  # random's set at the others' size
    sets = {}
    for split, mask in (("train", keep), ("val", slice(None))):
        c = ph.from_arrays({k: arr[f"{split}_{k}"][mask] for k in keys})
        sets[split] = dataset_from_configs(ph, c, ph.problem.solve(ph.params, c))
    n_train = len(sets["train"])
    tc = round_train_config(cfg, 0, n_train)
    if kind == "transfer":
        base = default_config(spec["preset"], spec["transfer"]["model"], problem=ph.name).model
        model = config_to_dict(replace(base, **spec["transfer"].get("model_config", {})))
    else:
        model = config_to_dict(cfg.model)
        tc = replace(tc, epochs=2 * tc.epochs, max_steps=2 * tc.max_steps, patience=2 * (tc.patience or 0) or None)
    res = train(model, tc, sets["train"], sets["val"], physics=ph, device="cpu")
    with np.load(recs / "test_set.npz") as z:  # the fixed test set, in the records' order
        test = ph.from_arrays({k: z[k] for k in keys})
    test_ds = dataset_from_configs(ph, test, ph.problem.solve(ph.params, test))
    _, per = evaluate_model(res.model, test_ds, "cpu", tc.transform)
    out = {
        "kind": kind,
        "strategy": name,
        "seed": seed,
        "n_train": n_train,
        "epochs": len(res.history),
        "best_epoch": res.best_epoch,
        "model": model["arch"],
        "train_config": tc.to_dict(),
    }
    return out, per
