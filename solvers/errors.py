"""Typed errors shared by every layer; the CLI edge turns them into one line on stderr and an exit code."""


class InputError(ValueError):
    """Bad input or usage (wrong shapes, unknown names, missing files, mismatched physics): exit code 2."""


class CheckError(RuntimeError):
    """A check ran and found a problem (e.g. `verify` finds a corrupt record): exit code 1."""
