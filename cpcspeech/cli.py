"""The `cpcspeech` command line: parses options, calls one library function, prints a summary.

This is the only module that imports typer. It holds no logic of its own.
"""

import sys
from typing import NoReturn

import typer
from rich.console import Console

from cpcspeech.errors import CPCSpeechError

app = typer.Typer(
    name="cpcspeech",
    help="Contrastive Predictive Coding for speech: extract, train, probe, plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def fail(err: Exception, code: int = 2) -> NoReturn:
    """Print a user-facing error without a traceback and exit non-zero."""
    console.print(f"[bold red]error:[/] {err}", highlight=False)
    raise typer.Exit(code)


def run_guarded(fn, *args, **kwargs):
    """Call a library function, turning CPCSpeechError into a clean message and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except CPCSpeechError as err:
        fail(err)


@app.callback()
def _root() -> None:
    """Contrastive Predictive Coding for speech: extract, train, probe, plot."""


# Commands are added below, one block per command, each a thin wrapper over the library.


def main() -> None:  # pragma: no cover - entry point for `python -m cpcspeech`
    app()
    sys.exit(0)
