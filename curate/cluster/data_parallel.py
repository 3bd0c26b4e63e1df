"""One model on N workers: data-parallel training with Ray Train (a `TorchTrainer`, DDP over gloo on CPUs and
NCCL on GPUs), for `curate run --train-workers N` and `curate train --workers N`.

Each worker runs the ordinary trainer (`model.train.train`) with its `Shard`: the same global batches in the same
order, each rank training on its rows, with the global batch's loss and BatchNorm statistics, so the result does
not depend on N beyond floating point. The data come as Ray objects (`Solved` or in-memory
datasets), never from the store. Rank 0 validates, decides the stop, and hands the best weights' bytes and the
history back through a mailbox actor: no reported Ray Train checkpoint, so no `storage_path` is needed on any
number of nodes, and the driver writes the checkpoint into the run directory as it does for a trainer actor.
Data-parallel training restarts its round after a kill (round granularity); one process resumes its epochs.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from diffcurate.common.errors import InputError


@dataclass(frozen=True)
class Workers:
    """How many Ray Train workers and what each holds; `threads` torch threads per CPU worker."""

    n: int
    cpus: float = 1.0
    gpus: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()  # custom Ray resources each worker asks for

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))

    def per_worker(self) -> dict[str, float]:
        res = {"CPU": self.cpus, **dict(self.resources)}
        if self.gpus:
            res["GPU"] = self.gpus
        return res


PLACEMENT_TIMEOUT = 30.0  # seconds the cluster gets to hold the workers before the request is refused
MIN_WORKER_CPUS = 0.5  # the smallest CPU share a training worker of `curate run` is given: two per core at most


def check_placeable(workers: Workers, copies: int = 1) -> None:
    """Refuse, before any work, `copies` x N workers that the cluster cannot hold now besides what already runs
    (Ray Train would wait for them forever): at once when its free resources fall short in total, else when a
    placement group of the workers' bundles (the scheduler's own answer, node by node) is not ready in
    `PLACEMENT_TIMEOUT` s. Call it after the run's own actors are placed."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    free, total = ray.available_resources(), ray.cluster_resources()
    n = workers.n * copies
    for key, each in workers.per_worker().items():
        if each * n > free.get(key, 0.0) + 1e-9:
            raise InputError(
                f"{n} training workers x {each:g} {key} need {each * n:g} {key}; the cluster has "
                f"{free.get(key, 0.0):g} {key} free (of {total.get(key, 0.0):g})"
            )
    group = placement_group([workers.per_worker()] * n, strategy="PACK")
    try:
        ready = group.wait(timeout_seconds=PLACEMENT_TIMEOUT)
    finally:
        remove_placement_group(group)
    if not ready:
        raise InputError(
            f"{n} training workers x {workers.per_worker()} do not fit on the cluster's nodes within "
            f"{PLACEMENT_TIMEOUT:g} s (free in total: {free})"
        )


def share(amount: float, n: int) -> float:
    """amount / n, rounded down to Ray's resource granularity (1e-4), so that n shares fit in amount."""
    return math.floor(amount / n * 1e4) / 1e4


class _Mailbox:
    """Holds what rank 0 sends back (the checkpoint's bytes and the history) until the caller takes it."""

    def __init__(self):
        self.item = None

    def put(self, item) -> None:
        self.item = item

    def take(self):
        return self.item


def fit(job, workers: Workers) -> dict:
    """Train a `FitJob` on `workers` with Ray Train; returns what `_Trainer.fit` returns (checkpoint bytes, history,
    summary). Rank 0 works in job.work_dir only when it runs on job.driver_node (and job.work_dir is set)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    mailbox = ray.remote(num_cpus=0)(_Mailbox).remote()
    scaling = ScalingConfig(
        num_workers=workers.n,
        use_gpu=workers.gpus > 0,
        resources_per_worker=workers.per_worker(),
    )
    init = ray.put(job.init_from)  # the weights travel once, not inside the config
    config = {"job": replace(job, init_from=None), "init_from": init, "threads": workers.threads, "mailbox": mailbox}
    try:
        with tempfile.TemporaryDirectory(prefix="diffcurate-train-") as storage:
            trainer = TorchTrainer(
                _worker,
                train_loop_config=config,
                scaling_config=scaling,
                run_config=RunConfig(storage_path=storage, name="fit"),
            )
            try:
                with sigint_kept():
                    trainer.fit()
            except Exception as e:  # a worker's own error (bad input, say), not Ray Train's wrapper of it
                failures = getattr(e, "worker_failures", None) or {}
                raise next(iter(failures.values()), e) from None
        out = ray.get(mailbox.take.remote())
    finally:
        ray.kill(mailbox)
    if out is None:
        raise RuntimeError("data-parallel training ended without rank 0's result")
    return out


def fit_remote(job, workers: Workers):
    """`fit` as a Ray task (a ref to its result), so that the driver shows progress meanwhile."""
    import ray

    return ray.remote(num_cpus=0)(fit).remote(job, workers)


@contextlib.contextmanager
def sigint_kept() -> Iterator[None]:
    """The SIGINT handler as it was before the block. `TorchTrainer.fit` installs one that holds its controller
    actor's handle and never removes it: the controller, and the actors it owns, would live on, idle and holding
    memory, for as long as the process does (a Ray task's process is kept for reuse)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _worker(config: dict) -> None:
    """One Ray Train worker: its shard of every batch; rank 0 also validates, writes and mails the result."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from diffcurate.curate.cluster.actors import as_dataset, epoch_reporter, fit_summary
    from diffcurate.model.parallel import Shard
    from diffcurate.model.train import train

    ctx = ray.train.get_context()
    shard = Shard(ctx.get_world_rank(), ctx.get_world_size())
    job = config["job"]
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    tr, va = ray.get([job.train_set, job.val_set])
    train_set, val_set = as_dataset(job.task, tr, regions=False), as_dataset(job.task, va)
    here = ray.get_runtime_context().get_node_id() == job.driver_node
    with tempfile.TemporaryDirectory(prefix="diffcurate-fit-") as tmp:
        out_dir = (job.work_dir if here and job.work_dir else tmp) if shard.lead else None
        res = train(
            job.model,
            job.train,
            train_set,
            val_set,
            out_dir,
            physics=job.task,
            device=device,
            init_from=ray.get(config["init_from"]),
            callbacks=[epoch_reporter(job.run, job.progress)] if shard.lead else [],
            shard=shard,
            num_workers=0,
        )
        if shard.lead:
            ray.get(config["mailbox"].put.remote(fit_summary(res, len(train_set), str(device))))


def wait_showing_epochs(refs: list, counter, epochs: int, description: str, show: bool = True) -> list:
    """ray.get(refs), advancing an epoch bar from the `EpochCounter` the training reports to, on whatever node it
    runs."""
    import ray

    from diffcurate.curate.progress import progress_bar

    if not show:
        return ray.get(refs)
    with progress_bar(epochs, description, unit="epochs") as advance:
        seen = 0
        while True:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
            done = ray.get(counter.count.remote())
            if done > seen:
                advance(done - seen)
                seen = done
            if len(ready) == len(refs):
                return ray.get(refs)


def train_on_workers(
    model_config,
    train_config,
    train_set,
    val_set,
    out_dir: Path,
    physics,
    n: int,
    device: str = "auto",
    init_from=None,
    progress: bool = True,
) -> dict:
    """`curate train --workers N`: train on N Ray Train workers of a local cluster (or the running one), each with
    an equal share (at least one CPU) of its free CPUs, or one GPU each when the device allows and the cluster has
    N free. The sets are read into memory here and travel as Ray objects. Returns the fit summary (`fit_summary`:
    the best weights' bytes and the history, which the caller writes, since rank 0 may have run elsewhere)."""
    import ray

    from diffcurate.curate.cluster.actors import FitJob, make_counter
    from diffcurate.curate.cluster.session import ray_session
    from diffcurate.model.checkpoint import Blob
    from diffcurate.model.data import as_arrays
    from diffcurate.model.nets import config_from_dict
    from diffcurate.model.train import check_run, max_epochs
    from diffcurate.solvers.plugins import as_task

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--workers trains on cpu or cuda (auto: cuda when the cluster has {n} GPUs), not {device}")
    model_cfg = config_from_dict(model_config) if isinstance(model_config, dict) else model_config
    task = as_task(physics)
    check_run(model_cfg, train_config, task, train_set)  # the refusals of one process, here, before any worker starts
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with ray_session():
        res, free = ray.cluster_resources(), ray.available_resources()
        gpus = 1.0 if device != "cpu" and free.get("GPU", 0) >= n else 0.0
        if device == "cuda" and not gpus:
            raise InputError(f"--workers {n} --device cuda needs {n} free GPUs; the cluster has {free.get('GPU', 0):g}")
        cpus = share(free.get("CPU", 0.0), n)
        if cpus < 1 and not gpus:
            raise InputError(
                f"{n} training workers need at least one CPU each; the cluster has {free.get('CPU', 0.0):g} CPU free "
                f"(of {res.get('CPU', 0.0):g})"
            )
        workers = Workers(n, cpus=cpus, gpus=gpus)
        check_placeable(workers)
        job = FitJob(
            train_set=ray.put(as_arrays(train_set)),
            val_set=ray.put(as_arrays(val_set)),
            model=model_config,
            train=train_config,
            task=task,
            work_dir="",  # rank 0 works in a temp dir; the caller writes what it mails back
            driver_node=ray.get_runtime_context().get_node_id(),
            init_from=Blob.of(init_from) if init_from is not None else None,
            progress=make_counter(),
        )
        try:
            ref = fit_remote(job, workers)
            epochs = max_epochs(train_config, len(train_set))
            out = wait_showing_epochs([ref], job.progress, epochs, f"training on {n} workers", progress)[0]
        finally:
            ray.kill(job.progress)
    return {**out, "workers": n}
