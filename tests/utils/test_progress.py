"""The shared progress display: a rich bar on a terminal, plain periodic lines elsewhere, never stdout."""
from __future__ import annotations

import io
import os
import pty
import re
import select
import sys

from cncnn_cli.utils import progress as progress_module
from cncnn_cli.utils.progress import progress


def test_plain_lines_when_not_a_terminal(monkeypatch):
    clock = iter(float(t) for t in range(0, 100, 4))  # every advance is 4 s later
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    with progress("evaluating", total=5, unit="images", stream=stream, interval=10) as bar:
        for _ in range(5):
            bar.advance()
    assert stream.getvalue().splitlines() == [  # at 12 s (10 s after the start), then the final line at 24 s
        "evaluating: 3 images of 5 images (60%), 0.2 images/s, 0:08 left",
        "evaluating: 5 images of 5 images (100%), 0.2 images/s",
    ]


def test_a_short_task_prints_nothing_when_not_a_terminal():
    stream = io.StringIO()
    with progress("predicting", total=None, unit="images", stream=stream) as bar:
        bar.advance(3)
    assert stream.getvalue() == ""


def test_a_rich_bar_on_a_terminal():
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            stdout = sys.stdout
            with progress("downloading", total=2_000_000, unit="B", stream=terminal) as bar:
                assert sys.stdout is stdout  # results printed meanwhile (--jsonl) stay on stdout
                bar.advance(1_000_000)
                bar.advance(1_000_000)
            terminal.flush()
        drawn = b""
        while select.select([leader], [], [], 0.5)[0]:
            drawn += os.read(leader, 65536)
        drawn = drawn.decode("utf-8", "replace")
    finally:
        os.close(leader)
        os.close(follower)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert "downloading" in text and "2.0/2.0 MB" in text and "━" in text


def test_a_disabled_bar_counts_and_prints_nothing(capsys):
    with progress("rank 1", total=4, enabled=False) as bar:
        bar.advance(4)
    assert bar.completed == 4 and capsys.readouterr() == ("", "")
