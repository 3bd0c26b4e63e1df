"""The curation loop: one round as a table of resumable steps (`STEPS`), run top to bottom by `Runner.run_round`
(the acquisition steps are in acquire.py).

Round 0 makes the test, initial train and val sets and trains on them. Round k >= 1:

    generate   generator actor proposes the pool of round k (seeded by (seed, k)), past ids already stored
    solve      solver actors solve the pool (only when the acquisition scores against solutions)
    score      the trainer actor scores every candidate with the model of round k-1
    mine       mutants of the top-scored candidates, solved and scored like the pool (with mining on)
    embed      the surrogate's features of the candidates and the training set (strategies that pick in them)
    select     the ranker spends the budget
    add        the chosen samples (solved now if not yet) go into the store with provenance
    train      the trainer actors retrain -> checkpoints/round-k.pt (round k+1's pool is solved meanwhile)
    evaluate   test-split metrics -> the round's record, appended to rounds.jsonl

Every step writes its result under RUN_DIR/state/round-NNN/ (`RoundFiles`, atomically) before the next starts, and
a step whose result exists is skipped, so `curate run` after a kill -9 continues at the step where it stopped:
the store dedupes by id, the trainer resumes its last epoch, and rounds.jsonl only ever gets whole rounds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from diffcurate.common.errors import InputError
from diffcurate.common.files import atomic_bytes, atomic_json, atomic_text
from diffcurate.curate.acquisition.ranker import (
    ACQUISITIONS,
    needs_network_features,
    needs_scores,
)
from diffcurate.curate.cluster.actors import FitJob, make_counter
from diffcurate.curate.cluster.dispatch import Background
from diffcurate.curate.loop.acquire import Acquire
from diffcurate.curate.loop.config import RunConfig, RunOverrides
from diffcurate.curate.loop.health import (
    check_checkpoints,
    check_records,
    check_run_store,
    check_state,
    mark_started,
    run_identity,
)
from diffcurate.curate.loop.rundir import (
    PIPELINED,
    RunPaths,
    append_round,
    apply_overrides,
    atomic_npy,
    finished_unlogged,
    initial_requests,
    load_run,
    mend_round_log,
    read_rounds,
    round_record,
    round_train_config,
    run_lock,
    stop_reason,
)
from diffcurate.curate.store.lmdbstore import Store
from diffcurate.curate.store.lock import check_writable

PLACEMENT_TIMEOUT = 180  # seconds for the actors to start (an unschedulable request would wait forever)


TRAINERS = "trainers"  # the actor name of steps that run on every trainer ("trainer" or "trainers xM")


@dataclass(frozen=True)
class Step:
    """One step of a round: its name in the timeline, the `RoundFiles` field it writes (its presence means done),
    the actor it runs on, the `Runner` method that does it and the `Runner` predicate that says whether round k
    has it; `pipelines`: round k+1's pool is generated and solved while it runs."""

    name: str
    output: str
    actor: str
    method: str
    needed: str
    pipelines: bool = False


STEPS = (
    Step("solve", "meta", "solvers", "initial_sets", "first_round"),  # round 0: the test, train and val sets
    Step("generate", "pool", "generator", "generate_pool", "acquiring"),
    Step("solve", "pool_y", "solvers", "solve_pool", "solving_pool"),
    Step("score", "scores", "trainer", "score_pool", "scoring"),
    Step("mine", "mined", "trainer", "mine", "mining"),
    Step("embed", "embed", "trainer", "embed", "embedding"),
    Step("select", "selection", "driver", "pick", "acquiring"),
    Step("add", "meta", "driver", "add", "acquiring"),
    Step("train", "fit", TRAINERS, "fit", "always", pipelines=True),
    Step("evaluate", "eval", TRAINERS, "evaluate", "always"),
)


class Runner(Acquire):
    """Drives the rounds of one run directory on a Ray cluster (actors made once, reused every round)."""

    def __init__(self, root: Path, cfg: RunConfig, log: Callable[[str], None] = print, show_progress: bool = True):
        from diffcurate.curate.cluster.actors import make_generators, make_solvers, make_trainers

        # absolute: the actors may run in another working directory (a joined cluster, another node)
        self.root = Path(root).resolve()
        self.cfg, self.paths = cfg, RunPaths(self.root)
        self.physics = cfg.physics
        self.log = log
        self.show_progress = show_progress
        self.last_round = cfg.rounds  # pipelining prefetches no pool beyond it
        r = cfg.ray
        res = dict(r.actor_resources)
        self.gens = make_generators(self.physics, 1, resources=res)
        self.solvers = make_solvers(self.physics, r.workers, r.solver_cpus, r.solver_gpus, resources=res)
        # with training workers, the trainer actors only score and evaluate, never while the workers train: they
        # reserve no CPU, which the workers take instead
        trainer_cpus = 0.0 if r.train_workers > 1 else r.trainer_cpus
        self.trainers = make_trainers(r.trainers, trainer_cpus, r.trainer_gpus, r.trainer_threads, resources=res)
        self.trainer = self.trainers[0]  # the surrogate's: scores, evaluates, feeds the ranker
        self._test_ref = None  # the test split, put into the object store once per `curate run`
        self._prefetching = None  # round k+1's pool being solved in a driver thread (`Background`)
        try:
            self._record_placement()
            self.train_workers = self._train_workers()
        except BaseException:
            self.close()  # a refused run leaves no actors holding the cluster's resources
            raise

    def _record_placement(self) -> None:
        """RUN/state/actors.json: which node each actor runs on (one entry per `curate run`)."""
        import ray

        actors = {f"solver-{i}": a for i, a in enumerate(self.solvers)}
        actors.update({"generator": self.gens[0], "trainer": self.trainer})
        actors.update({f"trainer-{m}": a for m, a in enumerate(self.trainers) if m})
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

        for a in [*self.solvers, *self.gens, *self.trainers]:
            ray.kill(a)
        if self._prefetching is not None:  # an interrupt mid-round: the prefetch thread ends before Ray does
            self._prefetching.settle(timeout=60)

    # --- the round: the steps of STEPS in order, each timed and skipped if its result exists ---------------

    def run_round(self, k: int) -> dict:
        files = self.paths.round(k)
        files.dir.mkdir(parents=True, exist_ok=True)
        self.paths.checkpoint(k).parent.mkdir(parents=True, exist_ok=True)
        for step in STEPS:
            if getattr(self, step.needed)(k):
                self._step(k, step)
        return round_record(self.root, self.cfg, k)

    def _step(self, k: int, step: Step) -> None:
        if not getattr(self.paths.round(k), step.output).exists():
            mark_started(self.root, k, self.cfg)
            pre = self._prefetch_start(k + 1) if step.pipelines else None
            t0 = time.time()
            getattr(self, step.method)(k)
            self._timing(k, step.name, t0, time.time(), self._trainers_name if step.actor == TRAINERS else step.actor)
            if pre:
                self._prefetch_finish(pre)
        if step.name == "add":
            self.log(f"round {k}: added {self._added(k)} of {self._candidate_count(k)} candidates ({self._strategy})")
        if step.name == "train":
            self.log(f"round {k}: trained ({json.loads(self.paths.round(k).fit.read_text())['epochs']} epochs)")

    def _timing(self, k: int, name: str, start: float, end: float, actor: str) -> None:
        """Record when step `name` of round k ran and on which actor (state/round-k/timing.json)."""
        path = self.paths.round(k).timing
        timing = json.loads(path.read_text()) if path.exists() else {}
        timing[name] = {"start": start, "end": end, "actor": actor}
        atomic_json(path, timing)

    # which rounds have which steps

    def first_round(self, k: int) -> bool:
        return k == 0

    def acquiring(self, k: int) -> bool:
        return k > 0

    def scoring(self, k: int) -> bool:
        return k > 0 and needs_scores(self._strategy, k)

    def solving_pool(self, k: int) -> bool:
        return self.scoring(k) and ACQUISITIONS[self.cfg.acquisition.acquisition].needs_solutions

    def mining(self, k: int) -> bool:
        return self.scoring(k) and self.cfg.acquisition.mine_parents > 0

    def embedding(self, k: int) -> bool:
        return k > 0 and needs_network_features(self._strategy)

    def always(self, k: int) -> bool:
        return True

    @property
    def _strategy(self) -> str:
        return self.cfg.acquisition.strategy

    @property
    def _trainers_name(self) -> str:
        return "trainer" if len(self.trainers) == 1 else f"trainers x{len(self.trainers)}"

    # the steps: each writes its one output file of state/round-k/

    def initial_sets(self, k: int) -> None:
        """meta.json of round 0: the test splits, then the initial train and val sets (solves and redraws)."""
        from diffcurate.curate.cluster.generate import fill

        with Store.create(
            self.paths.store, self.physics, preset=self.cfg.preset, command="curate init", run=run_identity(self.cfg)
        ) as st:
            made = fill(st, initial_requests(self.cfg), self.gens, self.solvers, self.show_progress)
        atomic_json(self.paths.round(k).meta, {**made, "added_by_sources": {}, "added": 0})

    def fit(self, k: int) -> None:
        """fit.json: all trainers at once: member m trains with its own seed in its own work dir (resumable),
        warm-started from its own previous-round weights, so the members stay independent (an ensemble, not M
        copies)."""
        import ray

        from diffcurate.curate.cluster import data_parallel
        from diffcurate.model.checkpoint import Blob
        from diffcurate.model.train import max_epochs

        cfg, files = self.cfg, self.paths.round(k)
        train_set = self._solved("train")
        n_train = len(train_set.y)
        train_ref, val_ref = ray.put(train_set), ray.put(self._solved("val"))  # once per round
        driver = ray.get_runtime_context().get_node_id()
        counter = make_counter()  # the surrogate's epochs, for the driver's bar
        refs = []
        for m, tr in enumerate(self.trainers):
            prev = self.paths.member(k - 1, m) if k > 0 else None
            init = Blob.of(prev) if prev is not None and cfg.warm_start and prev.is_file() else None
            job = FitJob(
                train_set=train_ref,
                val_set=val_ref,
                model=cfg.model,
                train=round_train_config(cfg, m, n_train),
                physics=cfg.physics,
                work_dir=str(files.train(m)),
                driver_node=driver,
                init_from=init,
                run=self.root.name,
                progress=counter if m == 0 else None,
            )
            if self.train_workers is None:
                refs.append(tr.fit.remote(job))
            else:  # a task starts the Ray Train run, so that the bar shows progress meanwhile; it restarts its round
                refs.append(data_parallel.fit_remote(job, self.train_workers))
        epochs = max_epochs(round_train_config(cfg, 0, n_train), max(1, n_train))
        try:
            results = self._wait_training(refs, counter, k, epochs)
        finally:
            ray.kill(counter)
        for m, r in enumerate(results):  # the driver writes what the trainers return
            atomic_bytes(self.paths.member(k, m), r.pop("checkpoint"))
            history = r.pop("history")
            if not files.train_log(m).exists():  # the trainer ran on another node: its log comes back with it
                atomic_text(files.train_log(m), "".join(json.dumps(h) + "\n" for h in history))
        first, *members = results
        extra = {"members": [{"member": m, **r} for m, r in enumerate(members, 1)]} if members else {}
        atomic_json(files.fit, {**first, **extra})

    def _solved(self, split: str, with_samplers: bool = False):
        """A split of the store as arrays for the actors (`Solved`), in the store's id order."""
        from diffcurate.curate.cluster.actors import Solved

        with Store(self.paths.store, readonly=True) as st:
            ids = st.ids(split)
            cfg, y, headers = st.get(ids)
        samplers = tuple(h["sampler"] for h in headers) if with_samplers else ()
        return Solved(cfg, y, samplers, tuple(ids) if with_samplers else ())

    def test_ref(self):
        """The test split in the object store (put once per `curate run`: the split never changes)."""
        import ray

        if self._test_ref is None:
            self._test_ref = ray.put(self._solved("test", with_samplers=True))
        return self._test_ref

    def evaluate(self, k: int) -> None:
        """eval.json: the surrogate's test metrics (and each member's, on its own trainer, when there are several)."""
        import ray

        from diffcurate.model.checkpoint import Blob

        held, test = tuple(self.cfg.data.held_out_families), self.test_ref()
        refs = [
            tr.evaluate.remote(test, Blob.of(self.paths.member(k, m)), self.physics, held)
            for m, tr in enumerate(self.trainers)
        ]
        first, *members = ray.get(refs)
        if members:
            first["members"] = [{"member": m, "test": r["test"]} for m, r in enumerate(members, 1)]
        atomic_json(self.paths.round(k).eval, first)

    # --- what the steps read ------------------------------------------------------------------------------------

    def _wait_training(self, refs: list, counter, k: int, epochs: int) -> list:
        """ray.get(refs), showing the surrogate's epochs while the trainers work, wherever they run."""
        from diffcurate.curate.cluster.data_parallel import wait_showing_epochs

        return wait_showing_epochs(refs, counter, epochs, f"round {k}: training", self.show_progress)

    def _prefetch_start(self, k: int):
        """Start round k's pool (generate now, solve asynchronously) if the run solves pools and it is not done."""
        files = self.paths.round(k)
        if not (self.cfg.ray.pipeline and k <= self.last_round and self.solving_pool(k) and not files.pool_y.exists()):
            return None
        generate = next(s for s in STEPS if s.output == "pool")
        self._step(k, replace(generate, actor=f"{generate.actor} {PIPELINED}"))
        self._prefetching = Background(self.solvers, self._pool(k), self.physics)
        return k, self._prefetching, time.time()

    def _prefetch_finish(self, pre) -> None:
        """Collect the prefetched solutions into state/round-k/pool_y.npy; its timing shows the overlap."""
        k, job, submitted = pre
        y, start, end = job.join()
        self._prefetching = None
        atomic_npy(self.paths.round(k).pool_y, y)
        self._timing(k, "solve", max(start, submitted), end, f"solvers {PIPELINED}")

    def publish(self, record: dict) -> None:
        """Round metrics as Ray gauges (dashboard / Prometheus)."""
        from diffcurate.curate.cluster.actors import set_gauge

        run = self.root.name
        set_gauge("round", record["round"], run)
        set_gauge("train_size", record["train_size"], run)
        set_gauge("test_mae", record["test"]["mae"]["all"], run)
        set_gauge("test_p99", record["test"]["per_sample_mae"]["p99"], run)
        for n, v in record["test"]["mae_by_sources"]["all"].items():
            if v is not None:
                set_gauge("test_mae_by_sources", v, run, sources=n)
        solve_s = record["seconds"].get("solve", 0) or record["seconds"].get("add", 0)
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
        cfg, record = apply_overrides(root, cfg, overrides or RunOverrides())
        check_run(root, cfg)
        if mend_round_log(root, cfg):  # a torn or lost line: rebuilt from state/ before anything starts
            log(f"rewrote {RunPaths(root).rounds} from state/")
        return _run_locked(root, cfg, rounds, log, show_progress, record)


def check_run(root: Path, cfg: RunConfig) -> None:
    """Refusals decided by what the run directory holds (the store's schema, its physics against the config's,
    whether it is this run's store, its records' checksums, a round folder started under another config, the
    checksums of the checkpoints the next round loads), made
    before Ray starts and before any file of the run is written, so that a refused config leaves the run as it
    was."""
    check_run_store(root, cfg, deep=True)
    check_records(root)
    check_state(root, cfg)
    check_checkpoints(root, len(read_rounds(root)) + len(finished_unlogged(root)) - 1)  # the last finished round


def _run_locked(root: Path, cfg: RunConfig, rounds: int | None, log, show_progress: bool, record: bool) -> list[dict]:
    """The rounds, on a cluster; the overrides are written to config.toml once the cluster has placed what they ask
    for (actors, training workers), so that a refused override leaves the config as it was (a finished run
    records them without starting Ray)."""
    from diffcurate.curate.cluster.session import ray_session

    rounds = cfg.rounds if rounds is None else rounds
    r = cfg.ray
    why = stop_reason(cfg, read_rounds(root), rounds)
    if why:  # a finished run answers without starting Ray
        if record:
            cfg.save(RunPaths(root).config)
        log(f"stopped: {why}")
        return read_rounds(root)
    log("starting Ray" + (f" (joining {r.address})" if r.address else " (a local cluster)"))
    with ray_session(r.address or None, r.num_cpus or None, r.dashboard, r.dashboard_host):
        runner = Runner(root, cfg, log, show_progress)
        runner.last_round = rounds
        if record:
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
                t = record["test"]
                log(
                    f"round {record['round']}: train {record['train_size']}, test MAE {t['mae']['all']:.4g}, "
                    f"p99 {t['per_sample_mae']['p99']:.4g}, {record['seconds']['total']:.1f} s"
                )
        finally:
            runner.close()
    return read_rounds(root)
