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

import tempfile
from dataclasses import dataclass
from pathlib import Path

from diffcurate.solvers.errors import InputError


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


def check_placeable(workers: Workers, copies: int = 1) -> None:
    """Refuse, before any work, `copies` x N workers that the cluster's free resources cannot hold now: Ray Train
    would wait for them forever. Call it after the run's own actors are placed."""
    import ray

    free = ray.available_resources()
    for key, each in workers.per_worker().items():
        need = each * workers.n * copies
        if need > free.get(key, 0.0) + 1e-9:
            raise InputError(
                f"{workers.n * copies} training workers x {each:g} {key} need {need:g} {key}; the cluster has "
                f"{free.get(key, 0.0):g} {key} free (of {ray.cluster_resources().get(key, 0.0):g})"
            )


class _Mailbox:
    """Holds what rank 0 sends back (the checkpoint's bytes and the history) until the caller takes it."""

    def __init__(self):
        self.item = None

    def put(self, item) -> None:
        self.item = item

    def take(self):
        return self.item


def fit(
    job: dict,
    workers: Workers,
    local_node: str,
) -> dict:
    """Train `job` (model, train, physics, train_set and val_set as object refs of datasets or `Solved`, init_from,
    out_dir, run) on `workers` with Ray Train; returns what `_Trainer.fit` returns (checkpoint bytes, history,
    summary). Rank 0 writes its files into job["out_dir"] only when it runs on `local_node` (the caller's)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    mailbox = ray.remote(num_cpus=0)(_Mailbox).remote()
    scaling = ScalingConfig(
        num_workers=workers.n,
        use_gpu=workers.gpus > 0,
        resources_per_worker=workers.per_worker(),
    )
    config = {"job": job, "threads": workers.threads, "mailbox": mailbox, "local_node": local_node}
    with tempfile.TemporaryDirectory(prefix="diffcurate-train-") as storage:
        trainer = TorchTrainer(
            _worker,
            train_loop_config=config,
            scaling_config=scaling,
            run_config=RunConfig(storage_path=storage, name="fit"),
        )
        trainer.fit()
    out = ray.get(mailbox.take.remote())
    ray.kill(mailbox)
    if out is None:
        raise RuntimeError("data-parallel training ended without rank 0's result")
    return out


def _worker(config: dict) -> None:
    """One Ray Train worker: its shard of every batch; rank 0 also validates, writes and mails the result."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from diffcurate.curate.cluster.actors import as_dataset, epoch_reporter, fit_summary
    from diffcurate.model.train import Shard, train

    ctx = ray.train.get_context()
    shard = Shard(ctx.get_world_rank(), ctx.get_world_size())
    job = config["job"]
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    train_set, val_set = (as_dataset(job["physics"], d) for d in ray.get([job["train_set"], job["val_set"]]))
    here = ray.get_runtime_context().get_node_id() == config["local_node"]
    with tempfile.TemporaryDirectory(prefix="diffcurate-fit-") as tmp:
        out_dir = (job["out_dir"] if here and job.get("out_dir") else tmp) if shard.lead else None
        res = train(
            job["model"],
            job["train"],
            train_set,
            val_set,
            out_dir,
            physics=job["physics"],
            device=device,
            init_from=job.get("init_from"),
            callback=epoch_reporter(job.get("run", ""), job.get("progress")) if shard.lead else None,
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
    """`curate train --workers N`: train on N Ray Train workers of a local cluster (or the running one) that share
    its CPUs, each with one GPU when the device is a GPU and the cluster has N. The sets are read into memory here
    and travel as Ray objects; rank 0 writes out_dir/best.pt (and last.pt, train.jsonl) as `train` does.
    Returns the fit summary (`fit_summary`, without the bytes) with the path of best.pt."""
    import ray

    from diffcurate.curate.cluster.actors import make_counter, ray_session
    from diffcurate.model.checkpoint import Blob
    from diffcurate.model.data import as_arrays
    from diffcurate.model.train import BEST, max_epochs

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--workers trains on cpu or cuda (auto: cuda when the cluster has {n} GPUs), not {device}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    with ray_session():
        res = ray.cluster_resources()
        gpus = 1.0 if device != "cpu" and res.get("GPU", 0) >= n else 0.0
        if device == "cuda" and not gpus:
            raise InputError(f"--workers {n} --device cuda needs {n} GPUs; the cluster has {res.get('GPU', 0):g}")
        workers = Workers(n, cpus=res.get("CPU", 1.0) / n, gpus=gpus)
        check_placeable(workers)
        job = dict(
            model=model_config,
            train=train_config,
            physics=physics,
            train_set=ray.put(as_arrays(train_set)),
            val_set=ray.put(as_arrays(val_set)),
            init_from=Blob.of(init_from) if init_from is not None else None,
            out_dir=str(out_dir),
            progress=make_counter(),
        )
        ref = ray.remote(num_cpus=0)(fit).remote(job, workers, ray.get_runtime_context().get_node_id())
        epochs = max_epochs(train_config, len(train_set))
        out = wait_showing_epochs([ref], job["progress"], epochs, f"training on {n} workers", progress)[0]
    out.pop("checkpoint")
    return {**out, "checkpoint": str(out_dir / BEST), "workers": n}
