"""cncnn's own warnings reach people as one ``warning:`` line; other libraries' keep Python's format."""
from __future__ import annotations

from cncnn_cli.cli.main import format_warning
from cncnn_cli.data.dataset import UnreadableImageWarning


def test_cncnn_warnings_are_one_line_and_others_keep_their_source():
    ours = format_warning(UnreadableImageWarning("skipping unreadable image a.jpg: truncated"),
                          UnreadableImageWarning, "sampling.py", 63)
    assert ours == "warning: skipping unreadable image a.jpg: truncated\n"
    theirs = format_warning(UserWarning("something else"), UserWarning, "lib.py", 7, line="")
    assert theirs.startswith("lib.py:7: UserWarning: something else")
