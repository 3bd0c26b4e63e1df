"""The splits a sample belongs to, and the one check of a split name a user gives."""

from __future__ import annotations

from diffcurate.common.errors import InputError

SPLITS = ("train", "val", "test")
ALL = "all"  # every split at once, where a command reads (load, export)


def check_split(split: str, allow_all: bool = True) -> str:
    """`split`, or one InputError naming the choices."""
    if split in SPLITS or (allow_all and split == ALL):
        return split
    choices = ", ".join(SPLITS) + (f" or {ALL}" if allow_all else "")
    raise InputError(f"unknown split {split!r} (choose {choices})")
