"""Text in and out of cncnn, with one encoding policy.

In: the text files people write (classes files, recipes, annotation lists) are UTF-8; a UTF-8
byte-order mark is accepted. A file in another encoding is one line naming the file, the byte
offset and how to re-encode it (exit 2), never a traceback.

Out: every file and stream cncnn writes (CSV, JSON, JSONL, tables) is valid UTF-8. File names
need not be: on Linux a name is bytes, which Python decodes with ``surrogateescape``. A byte
that is not UTF-8 is written as the four characters ``\\xNN`` (``café.jpg`` named in Latin-1
reads ``caf\\xe9.jpg``), the way Python's ``backslashreplace`` writes it.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from cncnn_cli.errors import CncnnError


def read_text_file(path: str | Path, what: str = "") -> str:
    """The UTF-8 text of ``path``; :class:`CncnnError` (exit 2) naming the file and the first bad byte.

    ``what`` says which file it is for the message (``"--classes"``, ``"recipe"``).
    """
    path = Path(path)
    label = f"{what} {output_text(str(path))}" if what else output_text(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CncnnError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        name, fixed = shlex.quote(output_text(str(path))), shlex.quote(output_text(f"{path}.utf8"))
        raise CncnnError(f"{label}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line}); "
                         f"re-encode it as UTF-8, e.g. from Latin-1/cp1252: "
                         f"iconv -f cp1252 -t utf-8 {name} > {fixed} && mv {fixed} {name}") from None


def output_text(text: str) -> str:
    """``text`` ready for any output: each byte of a file name that is not UTF-8 becomes ``\\xNN``.

    Such bytes reach Python as the lone surrogates U+DC80..U+DCFF (``surrogateescape``); any other
    character that UTF-8 cannot hold becomes a ``\\uNNNN`` escape. Text without either is returned as is.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(f"\\x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF
                       else char.encode("utf-8", "backslashreplace").decode("utf-8") for char in text)


def output_value(value: Any) -> Any:
    """:func:`output_text` applied to every string in ``value`` (dicts, lists, tuples), for JSON documents."""
    if isinstance(value, str):
        return output_text(value)
    if isinstance(value, dict):
        return {output_value(key): output_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [output_value(item) for item in value]
    return value
