"""cncnn: the CN-CNN fine-grained classifier as a command-line tool and Python library."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cncnn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
