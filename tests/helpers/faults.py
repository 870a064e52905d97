"""A file that fills up like a full disk, for tests of what commands leave behind when writes fail."""
from __future__ import annotations

import errno


class FullDisk:
    """Wraps an open file: it takes ``budget`` characters (or bytes), then writes half of the next
    chunk and raises ``OSError(ENOSPC)``, as a disk that fills up mid-write does."""

    def __init__(self, stream, budget: int = 0) -> None:
        self.stream, self.budget = stream, budget

    def write(self, data):
        if len(data) > self.budget:
            self.stream.write(data[: len(data) // 2])
            self.stream.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()
