"""The options ``cncnn train`` and ``cncnn ablate`` share, built from the flag table of the config.

Typer reads a command's options from its signature, so :func:`training_command` gives the
command a real one: its own parameters, then one option per :data:`~cncnn_cli.config.flags.FLAGS`
entry, ``--cfg-options`` and ``--plugin``. The command itself receives the flags that were given
(``flags``, as ``resolve_config`` takes them) and ``cfg_options``, with the plugins loaded.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cncnn_cli.cli.common import PluginOption, folder_path, setup
from cncnn_cli.config.flags import FLAGS, Flag, given_flags

CfgOptionsOpt = Annotated[Optional[list[str]], typer.Option(
    help="key=value overrides applied last, e.g. train_cfg.val_interval=5 (repeatable).")]


def flag_option(flag: Flag) -> Any:
    """The typer annotation of one flag: an on-switch, or an optional value (a folder's kind checked)."""
    option = typer.Option(flag.option, help=flag.help, min=flag.min, max=flag.max, show_default=False,
                          callback=folder_path if flag.type is Path else None)
    return Annotated[bool if flag.switch else Optional[flag.type], option]


def training_command(without: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the training flags (but those named in ``without``, which it declares its own way).

    The command takes ``flags`` and ``cfg_options`` keywords instead of the options themselves.
    """
    shared = [flag for flag in FLAGS if flag.name not in without]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [param for name, param in inspect.signature(command, eval_str=True).parameters.items()
               if name not in ("flags", "cfg_options")]
        options = [inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, annotation=flag_option(flag),
                                     default=False if flag.switch else None) for flag in shared]
        options += [inspect.Parameter("cfg_options", inspect.Parameter.KEYWORD_ONLY, annotation=CfgOptionsOpt,
                                      default=None),
                    inspect.Parameter("plugin", inspect.Parameter.KEYWORD_ONLY, annotation=PluginOption,
                                      default=None)]

        @functools.wraps(command)
        def run(*, cfg_options: list[str] | None, plugin: list[Path] | None, **values: Any) -> None:
            setup(plugin)
            flags = given_flags({flag.name: values.pop(flag.name) for flag in shared})
            command(**values, flags=flags, cfg_options=cfg_options)

        run.__signature__ = inspect.Signature([*own, *options])  # type: ignore[attr-defined]
        run.__annotations__ = {param.name: param.annotation for param in (*own, *options)}
        return run

    return decorate
