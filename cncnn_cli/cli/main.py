"""The ``cncnn`` command line: one Typer app, one module per command (group).

``main()`` turns every :class:`CncnnError` into one line on stderr and its exit code
(2 bad input, 1 run failed) and Ctrl-C into exit 130 — never a traceback for people.
"""
from __future__ import annotations

import gc
import sys
import warnings
from pathlib import Path

import typer

from cncnn_cli.cli import ablate, benchmark, catalog, convert, data, evaluate, export, predict, train, visualize
from cncnn_cli.cli import calibrate, embed, gallery
from cncnn_cli.cli.common import err_console, remember_invocation
from cncnn_cli.errors import CncnnError

app = typer.Typer(
    name="cncnn",
    help="CN-CNN fine-grained image classification: train, eval, predict, visualize, ablate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from cncnn_cli import __version__

        print(f"cncnn {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the cncnn version and exit."),
) -> None:
    """CN-CNN fine-grained image classification: train, eval, predict, visualize, ablate."""


app.command()(train.train)
app.command("eval")(evaluate.evaluate)
app.command()(ablate.ablate)
app.command()(predict.predict)
app.command()(benchmark.benchmark)
app.command()(visualize.visualize)
app.add_typer(convert.app, name="convert")
app.add_typer(data.app, name="data", help="Get and inspect datasets: download, verify archives, check counts and images.")
app.command()(catalog.plugins)
app.command()(catalog.recipes)
app.command()(catalog.info)
app.command()(export.export)
app.command()(embed.embed)
app.command()(calibrate.calibrate)
app.add_typer(gallery.app, name="gallery")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; the console script exits with it)."""
    warnings.formatwarning = format_warning
    argv = expand_cfg_options(normalize_resume(list(sys.argv[1:] if argv is None else argv)))
    remember_invocation(argv)
    try:
        app(args=argv, prog_name="cncnn")  # standalone mode: usage errors print and exit 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CncnnError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    finally:
        end_distributed()
    return 0


_python_format = warnings.formatwarning


def format_warning(message, category, filename, lineno, line=None) -> str:
    """cncnn's own warnings (a skipped image, ...) as one ``warning:`` line; others as Python formats them.

    Python's format adds the file and line of the code that warned and that line's source, which
    tell a user nothing. Only the text changes, so ``catch_warnings(record=True)`` and pytest still
    record every warning; loader workers inherit it from the main process.
    """
    if category.__module__.startswith(("cncnn_cli", "cncnn_plugins")):
        return f"warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


def end_distributed() -> None:
    """End the process group a DDP run joined, and join its gloo worker threads while Python still runs.

    ``destroy_process_group`` only forgets the group: the runner's reference cycles (the DDP
    wrapper, its reducer) keep it, and gloo's worker threads, alive into interpreter shutdown.
    A worker still releasing the tensor of the run's last collective (the metrics' broadcast)
    then needs the GIL, and a thread that asks for it during shutdown ends the rank with
    SIGABRT ("terminate called without an active exception") after its work is done; a loaded
    machine makes that likely. So: hold the group, collect the cycles (they release theirs), and
    drop the last reference here; torch destroys a group with the GIL released, so its
    destructor can wait for the workers.
    """
    dist = sys.modules.get("torch.distributed")  # only loaded by commands that use torch
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    group = dist.group.WORLD
    dist.destroy_process_group()
    gc.collect()
    del group


def normalize_resume(argv: list[str]) -> list[str]:
    """``--resume`` may stand alone (the work dir's state) or take a path: give it ``auto`` when alone.

    What follows ``--resume`` is its value when it is ``auto``, an existing path or looks like one
    (``*.pth``, or with a ``/``: a missing file then gets its own error); anything else (another
    option, the recipe) is not.
    """
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--resume":
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is None or not _resume_value(following):
                out.append("auto")
    return out


def _resume_value(arg: str) -> bool:
    if arg.startswith("-"):
        return False
    return arg == "auto" or Path(arg).exists() or arg.endswith(".pth") or "/" in arg


def expand_cfg_options(argv: list[str]) -> list[str]:
    """``--cfg-options a=1 b=2`` as mmengine's tools take it (``nargs='+'``) → one flag per pair, as Typer takes it."""
    out: list[str] = []
    in_options = False
    for arg in argv:
        if in_options and "=" in arg and not arg.startswith("-") and out[-1] != "--cfg-options":
            out.append("--cfg-options")
        elif arg.startswith("-"):
            in_options = arg == "--cfg-options" or arg.startswith("--cfg-options=")
        out.append(arg)
    return out


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
