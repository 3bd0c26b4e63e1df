"""The LMDB store of solved samples: one checksummed record per stable sample id, no pickle (the codec:
`records.py`; environments: `env.py`; the writer lock: `lock.py`).

Layout (named sub-databases of one LMDB environment in the store directory):

* ``meta``    store-level JSON values: schema_version, physics, preset, encoding, created, command, history (one
  entry per finished `generate` / `import`).
* ``samples`` id -> record = 4-byte big-endian header length + header JSON + target bytes + crc32 (4 bytes,
  big-endian) of everything before it. x is not stored: it is rebuilt from the config with ``paint``.
* ``index``   id -> the same header JSON + its crc32, so that queries (``index``, ``configs``, ``count``) never
  touch the large target pages.

Why these choices: LMDB commits are atomic, so a writer killed with SIGKILL loses at most the batch in flight
(tested: kill -9 mid-write leaves every committed record intact); batching ~64 samples per transaction amortises the commit fsync;
crc32 catches bit rot and torn copies (not tampering) at memory speed (zlib-ng's).

LMDB stores large values in whole 4 KiB overflow pages. float16 targets (opt-in at creation) halve the size at an
error below a surrogate's MAE but not zero (``FLOAT16_ERROR``), so float32 is the default and should stay so for
evaluation sets. Sizes, rates and errors: docs/benchmarks.md, "Store".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd

from diffcurate.common.errors import CheckError, InputError
from diffcurate.common.splits import check_split
from diffcurate.curate.store.env import (
    INITIAL_MAP_SIZE,
    acquire_env,
    begin,
    damaged,
    is_store,
    refuse_if_forbidden,
    release_env,
)
from diffcurate.curate.store.errors import DiskFull
from diffcurate.curate.store.heap import keep_freed_pages
from diffcurate.curate.store.lock import LOCK_FILE, lock_writer, unlock_writer
from diffcurate.curate.store.records import (
    ENCODINGS,
    config_header,
    configs_from_headers,
    decode_index,
    decode_record,
    encode_index,
    encode_record,
    header_json,
    problem_of,
    stratum_of,
)
from diffcurate.curate.store.summary import Summary
from diffcurate.solvers.interface import Task
from diffcurate.solvers.plugins import get_problem, provenance

SCHEMA_VERSION = 1
BATCH = 64  # samples per write transaction
# |float16(y) - y| on solved `small` and `paper` fields (y in [0, 1]), from bench/store.py (docs/benchmarks.md)
FLOAT16_ERROR = {"max": 2.44e-4, "mean_small": 2.65e-5, "mean_paper": 4.98e-6}


def check_path(path: Path, create: bool) -> None:
    """InputError unless `path` is a store (or, with `create`, a place where one can be made)."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file, not a store directory")
    if is_store(path):
        return
    if not create:
        what = "does not exist" if not path.exists() else "is a directory that is not a store (no data.mdb)"
        raise InputError(f"{path} {what}; create the store first")
    if path.exists() and any(p.name != LOCK_FILE for p in path.iterdir()):
        raise InputError(f"{path} is a non-empty directory that is not a store; refusing to create one there")


class Store(Summary):
    """A store directory. `Store(path)` opens an existing one; `Store.create(path, physics)` makes one
    (or reopens it if it holds the same physics)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        readonly: bool = False,
        map_size: int = INITIAL_MAP_SIZE,
        cache_writes: bool = True,
    ):
        refuse_if_forbidden(path)
        self.path = Path(path)
        # False for bulk writers (`generate`): committed pages leave the page cache, see `drop_cache`
        self.cache_writes = cache_writes
        check_path(self.path, create=False)
        self._locked = not readonly and os.access(self.path, os.W_OK)
        if self._locked:
            lock_writer(self.path)
        try:
            self._open(readonly, map_size)
        except BaseException:
            self._unlock()
            raise
        try:
            with begin(self.env) as txn:
                meta = {bytes(k).decode(): json.loads(bytes(v)) for k, v in txn.cursor(db=self._meta)}
        except (ValueError, UnicodeDecodeError):
            meta = {}
        except lmdb.Error as e:
            self.close()
            raise damaged(self.path, e) from None
        if meta.get("schema_version") is None or "physics" not in meta:
            self.close()
            raise InputError(f"{self.path} is an LMDB environment but not a diffcurate store (no store metadata)")
        version = meta["schema_version"]
        if not (type(version) is int and 1 <= version <= SCHEMA_VERSION):  # known integer versions only
            self.close()
            raise InputError(
                f"{self.path}: store schema {version!r} is not one this version reads (1 to {SCHEMA_VERSION})"
            )
        self.meta = meta
        try:
            self.problem_record = problem_of(meta)  # {name, package, version}; one line if it is not installed
            self.problem = get_problem(self.problem_record["name"])
            self.physics = self.problem.params_from_dict(meta["physics"])  # the problem's parameters
        except InputError:
            self.close()
            raise
        self.encoding: str = meta["encoding"]

    @property
    def task(self) -> Task:
        """What the store's samples are of: its problem with its parameters."""
        return Task(self.problem, self.physics)

    def _open(self, readonly: bool, map_size: int) -> None:
        self.env = acquire_env(self.path, map_size=map_size, write=not readonly)
        self.readonly = readonly or self.env.flags()["readonly"]
        if not self.readonly:
            keep_freed_pages()  # LMDB frees each commit's dirty pages: reuse them
        try:
            self._meta = self.env.open_db(b"meta", create=False)
            self._samples = self.env.open_db(b"samples", create=False)
            self._index = self.env.open_db(b"index", create=False)
        except lmdb.Error as e:
            self.close()
            raise InputError(f"{self.path} is an LMDB environment but not a diffcurate store ({e})") from None

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        physics,
        *,
        preset: str = "",
        encoding: str = "float32",
        command: str = "",
        map_size: int = INITIAL_MAP_SIZE,
        cache_writes: bool = True,
        run: str | None = None,
        problem: str = "diffusion",
    ) -> Store:
        """Create a store (an existing store is reopened; InputError if its physics differ). `run`: the identity of
        the run whose store it is (`health.run_identity`), recorded in the metadata at creation, as is the
        problem (name, package, version)."""
        path = Path(path)
        if encoding not in ENCODINGS:
            raise InputError(f"unknown encoding {encoding!r} (choose {', '.join(ENCODINGS)})")
        check_path(path, create=True)
        path.mkdir(parents=True, exist_ok=True)
        lock_writer(path)  # two creators at once: the second finds the store the first made
        try:
            if not is_store(path):
                cls._init_env(path, physics, preset, encoding, command, map_size, run, problem)
            store = cls(path, map_size=map_size, cache_writes=cache_writes)
        finally:
            unlock_writer(path)  # the Store holds its own reference
        try:
            store.check_physics(physics)
            if store.problem.name != problem:
                raise InputError(f"{path} holds samples of problem {store.problem.name!r}, not {problem!r}")
        except InputError:
            store.close()
            raise
        return store

    @staticmethod
    def _init_env(
        path: Path,
        physics,
        preset: str,
        encoding: str,
        command: str,
        map_size: int,
        run: str | None,
        problem: str,
    ) -> None:
        recorded = provenance(problem)  # before the environment exists: an unknown problem leaves no folder
        env = acquire_env(path, map_size=map_size)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "physics": get_problem(problem).params_to_dict(physics),
            "problem": recorded,
            "preset": preset,
            "encoding": encoding,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": command,
            **({"run": run} if run else {}),
        }
        db = env.open_db(b"meta")
        with begin(env, write=True) as txn:
            for k, v in meta.items():
                txn.put(k.encode(), json.dumps(v).encode(), db=db)
            env.open_db(b"samples", txn=txn)
            env.open_db(b"index", txn=txn)
        release_env(env)

    def check_physics(self, physics, what: str = "samples") -> None:
        """InputError unless `physics` (the problem's parameters) are the store's."""
        p = self.problem
        if p.fingerprint(physics) != p.fingerprint(self.physics):
            raise InputError(
                f"{what} were made with other physics than the store {self.path}: "
                f"{p.params_to_dict(physics)} vs the store's {p.params_to_dict(self.physics)}"
            )

    def close(self) -> None:
        if self.env is not None:
            release_env(self.env)
            self.env = None
        self._unlock()

    def _unlock(self) -> None:
        if getattr(self, "_locked", False):
            self._locked = False
            unlock_writer(self.path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------------------

    def add(self, configs, y: np.ndarray | Sequence[np.ndarray], **meta) -> int:
        """Add solved samples; returns how many were new. Duplicates (by id) are skipped, whatever their split:
        a sample lives in exactly one split and adding it again elsewhere does not move it.

        `y` (n, L, L) is stored in the store's encoding; a list of (k, L, L) blocks with n rows in all (solver
        results as they arrive) is taken as is, without joining them into one copy first. `sampler` and
        `provenance` are one value for all or one per sample; provenance is free-form JSON (e.g. strategy,
        cluster, source model of the surrogate).
        Passing `physics` refuses samples made with other physics than the store's. `meta`: the keyword
        arguments of `records` (split, sampler, round, scores, provenance, physics)."""
        items = self.records(configs, y, **meta)
        added, buf = 0, bytearray()
        for start in range(0, len(items), BATCH):
            added += self._put_batch(items[start : start + BATCH], buf)
        return added

    def add_atomic(self, items: list) -> int:
        """Write `records(...)` items (of one or more calls) in one transaction: all of them or none."""
        return self._put_batch(items, bytearray()) if items else 0

    def records(
        self,
        configs,
        y: np.ndarray | Sequence[np.ndarray],
        *,
        split: str = "train",
        sampler: str | Sequence[str] = "uniform",
        round: int = 0,
        scores: np.ndarray | None = None,
        provenance: dict | Sequence[dict] | None = None,
        physics=None,
    ) -> list[tuple[bytes, dict, np.ndarray]]:
        """Validated (key, header, field) items for `add` / `add_atomic`; InputError before anything is written."""
        if self.readonly:
            raise InputError(f"{self.path} is open read-only")
        if physics is not None:
            self.check_physics(physics)
        check_split(split, allow_all=False)
        p, n, (H, W) = self.problem, len(configs), self.problem.grid(self.physics)
        blocks = [np.asarray(b) for b in ([y] if isinstance(y, np.ndarray) else y)]
        if any(b.ndim != 3 or b.shape[1:] != (H, W) for b in blocks) or sum(map(len, blocks)) != n:
            got = blocks[0].shape if len(blocks) == 1 else [b.shape for b in blocks]
            raise InputError(f"targets must have shape ({n}, {H}, {W}) to match the configs, got {got}")
        fields = [f for b in blocks for f in b]  # n views (H, W)
        arrays = p.to_arrays(self.physics, configs)
        p.from_arrays(self.physics, arrays)  # the problem's own check of each configuration
        schema = p.schema(self.physics)
        samplers = [sampler] * n if isinstance(sampler, str) else list(sampler)
        provs = [provenance or {}] * n if provenance is None or isinstance(provenance, dict) else list(provenance)
        sc = np.full(n, np.nan) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if len(samplers) != n or len(provs) != n or sc.shape != (n,):
            raise InputError(f"sampler, provenance and scores must be one value or {n} values")
        # one pass over each block (no (n, H, W) temporaries): a finite sum means every value is finite; an
        # overflowing sum, a float16 store (which needs the range) or a bad value falls back to min and max
        with np.errstate(over="ignore", invalid="ignore"):
            sums_finite = all(np.isfinite(b.sum()) for b in blocks)
        if self.encoding == "float16" or not sums_finite:
            lo = float(np.min([b.min() for b in blocks if b.size], initial=0.0))  # np.min and np.max
            hi = float(np.max([b.max() for b in blocks if b.size], initial=0.0))  # propagate NaN
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise InputError("targets contain NaN or infinite values")
            if self.encoding == "float16" and max(-lo, hi, 0) > 65504:
                raise InputError("targets exceed the float16 range; use a float32 store")
        ids, strata = p.sample_ids(self.physics, configs), p.strata(self.physics, configs)
        items = []
        for s in range(n):
            header = {
                "id": ids[s],
                "config": config_header(schema, arrays, s),
                "stratum": int(strata[s]),
                "sampler": str(samplers[s]),
                "round": int(round),
                "split": split,
                "score": None if np.isnan(sc[s]) else float(sc[s]),
                "provenance": dict(provs[s]),
                "dtype": self.encoding,
                "shape": [H, W],
                "added": time.time(),
            }
            items.append((ids[s].encode(), header, fields[s]))
        return items

    def _put_batch(self, items: list[tuple[bytes, dict, np.ndarray]], buf: bytearray) -> int:
        """One transaction; records are encoded into `buf` one at a time (LMDB copies each on put).

        The map is grown before a batch that might not fit (doubling until it has room for twice the batch):
        growing only on MapFullError redid the failed batch, and a fresh 1 GB paper store failed 5 times (a
        third of its writes done twice). MapFullError still doubles the map and retries the batch."""
        need = 2 * sum(y.size * ENCODINGS[self.encoding].itemsize + 4096 for _, _, y in items)
        info = self.env.info()
        size, used = info["map_size"], (info["last_pgno"] + 1) * self.env.stat()["psize"]
        if used + need > size:
            while used + need > size:
                size *= 2
            self.env.set_mapsize(size)
        while True:
            try:
                added = 0
                with begin(self.env, write=True) as txn:
                    for key, header, y in items:
                        with encode_record(header, y, self.encoding, buf) as rec:
                            if txn.put(key, rec, db=self._samples, overwrite=False):
                                txn.put(key, encode_index(header_json(rec)), db=self._index)
                                added += 1
                if not self.cache_writes:
                    self.drop_cache()
                return added
            except lmdb.MapFullError:
                self.env.set_mapsize(2 * self.env.info()["map_size"])
            except lmdb.Error as e:  # a failed write or commit (a full disk gives EIO/ENOSPC, a size limit EFBIG)
                raise DiskFull(
                    f"cannot write to {self.path} ({e}): the disk is full or a file size limit was reached; "
                    "everything committed before is kept: free space and re-run the same command to resume"
                ) from None

    def drop_cache(self) -> None:
        """Drop the store's clean (committed, fsync'd) pages from the page cache (after each commit when the
        store was opened with `cache_writes=False`; `bench/store.py` uses it for cold reads).

        A bulk writer never reads back what it wrote, and a paper-scale dataset (~1 MiB per sample) would
        otherwise push everything else out of the cache; dropping them also lets the kernel recycle those page
        frames for the next commit (docs/benchmarks.md, "Measured choices"). Pages still mapped stay."""
        if not hasattr(os, "posix_fadvise"):
            return
        fd = os.open(self.path / "data.mdb", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    # --- reading ---------------------------------------------------------------------------------------------

    def _headers(self) -> Iterable[dict]:
        """Index headers in id order; damaged entries are skipped and listed in `self.damaged`."""
        self.damaged: list[str] = []
        with begin(self.env, buffers=True) as txn:
            try:
                for k, v in txn.cursor(db=self._index):
                    key = bytes(k).decode(errors="replace")
                    try:
                        yield decode_index(v, key)
                    except (CheckError, ValueError) as e:
                        self.damaged.append(f"index entry {key}: {e}" if not str(e).startswith("index") else str(e))
            except lmdb.Error as e:
                raise damaged(self.path, e) from None

    def index(self) -> pd.DataFrame:
        """One row per sample, ordered by id: id, stratum (`Problem.strata`), sampler, round, split, score,
        strategy, cluster, added (unix time)."""
        cols = ["id", "stratum", "sampler", "round", "split", "score", "strategy", "cluster", "added"]
        rows = [
            [
                h["id"],
                stratum_of(h),
                h["sampler"],
                h["round"],
                h["split"],
                np.nan if h["score"] is None else h["score"],
                h["provenance"].get("strategy"),
                h["provenance"].get("cluster"),
                h["added"],
            ]
            for h in self._headers()
        ]
        df = pd.DataFrame(rows, columns=cols)
        return df.astype({"stratum": "int64", "round": "int64", "score": "float64"})

    def ids(self, split: str | None = None) -> list[str]:
        return [h["id"] for h in self._headers() if split in (None, "all", h["split"])]

    def count(self, split: str | None = None) -> int:
        if split is None or split == "all":
            with begin(self.env) as txn:
                return int(txn.stat(self._samples)["entries"])
        return len(self.ids(split))

    def configs(self, split: str | None = None):
        """The configurations of a split (all if None), ordered by id: the problem's batch."""
        return self.configs_of(h for h in self._headers() if split in (None, "all", h["split"]))

    def configs_of(self, headers):
        """The configurations of record or index headers, in their order."""
        return configs_from_headers(self.problem, self.physics, headers)

    def get(self, ids: Sequence[str], skip_damaged: bool = False) -> tuple[object, np.ndarray, list[dict]]:
        """(configs, y (n, H, W) float32, headers) for the ids, in order; checksums are verified. With
        `skip_damaged`, records that fail their checksum are left out and listed in `self.damaged`."""
        y = np.empty((len(ids), *self.problem.grid(self.physics)), np.float32)  # (n, H, W)
        headers = []
        self.damaged = []
        with begin(self.env, buffers=True) as txn:
            for i in ids:
                try:
                    buf = txn.get(str(i).encode(), db=self._samples)
                except lmdb.Error as e:
                    raise damaged(self.path, e) from None
                if buf is None:
                    raise InputError(f"no sample {i!r} in {self.path}")
                try:
                    h, _ = decode_record(buf, str(i), y[len(headers)])
                except CheckError as e:
                    if not skip_damaged:
                        raise
                    self.damaged.append(str(e))
                    continue
                headers.append(h)
        y = y[: len(headers)]
        return self.configs_of(headers), y, headers
