"""One progress display for every long command, always on stderr (stdout carries results only).

On a terminal: a rich bar with the count, the speed and the time left. Elsewhere (CI logs,
``nohup``, a pipe): one plain line every ``interval`` seconds and one at the end, so a log
shows that work goes on without filling up with redraws; a task shorter than ``interval``
prints nothing.

    with progress("evaluating", total=len(loader.dataset), unit="images") as bar:
        for batch in loader:
            ...
            bar.advance(len(batch))
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: Seconds between two plain lines when stderr is not a terminal.
PLAIN_INTERVAL_S = 10.0


class Bar:
    """What a task reports to: ``advance(n)`` after each unit of work, ``total`` once it is known."""

    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0.0

    def advance(self, amount: float = 1) -> None:
        self.completed += amount

    def set_total(self, total: float | None) -> None:
        self.total = total


class _RichBar(Bar):
    def __init__(self, description: str, total: float | None, unit: str, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)

        super().__init__(description, total, unit)
        count = [DownloadColumn(), TransferSpeedColumn()] if unit == "B" else [
            MofNCompleteColumn(), TextColumn(f"{unit} · {{task.fields[speed]}}")]
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), *count, TimeElapsedColumn(),
                                  TextColumn("left"), TimeRemainingColumn(),
                                  console=Console(file=stream), transient=False,
                                  # stderr lines print above the bar; stdout (results) is never touched
                                  redirect_stdout=False, redirect_stderr=True)
        self._task = self._progress.add_task(description, total=total, speed="")
        self._start = time.perf_counter()

    def advance(self, amount: float = 1) -> None:
        super().advance(amount)
        elapsed = time.perf_counter() - self._start
        speed = f"{self.completed / elapsed:.1f}/s" if elapsed > 0 else ""
        self._progress.update(self._task, advance=amount, speed=speed)

    def set_total(self, total: float | None) -> None:
        super().set_total(total)
        self._progress.update(self._task, total=total)


class _PlainBar(Bar):
    def __init__(self, description: str, total: float | None, unit: str, stream: TextIO, interval: float) -> None:
        super().__init__(description, total, unit)
        self._stream, self._interval = stream, interval
        self._start = self._last = time.perf_counter()

    def advance(self, amount: float = 1) -> None:
        super().advance(amount)
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self.line(now)

    def finish(self) -> None:
        now = time.perf_counter()
        if now - self._start >= self._interval:
            self.line(now)

    def line(self, now: float) -> None:
        elapsed = now - self._start
        done = _amount(self.completed, self.unit)
        text = f"{self.description}: {done}"
        if self.total:
            text += f" of {_amount(self.total, self.unit)} ({self.completed / self.total:.0%})"
        if elapsed > 0 and self.completed:
            rate = self.completed / elapsed
            text += f", {_amount(rate, self.unit)}/s"
            if self.total and self.completed < self.total:
                text += f", {_duration((self.total - self.completed) / rate)} left"
        print(text, file=self._stream, flush=True)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "items", *,
             stream: TextIO | None = None, interval: float = PLAIN_INTERVAL_S,
             enabled: bool = True) -> Iterator[Bar]:
    """A progress display for one task; ``unit="B"`` shows bytes and transfer speed.

    ``enabled=False`` gives a silent bar, for callers that report nothing (e.g. ranks other than 0).
    """
    stream = stream or sys.stderr
    if not enabled:
        yield Bar(description, total, unit)
    elif _is_terminal(stream):
        bar = _RichBar(description, total, unit, stream)
        with bar._progress:
            yield bar
    else:
        bar = _PlainBar(description, total, unit, stream, interval)
        try:
            yield bar
        finally:
            bar.finish()


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _amount(value: float, unit: str) -> str:
    if unit != "B":
        return f"{value:,.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    exponent = 0
    while value >= 1000 and exponent < 3:
        value, exponent = value / 1000, exponent + 1
    return f"{value:.0f} B" if exponent == 0 else f"{value:.1f} {'kMG'[exponent - 1]}B"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
