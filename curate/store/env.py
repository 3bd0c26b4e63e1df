"""The store's LMDB environments: opening them (map-file check, readahead for readers), one shared,
reference-counted environment per store and process, transactions counted so that a forked child (a DataLoader
worker) may close what it inherited, and the one message for damaged LMDB pages."""

from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from pathlib import Path

import lmdb

from diffcurate.common.errors import InputError, hint
from diffcurate.curate.store.errors import StoreDamaged

INITIAL_MAP_SIZE = 64 << 20  # modest on purpose: the map doubles on MapFullError
MAX_DBS = 4


def damaged(path, error: Exception, what: str = "pages") -> StoreDamaged:
    """The one error for LMDB damage found while reading or opening a store."""
    return StoreDamaged(f"{path}: the store's LMDB {what} are damaged ({error}); run {hint('verify', '--store', path)}")


def check_map_file(path: str | os.PathLike) -> None:
    """StoreDamaged if data.mdb is shorter than its newest meta page says: mapping it would end in SIGBUS.

    Reads LMDB's two meta pages (page 0 and 1) directly: magic 0xBEEFC0DE at byte 16, the page size in the free
    DB's md_pad (byte 40), mm_last_pg (byte 136) and mm_txnid (byte 144); the meta with the larger txnid wins."""
    f = Path(path) / "data.mdb"
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(16 + 136)
            if len(head) < 152:
                raise StoreDamaged(f"{path}: data.mdb is truncated ({size} bytes); restore it from a copy")
            (magic,) = struct.unpack_from("<I", head, 16)
            if magic != 0xBEEFC0DE:
                raise StoreDamaged(f"{path}: data.mdb is not an LMDB file or its first meta page is damaged")
            (psize,) = struct.unpack_from("<I", head, 40)
            if psize < 512 or psize & (psize - 1):
                raise StoreDamaged(f"{path}: data.mdb's meta page gives page size {psize}: damaged")
            metas = []
            for page in (0, 1):
                fh.seek(page * psize)
                m = fh.read(152)
                if len(m) == 152 and struct.unpack_from("<I", m, 16)[0] == 0xBEEFC0DE:
                    metas.append(struct.unpack_from("<QQ", m, 136))  # (last_pg, txnid)
    except OSError as e:
        raise StoreDamaged(f"{path}: cannot read data.mdb ({e.strerror})") from None
    last_pg = max(metas, key=lambda lt: lt[1])[0]
    if size < (last_pg + 1) * psize:
        raise StoreDamaged(
            f"{path}: data.mdb is truncated ({size} bytes, its pages need {(last_pg + 1) * psize}); "
            "restore it from a copy"
        )


def is_store(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / "data.mdb").is_file()


# set in the environment of processes that must never open a store (a cluster's worker nodes: only the driver
# opens the store, on its own disk): an attempt is then an error instead of a silent read of a remote filesystem
NO_STORE = "DIFFCURATE_NO_STORE"


def refuse_if_forbidden(path: str | os.PathLike) -> None:
    if os.environ.get(NO_STORE, "") not in ("", "0"):
        raise InputError(f"this process may not open a store ({NO_STORE} is set): only the driver opens {path}")


def open_env(
    path: str | os.PathLike, readonly: bool = True, map_size: int = INITIAL_MAP_SIZE, lock: bool = True
) -> lmdb.Environment:
    """A private LMDB environment (DataLoader workers: readonly, lock=False, opened lazily after the fork,
    since an environment used across fork is undefined behaviour).

    Readahead for read-only environments only. A record is 4 (L = 64) to 257 (L = 512) pages, and without
    readahead a cold read faults them in one 4 KiB I/O at a time; the writer's faults are B-tree pages, where
    readahead only drags in neighbouring record pages (docs/benchmarks.md, "Measured choices")."""
    refuse_if_forbidden(path)
    return lmdb.open(
        str(path),
        map_size=map_size,
        max_dbs=MAX_DBS,
        subdir=True,
        readonly=readonly,
        lock=lock or not readonly,
        readahead=readonly,
        create=not readonly,
    )


# LMDB allows one environment per store per process (py-lmdb refuses a second, even in a forked child that
# inherited it), so every Store and main-process Dataset on a path shares one, reference-counted, and a forked
# child (a DataLoader worker) closes the inherited ones so that it can open its own. Closing is safe only with
# no transaction live at the fork (aborting one would free the parent's reader slot), so `begin` counts them.
_ENVS: dict[str, list] = {}  # realpath -> [env, pid, refs]
_LIVE: dict[int, int] = {}  # id(env) -> live transactions


@contextmanager
def begin(env: lmdb.Environment, write: bool = False, buffers: bool = False):
    """env.begin(), counted so that a forked child knows whether it may close the inherited environment."""
    k = id(env)
    _LIVE[k] = _LIVE.get(k, 0) + 1
    try:
        try:
            txn = env.begin(write=write, buffers=buffers)
        except lmdb.MapResizedError:  # another process grew the map: adopt its size
            env.set_mapsize(0)
            txn = env.begin(write=write, buffers=buffers)
        with txn:
            yield txn
    finally:
        _LIVE[k] -= 1


def _close_inherited() -> None:
    for env, _pid, _refs in _ENVS.values():
        if _LIVE.get(id(env), 0) == 0:
            env.close()
    _ENVS.clear()
    _LIVE.clear()


os.register_at_fork(after_in_child=_close_inherited)


def acquire_env(path: str | os.PathLike, map_size: int = INITIAL_MAP_SIZE, write: bool = True) -> lmdb.Environment:
    """The process's environment for `path`. Readers (`write=False`) share a writer's if one is open, else get a
    read-only one with readahead; a writer cannot share a reader's (close the reader first)."""
    key, pid = os.path.realpath(path), os.getpid()
    can_write = os.access(key, os.W_OK)
    entry = _ENVS.get(key)
    if entry is not None and entry[1] == pid:
        if write and can_write and entry[0].flags()["readonly"]:
            raise InputError(
                f"{path} is open read-only in this process (a Dataset or a read-only Store); close it before "
                "opening the store for writing"
            )
        entry[2] += 1
        return entry[0]
    if os.path.isfile(os.path.join(key, "data.mdb")):
        check_map_file(key)
    try:
        env = open_env(key, readonly=not (write and can_write), map_size=map_size, lock=can_write)
    except lmdb.Error as e:
        if os.path.isfile(os.path.join(key, "data.mdb")):
            raise damaged(path, e, "files") from None
        raise InputError(f"{path}: cannot open as a store ({e})") from None
    _ENVS[key] = [env, pid, 1]
    return env


def release_env(env: lmdb.Environment) -> None:
    for key, entry in list(_ENVS.items()):
        if entry[0] is env and entry[1] == os.getpid():
            entry[2] -= 1
            if entry[2] == 0:
                del _ENVS[key]
                env.close()
            return
