"""Errors meant for people: one clear line, a fixed exit code, no traceback."""


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (or its type's name): what a one-line error quotes of a cause."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CncnnError(Exception):
    """A failure the user can act on. ``exit_code`` follows docs/cli.md: 2 bad input, 1 run failed."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CheckpointError(CncnnError):
    """A file that is not a usable cncnn checkpoint."""
