"""Ray, done once: cluster connection and the actors that the generator and the curation loop share.

* `ray_session` starts a local cluster (dashboard bound to 127.0.0.1, or none) or joins one with --address.
* `GeneratorActor` turns (sampler, seed, index range) into configurations and their stable ids.
* `SolverActor` solves batches with the `fast` solver on its own CPU share (or its GPU when given one).

Actors restart after a crash and their calls are retried (`max_restarts`, `max_task_retries`); that is safe
because both are pure functions of their inputs, and only the driver writes to the store (deduplicated by id).
Objects that cross the cluster are small: configuration arrays in, fields out, never models.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from solvers.problem import Configs, Physics

RESTARTS = 3


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    dashboard: bool = False,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
) -> Iterator[None]:
    """Use the running Ray (tests' session fixture), join `address`, or start a local cluster; shut down only
    what this call started. The dashboard binds to loopback unless the user names another host."""
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict = dict(configure_logging=True, logging_level="ERROR", log_to_driver=False)
    if address:
        ray.init(address=address, **kwargs)
    else:
        if dashboard_port is not None:
            kwargs["dashboard_port"] = dashboard_port
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host=dashboard_host, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _configs_payload(configs: Configs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return configs.centers, configs.values, configs.counts


class _Generator:
    """Configurations for index ranges of (sampler, seed): cheap, pure, reproducible."""

    def __init__(self, physics: dict):
        self.physics = Physics.from_dict(physics)

    def configs(self, sampler: str, seed: int, start: int, stop: int, sources: tuple[int, int]):
        from solvers.sampling import sample_configs

        cfg, families = sample_configs(sampler, self.physics, seed, range(start, stop), tuple(sources))
        ids = [cfg.sample_id(s, self.physics) for s in range(len(cfg))]
        return (*_configs_payload(cfg), families, ids)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class _Solver:
    """Solves batches of configurations; one torch/FFT thread per CPU it was given."""

    def __init__(self, physics: dict, device: str = "cpu", dtype: str = "float32", threads: int = 1):
        from solvers.registry import set_threads

        set_threads(threads)
        self.physics = Physics.from_dict(physics)
        self.device = device
        self.dtype = dtype

    def solve(self, centers: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        from solvers.registry import solve

        cfg = Configs(centers, values, counts)
        return solve(self.physics, cfg, "fast", device=self.device, dtype=self.dtype, batch_size=len(cfg))

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def make_generators(physics: Physics, n: int = 1, num_cpus: float = 0.0) -> list:
    """Generators need no CPU reservation: drawing configurations costs microseconds."""
    import ray

    cls = ray.remote(num_cpus=num_cpus, max_restarts=RESTARTS, max_task_retries=RESTARTS)(_Generator)
    return [cls.remote(physics.to_dict()) for _ in range(n)]


def make_solvers(
    physics: Physics, n: int, num_cpus: float = 1.0, num_gpus: float = 0.0, dtype: str = "float32"
) -> list:
    """n solver actors; with num_gpus > 0 each solves on its GPU. Asking for more actors than the cluster has
    CPUs gives each a fractional share (otherwise the extra actors would never be scheduled)."""
    import ray

    total = ray.cluster_resources().get("CPU", 1.0)
    num_cpus = min(num_cpus, total / n)
    cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=RESTARTS, max_task_retries=RESTARTS)(_Solver)
    device = "cuda" if num_gpus > 0 else "cpu"
    threads = max(1, int(num_cpus))
    return [cls.remote(physics.to_dict(), device, dtype, threads) for _ in range(n)]
