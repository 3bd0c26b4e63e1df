"""One writer per store at a time, across processes: an exclusive flock on STORE/writer.lock, taken by every
writable Store for as long as it is open (planning included) and released by the kernel when the process dies, so
a kill -9 never leaves it stale. Reference-counted per process like the environments; readers never take it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from diffcurate.common.errors import InputError

LOCK_FILE = "writer.lock"
_WRITERS: dict[str, list] = {}  # realpath -> [fd, pid, refs]


def hold_exclusive(path: str | os.PathLike, wait: bool, refused: Callable[[str], str], waiting: Callable[[str], str]):
    """An fd holding an exclusive flock on the file `path`, its text this process's pid. While another process
    holds it: wait, with the line `waiting(holder pid)` on stderr, or (`wait` False) raise InputError(`refused(holder
    pid)`). The kernel releases it when the fd closes or the process dies."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # a read-only place: the CLI's error table, one line
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        if not wait:
            os.close(fd)
            raise InputError(refused(holder)) from None
        print(waiting(holder), file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def read_only(path: str | os.PathLike, e: OSError) -> InputError:
    """The one-line refusal for a place this process may not write (a read-only mount, or no write permission)."""
    return InputError(f"{path} is read-only here ({e.strerror.lower()}); writing needs write access to it")


def check_writable(path: str | os.PathLike) -> None:
    """InputError (one line) unless this process can write `path`, or, if it does not exist yet, create it in its
    nearest existing parent: refused before any work starts rather than at the first write."""
    import errno

    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    if not os.access(p, os.W_OK):
        why = errno.EROFS if _read_only_mount(p) else errno.EACCES
        raise read_only(p, OSError(why, os.strerror(why)))


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def lock_writer(path: str | os.PathLike, wait: bool = True) -> None:
    """Take the store's writer lock (waiting, with one line on stderr, while another process holds it)."""
    key, pid = os.path.realpath(path), os.getpid()
    entry = _WRITERS.get(key)
    if entry is not None and entry[1] == pid:
        entry[2] += 1
        return
    fd = hold_exclusive(
        os.path.join(key, LOCK_FILE),
        wait,
        refused=lambda holder: f"{path} is being written by another process (pid {holder}); try again when it ends",
        waiting=lambda holder: f"waiting for the other writer of {path} (pid {holder}) to finish",
    )
    _WRITERS[key] = [fd, pid, 1]


def unlock_writer(path: str | os.PathLike) -> None:
    import fcntl

    key = os.path.realpath(path)
    entry = _WRITERS.get(key)
    if entry is None or entry[1] != os.getpid():
        return
    entry[2] -= 1
    if entry[2] == 0:
        del _WRITERS[key]
        fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])


def _close_inherited() -> None:
    for fd, _pid, _refs in _WRITERS.values():  # the parent keeps its lock: this only drops the child's copy
        os.close(fd)
    _WRITERS.clear()


os.register_at_fork(after_in_child=_close_inherited)
