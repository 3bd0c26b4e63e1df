"""The curation loop: `Runner` makes the actors once and runs each round's steps (steps.py) top to bottom, each
timed and skipped if its result exists; `run` runs or resumes the rounds of a run directory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_json
from diffcurate.curate.cluster.dispatch import Background
from diffcurate.curate.loop.config import RunConfig, RunOverrides
from diffcurate.curate.loop.context import RunContext
from diffcurate.curate.loop.health import (
    check_checkpoints,
    check_records,
    check_run_store,
    check_state,
    mark_started,
)
from diffcurate.curate.loop.record import finished_unlogged, mend_round_log, round_record, stop_reason
from diffcurate.curate.loop.rundir import (
    PIPELINED,
    RunPaths,
    append_round,
    apply_overrides,
    atomic_npy,
    load_run,
    read_rounds,
    run_lock,
)
from diffcurate.curate.loop.steps import ADD, GENERATE, SOLVE_POOL, STEPS, Step
from diffcurate.curate.store.lock import check_writable
from diffcurate.model.metrics import Metrics
from diffcurate.solvers.plugins import check_problem

PLACEMENT_TIMEOUT = 180  # seconds for the actors to start (an unschedulable request would wait forever)


class Runner:
    """Drives the rounds of one run directory on a Ray cluster (actors made once, reused every round)."""

    def __init__(self, root: Path, cfg: RunConfig, log: Callable[[str], None] = print, show_progress: bool = True):
        from diffcurate.curate.cluster.actors import make_generators, make_solvers, make_trainers

        self.cfg, self.last_round = cfg, cfg.rounds  # pipelining prefetches no pool beyond the last round
        r = cfg.ray
        res = dict(r.actor_resources)
        gens = make_generators(cfg.problem, cfg.physics, 1, resources=res)
        solvers = make_solvers(cfg.problem, cfg.physics, r.workers, r.solver_cpus, r.solver_gpus, resources=res)
        # with training workers, the trainer actors only score and evaluate, never while the workers train: they
        # reserve no CPU, which the workers take instead
        trainer_cpus = 0.0 if r.train_workers > 1 else r.trainer_cpus
        trainers = make_trainers(r.trainers, trainer_cpus, r.trainer_gpus, r.trainer_threads, resources=res)
        self.ctx = RunContext(Path(root).resolve(), cfg, gens, solvers, trainers, log, show_progress)
        self.paths = self.ctx.paths
        self._prefetching = None  # round k+1's pool being solved in a driver thread (`Background`)
        try:
            self._record_placement()
            self.ctx.train_workers = self._train_workers()
        except BaseException:
            self.close()  # a refused run leaves no actors holding the cluster's resources
            raise

    def _record_placement(self) -> None:
        """RUN/state/actors.json: which node each actor runs on (one entry per `curate run`)."""
        import ray

        c = self.ctx
        actors = {f"solver-{i}": a for i, a in enumerate(c.solvers)}
        actors.update({"generator": c.gens[0], "trainer": c.trainer})
        actors.update({f"trainer-{m}": a for m, a in enumerate(c.trainers) if m})
        refs = [a.node.remote() for a in actors.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PLACEMENT_TIMEOUT)
        if len(ready) < len(refs):
            raise InputError(
                f"the actors could not all be placed within {PLACEMENT_TIMEOUT} s: the cluster offers "
                f"{ray.cluster_resources()}, the run asks for {self.cfg.ray.workers} solvers x "
                f"{self.cfg.ray.solver_cpus} CPU and {self.cfg.ray.trainers} trainer(s) x {self.cfg.ray.trainer_cpus} CPU"
            )
        nodes = dict(zip(actors, ray.get(refs), strict=True))
        path = self.paths.actors
        path.parent.mkdir(parents=True, exist_ok=True)
        history = json.loads(path.read_text()) if path.exists() else []
        atomic_json(path, [*history, {"time": time.time(), "nodes": nodes}])

    def _train_workers(self):
        """With ray.train_workers = N > 1, the Ray Train workers each member trains on (refused now, before any
        work, if the cluster cannot hold N per member besides the actors); None: the trainer actors train."""
        import ray

        from diffcurate.curate.cluster.data_parallel import MIN_WORKER_CPUS, Workers, check_placeable, share

        r = self.cfg.ray
        if r.train_workers == 1:
            return None
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0  # the trainer actor may score on the CPU
        cpus, n = r.trainer_cpus, r.train_workers * r.trainers
        free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
        if not gpus and cpus * n > free + 1e-9:  # share what the actors leave, as solvers share a small cluster
            cpus = share(free, n)
            if cpus < MIN_WORKER_CPUS:
                raise InputError(
                    f"{n} training workers need at least {MIN_WORKER_CPUS:g} CPU each; the cluster has {free:g} CPU "
                    f"free (of {total:g}) besides the run's solver actors: lower --train-workers or ray.solver_cpus, "
                    "or give the cluster more CPUs (ray.num_cpus, more nodes)"
                )
        workers = Workers(r.train_workers, cpus, gpus, tuple(sorted(r.actor_resources.items())))
        check_placeable(workers, copies=r.trainers)
        return workers

    def close(self) -> None:
        import ray

        for a in [*self.ctx.solvers, *self.ctx.gens, *self.ctx.trainers]:
            ray.kill(a)
        if self._prefetching is not None:  # an interrupt mid-round: the prefetch thread ends before Ray does
            self._prefetching.settle(timeout=60)

    # --- the round: the steps of STEPS in order, each timed and skipped if its result exists ---------------

    def run_round(self, k: int) -> dict:
        c = self.ctx
        c.paths.round(k).dir.mkdir(parents=True, exist_ok=True)
        c.paths.checkpoint(k).parent.mkdir(parents=True, exist_ok=True)
        for step in STEPS:
            if not step.needed(c, k) or step.done(c, k):
                continue
            ahead = self.prefetch(k + 1) if step.overlaps_next_pool else None  # round k+1's pool, meanwhile
            self.run_step(k, step)
            if ahead is not None:
                self.collect(ahead)
        return round_record(c.root, self.cfg, k)

    def run_step(self, k: int, step: Step, pipelined: bool = False) -> None:
        """Run one step of round k, record when and where it ran (state/round-k/timing.json), say its line."""
        c = self.ctx
        mark_started(c.root, k, self.cfg)
        t0 = time.time()
        step.run(c, k)
        where = step.runs_on(c, k) + (f" {PIPELINED}" if pipelined else "")
        self._timing(k, step.name, t0, time.time(), where)
        if step.says is not None:
            c.log(step.says(c, k))

    def _timing(self, k: int, name: str, start: float, end: float, where: str) -> None:
        path = self.paths.round(k).timing
        timing = json.loads(path.read_text()) if path.exists() else {}
        timing[name] = {"start": start, "end": end, "actor": where}
        atomic_json(path, timing)

    def prefetch(self, k: int):
        """With `ray.pipeline`: round k's GENERATE now and its SOLVE_POOL in a driver thread (`Background`), while
        round k-1 trains; None when round k does not solve its pool, lies beyond the run, or has solved it."""
        c = self.ctx
        if not (self.cfg.ray.pipeline and k <= self.last_round and SOLVE_POOL.needed(c, k)) or SOLVE_POOL.done(c, k):
            return None
        if not GENERATE.done(c, k):
            self.run_step(k, GENERATE, pipelined=True)
        self._prefetching = Background(c.solvers, c.pool(k), c.task.grid)
        return k, self._prefetching, time.time()

    def collect(self, ahead) -> None:
        """The prefetched solutions into state/round-k/pool_y.npy; SOLVE_POOL's timing shows the overlap."""
        k, job, submitted = ahead
        y, start, end = job.join()
        self._prefetching = None
        atomic_npy(self.paths.round(k).pool_y, y)
        where = SOLVE_POOL.runs_on(self.ctx, k)
        self._timing(k, SOLVE_POOL.name, max(start, submitted), end, f"{where} {PIPELINED}")

    def publish(self, record: dict) -> None:
        """Round metrics as Ray gauges (dashboard / Prometheus)."""
        from diffcurate.curate.cluster.actors import set_gauge

        run, test = self.ctx.root.name, Metrics.from_dict(record["test"])
        set_gauge("round", record["round"], run)
        set_gauge("train_size", record["train_size"], run)
        set_gauge("test_mae", test.mae_all, run)
        set_gauge("test_p99", test.p99, run)
        for n, v in test.mae_by_sources["all"].items():
            if v is not None:
                set_gauge("test_mae_by_sources", v, run, sources=n)
        seconds = record["seconds"]
        solve_s = seconds.get(SOLVE_POOL.name, 0) or seconds.get(ADD.name, 0)
        if solve_s:
            set_gauge("solves_per_s", record["solves"] / solve_s, run)


def run(
    root: Path,
    rounds: int | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
    overrides: RunOverrides | None = None,
    wait: bool = True,
) -> list[dict]:
    """Run (or resume) rounds 0..K of a run directory; returns all completed round records. One run per
    directory at a time (`run_lock`: a second one waits, or with `wait` False is refused)."""
    root = Path(root)
    cfg = load_run(root)  # checked against the store by `check_run`, under the lock
    check_writable(root)
    with run_lock(root, wait):
        cfg, changed = apply_overrides(root, cfg, overrides or RunOverrides())
        check_run(root, cfg)
        if mend_round_log(root, cfg):  # a torn or lost line: rebuilt from state/ before anything starts
            log(f"rewrote {RunPaths(root).rounds} from state/")
        return _run_locked(root, cfg, rounds, log, show_progress, changed)


def check_run(root: Path, cfg: RunConfig) -> None:
    """Refusals decided by what the run directory holds (the store's schema, its physics against the config's,
    whether it is this run's store, its records' checksums, a round folder started under another config, the
    checksums of the checkpoints the next round loads), made
    before Ray starts and before any file of the run is written, so that a refused config leaves the run as it
    was."""
    check_problem(cfg.problem, cfg.physics)  # a plugin's faults, before anything is drawn, solved or written
    check_run_store(root, cfg, deep=True)
    check_records(root)
    check_state(root, cfg)
    check_checkpoints(root, len(read_rounds(root)) + len(finished_unlogged(root)) - 1)  # the last finished round


def _run_locked(root: Path, cfg: RunConfig, rounds: int | None, log, show_progress: bool, changed: bool) -> list[dict]:
    """The rounds, on a cluster; the overrides are written to config.toml once the cluster has placed what they ask
    for (actors, training workers), so that a refused override leaves the config as it was (a finished run
    records them without starting Ray)."""
    from diffcurate.curate.cluster.session import ray_session

    rounds = cfg.rounds if rounds is None else rounds
    r = cfg.ray
    why = stop_reason(cfg, read_rounds(root), rounds)
    if why:  # a finished run answers without starting Ray
        if changed:
            cfg.save(RunPaths(root).config)
        log(f"stopped: {why}")
        return read_rounds(root)
    log("starting Ray" + (f" (joining {r.address})" if r.address else " (a local cluster)"))
    with ray_session(r.address or None, r.num_cpus or None, r.dashboard, r.dashboard_host):
        runner = Runner(root, cfg, log, show_progress)
        runner.last_round = rounds
        if changed:
            cfg.save(RunPaths(root).config)
        try:
            while True:
                done = read_rounds(root)
                why = stop_reason(cfg, done, rounds)
                if why:
                    log(f"stopped: {why}")
                    break
                record = runner.run_round(len(done))
                append_round(root, record)
                runner.publish(record)
                t = Metrics.from_dict(record["test"])
                log(
                    f"round {record['round']}: train {record['train_size']}, test MAE {t.mae_all:.4g}, "
                    f"p99 {t.p99:.4g}, {record['seconds']['total']:.1f} s"
                )
        finally:
            runner.close()
    return read_rounds(root)
