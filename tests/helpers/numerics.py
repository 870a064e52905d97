"""Tolerances that move with the processor: a result's error against fp64, bounded by a reference's own error.

Two code paths that use different kernels (the phase GEMM and oneDNN's convolution, AVX2 and
AVX-512, fp32 and bf16) round differently, by amounts that depend on the CPU. So a test does not
bound their difference by a figure measured on one machine: it computes the exact result in fp64
in the same run and requires ``error(result) <= FACTOR · error(reference)``, where the reference
is the plain formula (or the authors' formulation) run at the same precision on the same machine.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

#: A fast path's error may be this multiple of the reference formulation's (tools/gpu_check.py's rule).
FACTOR = 2.0


def rel_errs(actual: Sequence[torch.Tensor], exact: Sequence[torch.Tensor]) -> list[float]:
    """max |a − e| / max |e| per tensor pair (compared in fp64)."""
    assert len(actual) == len(exact)
    return [((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-300)).item()
            for a, e in zip(actual, exact)]


def assert_as_exact_as(actual: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                       exact: Sequence[torch.Tensor], dtype: torch.dtype, where: str = "",
                       names: Sequence[str] | None = None) -> None:
    """Each ``actual`` tensor is within :data:`FACTOR` of ``reference``'s error against ``exact`` (fp64).

    ``dtype`` is the precision both ran in: an error of one unit of its rounding (``finfo.eps``, an
    IEEE constant) always passes, so a reference that happens to be exact does not demand exactness.
    """
    fast, ref = rel_errs(actual, exact), rel_errs(reference, exact)
    floor = torch.finfo(dtype).eps
    names = list(names) if names is not None else [f"#{i}" for i in range(len(fast))]
    worse = [f"{n}: {f:.1e} (reference {r:.1e})" for n, f, r in zip(names, fast, ref) if f > max(FACTOR * r, floor)]
    assert not worse, f"{where}: more than {FACTOR:g}x the reference's error against fp64: " + "; ".join(worse)


def assert_worst_at_most(actual: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                         exact: Sequence[torch.Tensor], dtype: torch.dtype, where: str = "") -> None:
    """``actual``'s worst error over all its tensors is at most ``reference``'s worst (1× plus one ``eps``).

    For a path that rounds no more often than the reference: the worst tensor, not each one, since
    the two paths' roundings land on different elements and single gradients differ by noise.
    """
    fast, ref = max(rel_errs(actual, exact)), max(rel_errs(reference, exact))
    bound = ref * (1 + torch.finfo(dtype).eps)
    assert fast <= bound, f"{where}: worst error {fast:.2e} against fp64, over the reference's {ref:.2e}"
