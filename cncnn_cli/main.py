"""The ``cncnn`` command line: one Typer app, one module per command (group).

``main()`` turns every :class:`CncnnError` into one line on stderr and its exit code
(2 bad input, 1 run failed) and Ctrl-C into exit 130 — never a traceback for people.
"""
from __future__ import annotations

import sys

import typer

from cncnn_cli.commands import catalog, convert, predict
from cncnn_cli.commands.common import err_console
from cncnn_cli.errors import CncnnError

app = typer.Typer(
    name="cncnn",
    help="CN-CNN fine-grained image classification: train, eval, predict, visualize, ablate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(predict.predict)
app.add_typer(convert.app, name="convert")
app.command()(catalog.plugins)
app.command()(catalog.recipes)
app.command()(catalog.info)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; the console script exits with it)."""
    try:
        app(args=argv, prog_name="cncnn")  # standalone mode: usage errors print and exit 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CncnnError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
