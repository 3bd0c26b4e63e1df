"""The `curate` app: the command table, the error table, and `main()`.

The command modules define plain functions over library calls; this module registers them (they never import
the app), so `import diffcurate.curate.cli.app` stays cheap: no torch, scipy or Ray until a command runs.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from importlib import metadata
from typing import Annotated

import typer

from diffcurate.common.errors import CheckError, ClusterUnavailable, InputError, Terminated, terminate_as_interrupt
from diffcurate.curate.cli import estimate, model, physics, run, store
from diffcurate.curate.store.errors import DiskFull, StoreDamaged
from diffcurate.curate.store.lock import read_only

HELP = (
    "Curate training sets for neural surrogates of a steady diffusion-decay PDE: generate and solve source "
    "configurations, train a surrogate, and add the configurations it gets most wrong, round after round."
)

# (name, function): the order is the order of `curate --help`
COMMANDS = [
    ("init", run.init_cmd),
    ("run", run.run_cmd),
    ("status", run.status_cmd),
    ("report", run.report_cmd),
    ("generate", store.generate_cmd),
    ("info", store.info_cmd),
    ("verify", store.verify_cmd),
    ("export", store.export_cmd),
    ("import", store.import_cmd),
    ("solve", physics.solve_cmd),
    ("problems", physics.problems_cmd),
    ("presets", physics.presets_cmd),
    ("samplers", physics.samplers_cmd),
    ("model-info", model.model_info_cmd),
    ("train", model.train_cmd),
    ("evaluate", model.evaluate_cmd),
    ("export-model", model.export_model_cmd),
    ("estimate-eval", estimate.estimate_eval_cmd),
    ("predict", estimate.predict_cmd),
]

_INTERRUPTED = "interrupted: everything committed so far is kept; re-run the same command to resume"

# exception type -> (exit code, message prefix); the first matching row wins, so subclasses come first
ERRORS: list[tuple[tuple[type[BaseException], ...], int, str]] = [
    ((DiskFull, ClusterUnavailable), 1, "error: "),
    ((StoreDamaged,), 1, "damaged: "),
    ((CheckError,), 1, "check failed: "),
    ((InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError), 2, "error: "),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"diffcurate {version()}")
        raise typer.Exit(0)


def version() -> str:
    try:
        return metadata.version("diffcurate")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _root(
    _v: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Curate training sets for neural surrogates of a steady diffusion-decay PDE."""


def make_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)
    app.callback()(_root)
    for name, fn in COMMANDS:
        app.command(name)(fn)
    return app


app = make_app()


def _fail(code: int, message: str) -> None:
    if message:
        typer.echo(message, err=True)
    sys.exit(code)


def main() -> None:
    """Run the app; errors become one line on stderr and an exit code (CURATE_DEBUG=1: the traceback too)."""
    terminate_as_interrupt()
    try:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the work is done and said: a SIGTERM now changes nothing
        if isinstance(code, int) and code:
            sys.exit(code)
    except (typer.Abort, KeyboardInterrupt):
        _fail(143 if Terminated.received else 130, _INTERRUPTED)  # SIGTERM: 128 + 15
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.TyperException as e:  # usage errors: unknown option, bad value, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `curate`: rich has printed the help
            _fail(2, e.format_message())
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(2, f"error: {e.format_message()}{hint}")
    except Exception as e:
        cause = _os_error(_cause(e))
        for types, code, prefix in ERRORS:
            if isinstance(cause, types):
                if os.environ.get("CURATE_DEBUG") == "1":
                    traceback.print_exc()
                _fail(code, f"{prefix}{cause}")
        raise


def _os_error(e: BaseException) -> BaseException:
    """An access the filesystem refused that no check caught first (a read-only mount; no permission): one line
    naming the file, exit 2, like the checks' refusals; a full disk, or a file size limit, is `DiskFull` (exit 1)
    for every command, as for the store's own commits."""
    import errno

    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return read_only(e.filename or "a file", e)
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
        return InputError(f"{e.filename or 'a file'}: {e.strerror.lower()}")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {e.filename}" if e.filename else ""
        return DiskFull(
            f"{e.strerror.lower()}{where}: the disk is full or a file size limit was reached; nothing partial was "
            "kept: free space and re-run the same command"
        )
    return e


def _cause(e: BaseException) -> BaseException:
    """The exception an actor or task raised, for one that Ray re-raises in the driver (a RayTaskError, whose
    message is the remote traceback): the same table and one line as a local error."""
    while any(c.__name__ == "RayTaskError" for c in type(e).__mro__) and isinstance(
        getattr(e, "cause", None), BaseException
    ):
        e = e.cause
    return e


if __name__ == "__main__":
    main()
