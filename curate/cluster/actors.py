"""Ray, done once: cluster connection and the actors that the generator and the curation loop share.

* `_Generator` turns (sampler, seed, index range) into configurations and their stable ids.
* `_Solver` solves batches with the run's problem (`Problem.solve`) on its own CPU share (or its GPU when given one).
* `_Trainer` trains the surrogate on the store each round (`FitJob`), evaluates it, scores candidates (`ScoreJob`)
  and embeds them.

Calls carry the typed objects (the problem's parameters and batches, the model and train configs, job
dataclasses). Actors restart after a crash and their calls are retried (`max_restarts`, `max_task_retries`); that is safe because they are pure
functions of their inputs, and only the driver writes to the store (deduplicated by id). Objects that cross the
cluster are small: configurations in, fields and scores out, never models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.solvers.interface import Batch, Task
from diffcurate.solvers.plugins import get_problem

if TYPE_CHECKING:
    from diffcurate.model.checkpoint import Blob
    from diffcurate.model.nets import EDCNNConfig, UNetConfig
    from diffcurate.model.train import TrainConfig

RESTARTS = 3


def draw_configs(
    problem: str, params, sampler: str, seed: int, start: int, stop: int, strata: tuple[int, int]
) -> tuple[Batch, list[str], list[str]]:
    """(configurations, families, ids) of indices [start, stop) of (sampler, seed) of the named problem."""
    p = get_problem(problem)
    cfg, families = p.sample(params, sampler, seed, range(start, stop), tuple(strata))
    return cfg, list(families), p.sample_ids(params, cfg)


class _Actor:
    def node(self) -> str:
        """The id of the Ray node this actor runs on (state/actors.json)."""
        import ray

        return ray.get_runtime_context().get_node_id()


class _Generator(_Actor):
    """Configurations for index ranges of (sampler, seed): cheap, pure, reproducible."""

    def __init__(self, problem: str, physics):
        self.problem, self.physics = problem, physics

    def configs(self, sampler: str, seed: int, start: int, stop: int, strata: tuple[int, int]):
        return draw_configs(self.problem, self.physics, sampler, seed, start, stop, strata)


class _Solver(_Actor):
    """Solves batches of configurations; one torch/FFT thread per CPU it was given."""

    def __init__(self, problem: str, physics, device: str = "cpu", threads: int = 1):
        from diffcurate.curate.store.heap import keep_freed_pages
        from diffcurate.solvers.threads import set_threads

        keep_freed_pages()  # FFT work arrays are allocated and freed on every solve
        set_threads(threads)
        self.problem, self.physics, self.device = get_problem(problem), physics, device
        # one configuration while the actor starts: the problem's solver is imported and whatever it builds once
        # per parameters (tables, FFT plans) is built, so the first real call is as fast as the rest
        try:
            warm, _ = self.problem.sample(physics, next(iter(self.problem.samplers())), 0, [0])
            self.solve(warm)
        except Exception:  # a faulty problem: its first real call fails as a task, which the driver reports in one
            pass  # line (an actor that fails to start would be a dead actor, reported as such)

    def solve(self, configs: Batch) -> np.ndarray:
        """(n, H, W) float32 fields of the configurations (the problem's one output channel)."""
        return self.problem.solve(self.physics, configs, self.device)[:, 0]

    def solve_timed(self, configs: Batch):
        """(fields, start, end): wall-clock times for the run's timeline."""
        import time

        t0 = time.time()
        y = self.solve(configs)
        return y, t0, time.time()

    def pid(self) -> int:
        return os.getpid()


def _remote(cls, num_cpus: float, num_gpus: float, resources: dict | None):
    """The actor class with its resources (custom ones from `ray.actor_resources`) and restarts."""
    import ray

    return ray.remote(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources or None,
        max_restarts=RESTARTS,
        max_task_retries=RESTARTS,
    )(cls)


def make_generators(problem: str, physics, n: int = 1, num_cpus: float = 0.0, resources: dict | None = None) -> list:
    """Generators need no CPU reservation: drawing configurations costs microseconds. `resources`: custom Ray
    resources each actor asks for (every make_*: actors then run only on nodes that offer them)."""
    cls = _remote(_Generator, num_cpus, 0.0, resources)
    return [cls.remote(problem, physics) for _ in range(n)]


def make_solvers(
    problem: str,
    physics,
    n: int,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    resources: dict | None = None,
) -> list:
    """n solver actors; with num_gpus > 0 each solves on its GPU. Asking for more actors than the cluster has
    CPUs gives each a fractional share (otherwise the extra actors would never be scheduled)."""
    import ray

    res = ray.cluster_resources()
    if num_gpus > 0 and n * num_gpus > res.get("GPU", 0):  # Ray would keep such actors pending forever
        raise InputError(
            f"{n} solver actors with {num_gpus:g} GPU each need {n * num_gpus:g} GPUs; the cluster has "
            f"{res.get('GPU', 0):g}"
        )
    num_cpus = min(num_cpus, res.get("CPU", 1.0) / n)
    cls = _remote(_Solver, num_cpus, num_gpus, resources)
    device = "cuda" if num_gpus > 0 else "cpu"
    threads = max(1, int(num_cpus))
    return [cls.remote(problem, physics, device, threads) for _ in range(n)]


@dataclass(frozen=True)
class Solved:
    """Solved samples as arrays, for an actor that must not open the store: the configurations and y, from which
    the actor encodes x and takes the regions itself (half the bytes of shipping x as well)."""

    configs: object  # the problem's batch
    y: np.ndarray  # (n, H, W) float32
    samplers: tuple[str, ...] = ()  # each sample's sampler family (the test split: held-out families apart)
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FitJob:
    """One training of a round: the training and validation sets (object refs to `Solved`, put once per round),
    the model, training and task (problem and parameters) to train with, where to work and the node that may work there, and the
    previous weights to warm-start from; `run` tags the gauges. The trainer returns the best weights' bytes, and
    the driver writes them: no actor writes the run directory of another node."""

    train_set: object  # ray.ObjectRef[Solved]
    val_set: object  # ray.ObjectRef[Solved]
    model: EDCNNConfig | UNetConfig
    train: TrainConfig
    task: Task
    work_dir: str  # resumable epoch by epoch when the trainer runs on `driver_node`; elsewhere a local temp dir
    driver_node: str
    init_from: Blob | None = None
    run: str = ""
    progress: object | None = None  # an `EpochCounter` actor the driver reads its epoch bar from


@dataclass(frozen=True)
class ScoreJob:
    """True-error scores of solved candidates with a checkpoint: per-sample MAE, the problem's first region
    weighted."""

    ckpt: Blob
    task: Task
    configs: object  # the problem's batch
    y: np.ndarray  # (n, H, W) float32: the candidates' solved fields
    sources_weight: float  # the run's acquisition.sources_weight


class _Trainer(_Actor):
    """Owns the surrogate: trains it each round, evaluates it on the test split, scores and embeds candidates.

    It never opens the store or reads the run directory of another node: the driver sends the samples (`Solved`,
    through the object store, once per round) and checkpoints as bytes (`Blob`), and writes what comes back."""

    def __init__(self, threads: int = 0, device: str = "auto"):
        import torch

        from diffcurate.common.device import resolve_device

        if threads:
            torch.set_num_threads(threads)
        self.device = str(resolve_device(device))
        self._cache: tuple[str, object, dict] | None = None
        self._test: tuple[tuple, dict] | None = None  # the test split's datasets, kept across rounds

    def _model(self, ckpt: Blob):
        from diffcurate.model.checkpoint import load_checkpoint

        if self._cache is None or self._cache[0] != ckpt.key:
            net, meta = load_checkpoint(ckpt, device=self.device)
            self._cache = (ckpt.key, net, meta)
        return self._cache[1], self._cache[2]

    def fit(self, job: FitJob) -> dict:
        """Train (resuming job.work_dir/last.pt if a killed run left one there) and return the best weights'
        bytes (`checkpoint`) with the fit summary and the epochs' records (`history`)."""
        import tempfile

        import ray

        from diffcurate.model.train import train

        tr, va = ray.get([job.train_set, job.val_set])
        train_set, val_set = as_dataset(job.task, tr, regions=False), as_dataset(job.task, va)
        local = self.node() == job.driver_node
        with tempfile.TemporaryDirectory(prefix="diffcurate-fit-") as tmp:
            res = train(
                job.model,
                job.train,
                train_set,
                val_set,
                job.work_dir if local else tmp,
                physics=job.task,
                device=self.device,
                resume=True,
                init_from=job.init_from,
                callbacks=[epoch_reporter(job.run, job.progress)],
            )
            return fit_summary(res, len(train_set), self.device)

    def evaluate(self, test: Solved, ckpt: Blob, task: Task, held_out: tuple[str, ...] = ()) -> dict:
        """Test-split metrics (evaluate schema) and each test sample's error, for reports. Test samples of the
        `held_out` sampler families are reported apart, as `held_out`, and left out of `test`."""
        from diffcurate.model.checkpoint import transform_of
        from diffcurate.model.data import dataset_from_configs
        from diffcurate.model.metrics import evaluate_model

        net, meta = self._model(ckpt)
        out = {"ids": list(test.ids), "sampler": list(test.samplers)}
        apart = np.array([s in held_out for s in test.samplers], bool)
        parts = {"test": np.nonzero(~apart)[0], "held_out": np.nonzero(apart)[0]}
        # the split's datasets (x encoded, regions taken) once per run: the split is fixed, only the model changes
        key = (task.name, task.fingerprint(), tuple(test.ids), tuple(held_out))
        if self._test is None or self._test[0] != key:
            sets = {
                k: dataset_from_configs(task, test.configs[r], test.y[r])
                for k, r in parts.items()
                if len(r) or k == "test"
            }
            self._test = (key, sets)
        per_sample = np.zeros(len(test.ids))
        for k, rows in parts.items():
            if len(rows) or k == "test":
                metrics, err = evaluate_model(net, self._test[1][k], self.device, transform_of(meta))
                out[k] = metrics
                per_sample[rows] = err
        out["per_sample"] = per_sample.tolist()
        return out

    def score(self, job: ScoreJob) -> np.ndarray:
        """(n,) true-error scores of solved candidates: weighted per-sample MAE of the model's prediction."""
        import torch

        from diffcurate.model.checkpoint import transform_of
        from diffcurate.model.inference import predict
        from diffcurate.model.metrics import per_sample_weighted_mae

        net, meta = self._model(job.ckpt)
        task, cfg = job.task, job.configs
        y = np.asarray(job.y, np.float32)[:, None]  # (n, 1, H, W)
        pred = predict(net, task.encode(cfg), transform_of(meta), self.device)  # (n, C_out, H, W)
        regions = list(task.regions(cfg, y).values())
        first = regions[0] if regions else np.zeros((len(y), *y.shape[2:]), bool)  # (n, H, W)
        s = per_sample_weighted_mae(
            torch.from_numpy(pred), torch.from_numpy(y), torch.from_numpy(first), job.sources_weight
        )
        return s.numpy()

    def embed(self, ckpt: Blob, task: Task, configs, train) -> tuple[np.ndarray, np.ndarray]:
        """Bottleneck features of the candidates (n, D) and of the training set (m, D)."""
        from diffcurate.model.inference import embed

        net, _ = self._model(ckpt)
        return embed(net, task.encode(configs), self.device), embed(net, task.encode(train), self.device)


def make_trainers(
    n: int = 1, num_cpus: float = 1.0, num_gpus: float = -1.0, threads: int = 0, resources: dict | None = None
) -> list:
    """n trainer actors (the surrogate and n-1 ensemble members). num_gpus=-1: one GPU each when the cluster has
    n GPUs, an equal share of its GPUs when it has fewer, else CPU. CPUs are shared like the solvers' (an actor
    that asks for more than its share would never be scheduled); with several trainers on CPU and threads=0 each
    gets one torch thread per CPU it holds, so they do not oversubscribe the node."""
    import ray

    res = ray.cluster_resources()
    if num_gpus < 0:
        num_gpus = min(1.0, res.get("GPU", 0) / n)
    num_cpus = min(num_cpus, res.get("CPU", 1.0) / n)
    if n > 1 and not threads and num_gpus == 0:
        threads = max(1, int(num_cpus))
    cls = _remote(_Trainer, num_cpus, num_gpus, resources)
    return [cls.remote(threads, "cuda" if num_gpus > 0 else "cpu") for _ in range(n)]


def as_dataset(task, data, regions: bool = True):
    """A dataset from what travels: `Solved` (x and, with `regions`, the metric regions made here) or a dataset
    as it is. A training set needs no regions (only evaluation pools by region)."""
    from diffcurate.model.data import dataset_from_configs

    if hasattr(data, "configs") and hasattr(data, "y"):
        return dataset_from_configs(task, data.configs, data.y, regions)
    return data


def fit_summary(res, n_train: int, device: str) -> dict:
    """A fit's result as the driver takes it: the best weights' bytes, the epochs' records and the summary."""
    rates = [h["train_samples_per_s"] for h in res.history if "train_samples_per_s" in h]
    return {
        "epochs": len(res.history),
        "best_epoch": res.best_epoch,
        "best_val": res.best_val,  # val MAE (train loss without a val set) of the best epoch
        "train_size": n_train,
        "train_samples_per_s": float(np.mean(rates)) if rates else None,
        "device": device,
        "checkpoint": Path(res.checkpoint).read_bytes(),
        "history": res.history,
    }


_GAUGES: dict = {}


def epoch_reporter(run: str, counter=None):
    """A training callback: the epoch and loss as gauges of `run`, and the epoch to the driver's `EpochCounter`
    (awaited, so that the count is complete when the training returns; wherever the trainer runs, the driver's
    epoch bar follows it)."""

    from diffcurate.model.callbacks import EachEpoch

    def report(epoch: int, record: dict) -> None:
        import ray

        set_gauge("trainer_epoch", epoch, run)
        set_gauge("trainer_loss", record["loss"], run)
        if counter is not None:
            ray.get(counter.epoch.remote(epoch))

    return EachEpoch(report)


class EpochCounter:
    """Epochs a training has finished, told by the trainer (`epoch_reporter`) and read by the driver's bar."""

    def __init__(self):
        self.done = 0

    def epoch(self, epoch: int) -> None:
        self.done = max(self.done, epoch + 1)

    def count(self) -> int:
        return self.done


def make_counter():
    import ray

    return ray.remote(num_cpus=0)(EpochCounter).remote()


def set_gauge(name: str, value: float, run: str, sources: str = "all") -> None:
    """A ray.util.metrics gauge `diffcurate_<name>` (shown in the dashboard's metrics / Prometheus)."""
    from ray.util.metrics import Gauge

    if name not in _GAUGES:
        _GAUGES[name] = Gauge(f"diffcurate_{name}", description=name.replace("_", " "), tag_keys=("run", "sources"))
    _GAUGES[name].set(float(value), tags={"run": run or "-", "sources": str(sources)})
