"""Defaults that both the config schema and command-line options need, importable without torch."""

import os

#: Most loader processes a default asks for: past ~8, workers mostly compete for memory bandwidth
#: and the GPU's input copies rather than add decode throughput (``cncnn data speed`` sizes more).
MAX_DEFAULT_WORKERS = 8


def default_workers(cpus: int | None = None) -> int:
    """Loader processes unless a recipe or --workers says otherwise: one per CPU the process may use,
    leaving one for the main process, at most :data:`MAX_DEFAULT_WORKERS` (0 on a single CPU: load in process)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_DEFAULT_WORKERS, cpus - 1))


#: Computed once, at import: the one default of the schema, ``eval`` and ``data speed``.
DEFAULT_WORKERS = default_workers()
