"""``--compile``: a model's forward under ``torch.compile``, or a one-line error naming the fix.

The model's pipeline is compiled (``forward_features``: backbone to logits), not the whole
training step: the data preprocessor (lists, uint8, channels_last), the mode dispatch (the loss,
predict's per-image results) and the optimizer stay eager, and DDP, which calls the forward,
runs it compiled too. Keeping predict's per-image split out of the graph matters: traced, it
would specialize on the batch size and recompile for every new one (a last, smaller batch).
The ConvLSTM takes its ``conv`` path under the compiler (``impl='auto'``, see the fusion
plugin); the hand-written autograd Functions of :mod:`cncnn_cli.models.ops` run eagerly
between compiled regions when ``phase`` is asked for.

Inductor, the default backend, writes C++ on CPU (a C++ compiler and Python's headers) and
Triton kernels on CUDA (Triton, which builds a small C launcher: a C compiler and Python's
headers again). Both are checked before anything is built (:func:`require_toolchain`), and a
compiler failure at the first call is turned into a :class:`CncnnError` too.
"""
from __future__ import annotations

import functools
import os
import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

import torch

from cncnn_cli.errors import CncnnError, first_line

#: The torch.compile backend ``--compile`` uses.
BACKEND = "inductor"


def compile_model(model: torch.nn.Module, device: torch.device,
                  backend: str | Callable | None = None) -> torch.nn.Module:
    """Compile ``model``'s ``forward_features`` (its ``forward`` if it has none) in place; return the model.

    ``backend`` is torch.compile's, :data:`BACKEND` unless given (tests use ``aot_eager``, which
    traces the same graphs and generates no code).
    """
    backend = backend or BACKEND
    require_toolchain(device, backend)
    name = "forward_features" if hasattr(model, "forward_features") else "forward"
    setattr(model, name, _guarded(torch.compile(getattr(model, name), backend=backend), backend))
    return model


def require_toolchain(device: torch.device, backend: str | Callable = BACKEND) -> None:
    """Raise a one-line :class:`CncnnError` when ``backend`` cannot generate code for ``device`` here."""
    if backend != "inductor":
        return
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise CncnnError("--compile on CUDA needs Triton: pip install triton (or drop --compile)")
        missing = _missing_triton_toolchain()
        if missing:
            raise CncnnError(f"--compile on CUDA needs {missing} for Triton's launcher (or drop --compile)")
        return
    missing = _missing_cpu_toolchain()
    if missing:
        raise CncnnError(f"--compile on CPU needs {missing} (or drop --compile)")


def _missing_triton_toolchain() -> str | None:
    """What Triton lacks to build its launcher, found as Triton finds it ($CC, gcc, clang); None when all is there."""
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")):
        return "a C compiler: install gcc (apt-get install gcc) or set CC to one"
    return _missing_python_headers()


def _missing_python_headers() -> str | None:
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "Python's C headers (Python.h): install python3-dev for this Python"
    return None


def _missing_cpu_toolchain() -> str | None:
    """What inductor lacks to build its C++ kernels: a compiler or Python's headers; None when all is there."""
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return "a C++ compiler: install g++ (apt-get install g++) or set CXX to one"
    return _missing_python_headers()


def _guarded(compiled: Callable, backend: str | Callable) -> Callable:
    """``compiled``, with a failure of the code generator (first call, or a recompile) as a CncnnError."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    @functools.wraps(compiled)
    def forward(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except (BackendCompilerFailed, InductorError) as error:
            cause = error.inner_exception if isinstance(error, BackendCompilerFailed) else error
            first = first_line(cause)
            raise CncnnError(f"--compile: the {getattr(backend, '__name__', backend)} backend failed ({type(cause).__name__}: {first}); "
                             f"check its toolchain (a C++ compiler on CPU, Triton on CUDA) or drop --compile",
                             exit_code=1) from None

    return forward
