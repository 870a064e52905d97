"""What the library tells people while it works: plain lines on stderr (stdout is for results)."""
from __future__ import annotations

import sys


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
