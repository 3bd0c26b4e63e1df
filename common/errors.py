"""Typed errors shared by every layer; the CLI edge turns them into one line on stderr and an exit code."""


class InputError(ValueError):
    """Bad input or usage (wrong shapes, unknown names, missing files, mismatched physics): exit code 2."""


class CheckError(RuntimeError):
    """A check ran and found a problem (e.g. `verify` finds a corrupt record): exit code 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job: SLURM, Kubernetes, spot preemption), raised in the main thread like
    Ctrl-C so that the same cleanup runs; the CLI reports it with the interrupted line and exit code 143."""

    received = False  # set by the handler: typer turns any KeyboardInterrupt into its own exit, this survives it


def terminate_as_interrupt() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (a no-op elsewhere). Ray replaces the handler when a
    driver connects, so `ray_session` calls this again after `ray.init`."""
    import signal
    import threading

    def handler(signum, frame):
        Terminated.received = True
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


class ClusterUnavailable(CheckError):
    """Ray could not be started or reached (a loaded machine, a stopped cluster): nothing was written, and the same
    command run again resumes (exit 1)."""


def hint(*args) -> str:
    """A command to print in a message, quoted so that it runs as printed: hint("verify", "--store", p) ->
    "`curate verify --store p`"."""
    import shlex

    return "`" + shlex.join(["curate", *map(str, args)]) + "`"
