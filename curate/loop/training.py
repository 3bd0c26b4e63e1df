"""The steps of a round that make and judge the training set (round 0's sets, train, evaluate): functions of the
round's context and k (`RunContext`), as the acquisition steps are."""

from __future__ import annotations

import json

from diffcurate.common.files import atomic_bytes, atomic_json, atomic_text
from diffcurate.curate.cluster.actors import FitJob, make_counter
from diffcurate.curate.loop.context import RunContext
from diffcurate.curate.loop.health import run_identity
from diffcurate.curate.loop.rundir import initial_requests, round_train_config
from diffcurate.curate.store.lmdbstore import Store


def initial_sets(c: RunContext, k: int) -> None:
    """meta.json of round 0: the test splits, then the initial train and val sets (solves and redraws)."""
    from diffcurate.curate.cluster.generate import fill

    cfg = c.cfg
    with Store.create(
        c.paths.store, c.physics, preset=cfg.preset, command="curate init", run=run_identity(cfg), problem=cfg.problem
    ) as st:
        made = fill(st, initial_requests(cfg), c.gens, c.solvers, c.show_progress)
    atomic_json(c.paths.round(k).meta, {**made, "added_by_sources": {}, "added": 0})


def fit(c: RunContext, k: int) -> None:
    """fit.json: all trainers at once: member m trains with its own seed in its own work dir (resumable),
    warm-started from its own previous-round weights, so the members stay independent (an ensemble, not M
    copies)."""
    import ray

    from diffcurate.curate.cluster import data_parallel
    from diffcurate.model.checkpoint import Blob
    from diffcurate.model.train import max_epochs

    cfg, files = c.cfg, c.paths.round(k)
    train_set = c.solved("train")
    n_train = len(train_set.y)
    train_ref, val_ref = ray.put(train_set), ray.put(c.solved("val"))  # once per round
    driver = ray.get_runtime_context().get_node_id()
    counter = make_counter()  # the surrogate's epochs, for the driver's bar
    refs = []
    for m, tr in enumerate(c.trainers):
        prev = c.paths.member(k - 1, m) if k > 0 else None
        init = Blob.of(prev) if prev is not None and cfg.warm_start and prev.is_file() else None
        job = FitJob(
            train_set=train_ref,
            val_set=val_ref,
            model=cfg.model,
            train=round_train_config(cfg, m, n_train),
            task=c.task,
            work_dir=str(files.train(m)),
            driver_node=driver,
            init_from=init,
            run=c.root.name,
            progress=counter if m == 0 else None,
        )
        if c.train_workers is None:
            refs.append(tr.fit.remote(job))
        else:  # a task starts the Ray Train run, so that the bar shows progress meanwhile; it restarts its round
            refs.append(data_parallel.fit_remote(job, c.train_workers))
    epochs = max_epochs(round_train_config(cfg, 0, n_train), max(1, n_train))
    try:
        results = data_parallel.wait_showing_epochs(refs, counter, epochs, f"round {k}: training", c.show_progress)
    finally:
        ray.kill(counter)
    for m, r in enumerate(results):  # the driver writes what the trainers return
        atomic_bytes(c.paths.member(k, m), r.pop("checkpoint"))
        history = r.pop("history")
        if not files.train_log(m).exists():  # the trainer ran on another node: its log comes back with it
            atomic_text(files.train_log(m), "".join(json.dumps(h) + "\n" for h in history))
    first, *members = results
    extra = {"members": [{"member": m, **r} for m, r in enumerate(members, 1)]} if members else {}
    atomic_json(files.fit, {**first, **extra})


def trained_line(c: RunContext, k: int) -> str:
    """What the train step says once it has run."""
    return f"round {k}: trained ({json.loads(c.paths.round(k).fit.read_text())['epochs']} epochs)"


def evaluate(c: RunContext, k: int) -> None:
    """eval.json: the surrogate's test metrics (and each member's, on its own trainer, when there are several)."""
    import ray

    from diffcurate.model.checkpoint import Blob

    held, test = tuple(c.cfg.data.held_out_families), c.test_set()
    refs = [tr.evaluate.remote(test, Blob.of(c.paths.member(k, m)), c.task, held) for m, tr in enumerate(c.trainers)]
    first, *members = ray.get(refs)
    if members:
        first["members"] = [{"member": m, "test": r["test"]} for m, r in enumerate(members, 1)]
    atomic_json(c.paths.round(k).eval, first)
