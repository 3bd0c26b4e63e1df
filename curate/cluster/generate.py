"""Dataset generation on Ray: generator actors -> solver actors -> the driver writes LMDB.

The request (sampler, seed, indices 0..count-1, sources) names a fixed set of sample ids, so generation is
idempotent: a re-run after a crash solves only the ids missing from the store, and a re-run after success
adds nothing. Results are written in arrival order, but the set of samples does not depend on the number of
workers (ids come from the configurations, configurations from (seed, sampler, index)).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffcurate.common.errors import InputError
from diffcurate.common.splits import check_split
from diffcurate.curate.cluster.actors import make_generators, make_solvers
from diffcurate.curate.cluster.dispatch import default_chunk, solve_chunks
from diffcurate.curate.cluster.session import ray_session
from diffcurate.curate.progress import progress_bar
from diffcurate.curate.store.env import is_store
from diffcurate.curate.store.lmdbstore import BATCH, Store, check_path
from diffcurate.curate.store.lock import check_writable
from diffcurate.solvers.interface import Batch
from diffcurate.solvers.plugins import check_problem, get_problem


@dataclass
class GenerateResult:
    requested: int
    added: int
    present: int  # already in the store before this call
    solved: int
    seconds: float  # everything, Ray start-up included
    solve_seconds: float  # first dispatch to last write: the sustained rate

    @property
    def samples_per_s(self) -> float:
        return self.solved / self.solve_seconds if self.solve_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "samples_per_s": self.samples_per_s}


BLOCK_SAMPLES = 8192  # samples `generate` plans, solves and commits at a time: its memory is one block's


def bytes_per_sample(grid: tuple[int, int], encoding: str = "float32") -> int:
    """What one sample takes in a store, at least: its target in whole 4 KiB overflow pages with its header, and
    its index entry."""
    from diffcurate.curate.store.records import ENCODINGS

    record = grid[0] * grid[1] * ENCODINGS[encoding].itemsize + 1024
    return -(-record // 4096) * 4096 + 1024


def check_room(store_path, grid: tuple[int, int], new: int, encoding: str = "float32") -> None:
    """InputError (one line) if `new` samples cannot fit on the disk that holds the store: refused before Ray
    starts, not after hours of solving into a full disk."""
    import shutil

    where = Path(store_path).absolute()
    while not where.exists():
        where = where.parent
    each = bytes_per_sample(grid, encoding)
    need, free = max(0, new) * each, shutil.disk_usage(where).free
    if need > free:
        raise InputError(
            f"{new:,} new samples need at least {need / 2**30:,.1f} GiB in {store_path} ({each:,} bytes each); its "
            f"disk has {free / 2**30:,.1f} GiB free"
        )


def cache_writes(grid: tuple[int, int]) -> bool:
    """Whether `generate` keeps what it writes in the page cache: yes for small records (a small-preset set of
    10^5 samples is 2 GB, and the trainer reads it next), no from 256 KiB a record (L >= 256), where useful sets
    outgrow the cache (the paper's 400k samples are 400 GB) and dropping committed pages makes writes faster
    (docs/benchmarks.md, "Measured choices")."""
    return grid[0] * grid[1] * 4 < 256 << 10


def solve_pending(store: Store, pending, solvers: list, advance, split: str) -> int:
    """Solve (configs, families) chunks on the solver actors (`dispatch.solve_chunks`) and write the results to
    the store in transactions of at least `store.BATCH` samples (small chunks keep the actors balanced; one
    commit per chunk would fsync every few samples), chunk by chunk in the last round. A kill loses at most the
    buffered, uncommitted results. Returns the number of samples written."""
    added = buffered = 0
    buffer: list[tuple[Batch, list, np.ndarray]] = []

    def flush() -> int:
        cfg = store.problem.concat(store.physics, [c for c, _, _ in buffer])
        fams = [f for _, fs, _ in buffer for f in fs]
        ys = [y for _, _, y in buffer]  # (k, H, W) blocks, written without joining them first
        buffer.clear()
        return store.add(cfg, ys, split=split, sampler=fams)

    def land(fams, cfg, y, start, end, pending, running):
        nonlocal added, buffered
        buffer.append((cfg, fams, y))  # y (n, H, W): a read-only zero-copy view
        buffered += len(cfg)
        # full batches, and in the last round (one chunk or less left per actor) each chunk as it lands, so
        # the commit after the last solve, when every actor is idle, holds one chunk instead of up to a batch
        if buffered >= BATCH or not pending and running < len(solvers):
            added += flush()
            advance(buffered)
            buffered = 0

    solve_chunks(solvers, [(fams, cfg) for cfg, fams in pending], land)
    return added


@dataclass
class Plan:
    """What one request still needs: chunks to solve as (configurations, families), how many of its samples the store
    already holds, how many draws were passed over because another split holds or claims them, and its ids."""

    pending: list
    present: int
    redrawn: int
    ids: list[str]


def plan_blocks(
    store: Store,
    gens: list,
    sampler: str,
    seed: int,
    count: int,
    sources,
    split: str,
    chunk: int | None = None,
    claimed: dict[str, str] | None = None,
    block: int | None = None,
) -> Iterator[Plan]:
    """Walk indices 0, 1, 2, ... of (sampler, seed) until `count` distinct samples of `split` are named, yielding a
    Plan of each stretch that names `block` samples to solve (None: one Plan for the whole walk), so that a caller
    can solve and commit each before the walk goes on and a request of any size holds one block in memory.

    A configuration drawn twice (e.g. two one-source samples at the same spot) counts once, and one that the
    store already holds in another split, or that `claimed` (id -> split, the plans made before this one) gives
    to another split, is passed over and redrawn from the next index (never moved, never leaked across splits),
    so the split ends up with exactly `count` samples. `chunk` configurations per chunk, `default_chunk` if
    None. `gens` are generator actors, or None to draw in this process (cheap: configurations only)."""
    chunk = chunk or default_chunk(store.problem.grid(store.physics))
    index = store.index()  # one read transaction (the writer lock keeps other writers out meanwhile)
    stored = dict(zip(index["id"].tolist(), index["split"].tolist(), strict=True))
    where = {**(claimed or {}), **stored}
    del index

    def draw(start: int, stop: int) -> list:
        if gens is None:
            from diffcurate.curate.cluster.actors import draw_configs

            return [draw_configs(store.problem.name, store.physics, sampler, seed, start, stop, sources)]
        import ray

        return ray.get(
            [
                gens[i % len(gens)].configs.remote(sampler, seed, a, min(stop, a + chunk), sources)
                for i, a in enumerate(range(start, stop, chunk))
            ]
        )

    seen: set[str] = set()  # the walk's ids so far: a repeat draw counts once
    part = Plan([], 0, 0, [])
    start = 0
    while len(seen) < count:
        stop = start + min(count - len(seen), block or count)
        for drawn, fams, ids in draw(start, stop):
            keep = np.zeros(len(ids), bool)
            for s, i in enumerate(ids):
                if len(seen) == count or i in seen:
                    continue
                if where.get(i, split) != split:
                    part.redrawn += 1
                    continue
                seen.add(i)
                part.ids.append(i)
                part.present += i in stored
                keep[s] = i not in where
            if keep.any():
                part.pending.append((drawn[np.flatnonzero(keep)], [f for f, k in zip(fams, keep, strict=True) if k]))
        start = stop
        if block and sum(len(c) for c, _ in part.pending) >= block and len(seen) < count:
            yield part
            part = Plan([], 0, 0, [])
    yield part


def fill(
    store: Store, requests, gens: list, solvers: list, show_progress: bool = True, chunk: int | None = None
) -> dict:
    """Bring the store up to several (split, sampler, seed, count, sources) requests at once, planned in order:
    a request never takes an id that an earlier one claims for another split (it redraws instead), so the
    requests listed first (the test splits) do not depend on the ones after them. Returns {"solves": n,
    "redrawn": {split: n}}."""
    plans, claimed = [], {}
    for split, sampler, seed, count, sources in requests:
        p = next(plan_blocks(store, gens, sampler, seed, count, sources, split, chunk, claimed))  # the whole walk
        claimed.update(dict.fromkeys(p.ids, split))
        plans.append((split, p))
    total = sum(len(p.ids) for _, p in plans)
    solved, redrawn = 0, {}
    with progress_bar(total, "initial sets", show=show_progress) as advance:
        for split, p in plans:
            advance(len(p.ids) - sum(len(c) for c, _ in p.pending))
            solved += sum(len(c) for c, _ in p.pending)
            redrawn[split] = redrawn.get(split, 0) + p.redrawn
            solve_pending(store, p.pending, solvers, advance, split)
    return {"solves": solved, "redrawn": redrawn}


def generate(
    store_path: Path,
    physics,  # the problem's parameters
    count: int,
    seed: int,
    sampler: str = "mixed",
    sources: tuple[int, int] = (1, 20),
    split: str = "train",
    workers: int = 1,
    address: str | None = None,
    chunk: int | None = None,  # default: `default_chunk(grid)`
    preset: str = "",
    command: str = "",
    show_progress: bool = True,
    num_cpus: int | None = None,
    gpus: float = 0.0,  # per solver actor; 0: CPU
    problem: str = "diffusion",
) -> GenerateResult:
    """Make sure `split` holds the first `count` distinct samples of (sampler, seed); solve only what is missing."""
    if count < 1:
        raise InputError(f"--count must be >= 1, got {count}")
    check_split(split, allow_all=False)
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    p = get_problem(problem)
    if sampler not in p.samplers():  # refused before any work
        raise InputError(f"unknown sampler {sampler!r} of problem {problem!r} (choose from {', '.join(p.samplers())})")
    check_problem(problem, physics)  # a plugin's faults, before any work
    p.sample(physics, sampler, seed, [0], tuple(sources))  # a range of strata the sampler refuses, likewise
    grid = p.grid(physics)
    t0 = time.perf_counter()
    request = {
        "kind": "generate",
        "split": split,
        "sampler": sampler,
        "seed": seed,
        "count": count,
        "sources": [int(s) for s in sources],
    }
    # refused before Ray starts (~5 s here): a path that cannot be a store, a store of other physics; and a
    # request that finished before needs nothing (samples are never removed or moved)
    check_path(Path(store_path), create=True)
    check_writable(store_path)
    held, encoding = 0, "float32"  # a new store's
    if is_store(store_path):
        with Store(store_path, readonly=True) as st:
            st.check_physics(physics)
            held, encoding = st.count(split), st.encoding
            # trust what the store holds, not the history alone: a finished request whose samples are missing
            # (another writer's plan raced it, a restored backup) is filled again
            if any(all(h.get(k) == v for k, v in request.items()) for h in st.history()):
                if not next(plan_blocks(st, None, sampler, seed, count, sources, split, chunk)).pending:
                    return GenerateResult(count, 0, count, 0, time.perf_counter() - t0, 0.0)
    check_room(store_path, grid, count - held, encoding)
    with ray_session(address, num_cpus=num_cpus):
        import ray

        solvers = make_solvers(problem, physics, workers, num_gpus=gpus)  # first: it refuses GPUs the cluster lacks
        gens = make_generators(problem, physics, 1)
        with Store.create(
            store_path, physics, preset=preset, command=command, cache_writes=cache_writes(grid), problem=problem
        ) as store:
            ray.get([s.pid.remote() for s in solvers])  # actor start (a Python + torch import each) is not solving
            added = present = todo = 0
            with progress_bar(count, f"generate {split}", show=show_progress) as advance:
                t1 = time.perf_counter()
                # block by block: each block's samples are solved and committed before the walk goes on
                for p in plan_blocks(store, gens, sampler, seed, count, sources, split, chunk, block=BLOCK_SAMPLES):
                    advance(p.present)
                    present += p.present
                    todo += sum(len(c) for c, _ in p.pending)
                    added += solve_pending(store, p.pending, solvers, advance, split)
                t_solve = time.perf_counter() - t1
            store.log({**request, "added": added, "command": command})
        for a in solvers + gens:
            ray.kill(a)
    return GenerateResult(count, added, present, todo, time.perf_counter() - t0, t_solve)
