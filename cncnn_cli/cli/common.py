"""Pieces every command shares: consoles, the ``--plugin`` option, path-kind checks, the default checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.paths import check_file, check_folder

#: People read stderr; stdout is reserved for results (and exactly one JSON document with --json).
err_console = Console(stderr=True)
out_console = Console()


def _option_name(param: typer.CallbackParam) -> str:
    """How the user wrote the parameter: ``--work-dir``, or an argument's ``SRC``."""
    return max(param.opts, key=len) if param.param_type_name == "option" else (param.name or "").upper()


def _each(value: object) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def folder_path(param: typer.CallbackParam, value: object) -> object:
    """Typer callback of a path option naming a folder (made if missing): a file there is one line, exit 2."""
    for path in _each(value):
        check_folder(path, _option_name(param))
    return value


def file_path(param: typer.CallbackParam, value: object) -> object:
    """Typer callback of a path option naming a file: a folder there is one line, exit 2."""
    for path in _each(value):
        check_file(path, _option_name(param))
    return value


PluginOption = Annotated[
    Optional[list[Path]],
    typer.Option("--plugin", help="Python file that registers extra plugins (repeatable).",
                 show_default=False, callback=file_path),
]


MaxPixelsOption = Annotated[
    Optional[int],
    typer.Option("--max-pixels", min=1, show_default=False,
                 help="Accept images of up to this many pixels (default: PIL's guard, about 179 million)."),
]

CompileOption = Annotated[
    bool,
    typer.Option("--compile", help="Run the model under torch.compile (inductor: needs a C++ compiler on CPU, "
                                   "Triton on CUDA); the first batch compiles first."),
]


_invocation: list[str] = []


def remember_invocation(argv: list[str]) -> None:
    """Keep the command line so a command can print how to run it again (e.g. to resume)."""
    _invocation[:] = list(argv)


def invocation() -> list[str]:
    return list(_invocation)


def setup(plugins: list[Path] | None, max_pixels: int | None = None) -> None:
    """Register built-in, entry-point and ``--plugin`` file plugins; apply ``--max-pixels``."""
    from cncnn_cli.registry import load_plugins

    load_plugins(tuple(plugins or ()))
    if max_pixels is not None:
        from cncnn_cli.data.images import set_max_pixels

        set_max_pixels(max_pixels)


def complete_recipe(incomplete: str) -> list[str]:
    """Shell completion of bundled recipe names (cheap: it lists a folder, imports nothing heavy)."""
    from cncnn_cli.config.recipes import bundled_names

    return [name for name in bundled_names() if name.startswith(incomplete)]


def default_checkpoint(work_dirs: Path = Path("work_dirs")) -> Path:
    """The newest ``best.safetensors`` under ``./work_dirs/``, named on stderr."""
    candidates = sorted(work_dirs.glob("**/best.safetensors"), key=lambda p: p.stat().st_mtime) \
        if work_dirs.is_dir() else []
    if not candidates:
        raise CncnnError(
            f"no checkpoint given and none found under ./{work_dirs}/. Train one (`cncnn train demo`), "
            f"import the authors' weights (`cncnn convert official SRC DST`), or pass --checkpoint PATH."
        )
    chosen = candidates[-1]
    err_console.print(f"using checkpoint {chosen}", markup=False, highlight=False, soft_wrap=True)
    return chosen
