"""`curate`: the command line. Thin: each command parses options and calls a library function.

Errors are typed (solvers.errors): InputError -> one line on stderr, exit 2; CheckError -> exit 1.
Command groups live in curate/commands/, one module per area, each registering on `app`.
"""

from __future__ import annotations

import sys

import typer

from solvers.errors import CheckError, InputError

# click's exception base, as typer raises it: typer >= 0.2x vendors its own click (whose errors are not
# click.ClickException), older typer re-exports click's
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])


def _register_commands() -> None:
    """Import the command modules; each decorates its commands onto `app`. Imported lazily so that
    `import curate.cli` stays cheap and tests can call the library functions without the CLI."""
    from curate.commands import estimate, model, physics, run, store  # noqa: F401


_INTERRUPTED = "interrupted: everything committed so far is kept; re-run the same command to resume"


def main() -> None:
    _register_commands()
    try:
        # commands return None; typer >= 0.2x turns Ctrl-C into Exit(130) and, outside standalone mode, returns
        # that code instead of raising (which had ended an interrupted run silently with exit 0)
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except CheckError as e:
        typer.echo(f"check failed: {e}", err=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):  # (older typer: click's Abort)
        typer.echo(_INTERRUPTED, err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except _CLICK_ERROR as e:  # usage errors: unknown option, bad value, missing argument
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `curate` / group: the help (rich has printed it)
            if e.format_message():
                typer.echo(e.format_message(), err=True)
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"error: {e.format_message()}{hint}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # `python -m curate.cli`: commands register on the imported module's app
    from curate.cli import main as _main

    _main()
