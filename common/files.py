"""The one atomic write: a temp file next to the target, renamed onto it, so that a kill mid-write leaves the
previous file (or none) and never a torn one: run state, configs, checkpoints, calibrations, exports and their
cards, the study's records."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def shared_mode() -> int:
    """The permissions a plain `open` would give a new file under the process's umask (0644 under 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, make_parent: bool = False) -> Iterator[Path]:
    """A temp path (`.NAME.XXXX.tmp`, next to `path`) to write to; renamed onto `path` when the block ends, with
    the permissions of a plain `open`, and removed if the block raises."""
    path = Path(path)
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, shared_mode())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, make_parent=True) as tmp:
        tmp.write_bytes(data)


def atomic_text(path: str | os.PathLike, text: str) -> None:
    atomic_bytes(path, text.encode())


def atomic_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    atomic_text(path, json.dumps(obj, indent=indent))
