"""The store's own failures, kept light so that the CLI's error table imports them without LMDB or pandas."""

from diffcurate.common.errors import CheckError


class StoreDamaged(CheckError):
    """The store's files are damaged (LMDB pages, a truncated data.mdb): exit 1, as `verify` finding damage."""


class DiskFull(CheckError):
    """A commit failed for lack of space: what was committed before is kept (exit 1)."""
