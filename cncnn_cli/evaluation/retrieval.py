"""Fine-grained retrieval metrics: Recall@K and MAP@R, leave-one-out, computed in blocks.

Every image is a query against all the others; it never matches itself. Neighbours are ranked
by descending similarity (the dot product: cosine for L2-normalised embeddings), ties by
ascending index, so the figures are exact and reproducible. A query whose class has no other
image has nothing to retrieve; it is left out of every figure and counted in ``singletons``.

- Recall@K: the share of queries with at least one image of their class among their K
  nearest neighbours.
- MAP@R (Musgrave et al., *A Metric Learning Reality Check*, 2020): for a query with R other
  images of its class, the mean over the first R neighbours of the precision at each rank
  that holds one of them (0 at ranks that do not).

Queries run ``block`` at a time against all N images, so memory grows as block × N, never N × N.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from cncnn_cli.errors import CncnnError

RECALL_AT = (1, 2, 4, 8)
#: Similarities held at once per block (block × N values; 16 Mi floats = 64 MiB).
BLOCK_ELEMENTS = 1 << 24


def retrieval_metrics(embeddings: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = RECALL_AT,
                      block: int | None = None) -> dict:
    """``{"recall@K": %, …, "map@r": %, "num_queries": n, "singletons": s}`` of N×D ``embeddings``.

    ``block`` is the number of queries per block (default: as many as keep a block at
    :data:`BLOCK_ELEMENTS` similarities).
    """
    if embeddings.ndim != 2 or labels.ndim != 1 or len(labels) != len(embeddings):
        raise CncnnError(f"retrieval needs N×D embeddings and N labels, not {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}", exit_code=1)
    if not torch.isfinite(embeddings).all():
        raise CncnnError("retrieval: the embeddings hold NaN or inf (broken weights?)", exit_code=1)
    n = len(labels)
    labels = labels.to(embeddings.device)
    class_sizes = torch.bincount(labels)
    positives = class_sizes[labels] - 1  # R per query: the other images of its class
    block = block or max(1, BLOCK_ELEMENTS // max(n, 1))
    depth = min(max(max(ks), int(positives.max()) if n else 0), max(n - 1, 0))
    hits = {k: 0 for k in ks}
    map_sum = 0.0
    ranks = torch.arange(1, depth + 1, device=embeddings.device, dtype=torch.float64)
    for start in range(0, n, block):
        queries = slice(start, min(start + block, n))
        similarity = embeddings[queries] @ embeddings.T
        rows = torch.arange(similarity.shape[0], device=similarity.device)
        similarity[rows, rows + start] = -torch.inf  # the query itself: ranked last, then dropped
        order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :depth]
        relevant = labels[order] == labels[queries, None]
        keep = positives[queries] > 0
        relevant, r = relevant[keep], positives[queries][keep]
        for k in ks:
            hits[k] += int(relevant[:, :k].any(dim=1).sum())
        within_r = ranks[None, :] <= r[:, None]
        precision = relevant.cumsum(1) / ranks
        map_sum += float(((precision * relevant * within_r).sum(1) / r).sum())
    queries = int((positives > 0).sum())
    if queries == 0:
        raise CncnnError(f"retrieval: none of the {n} images has another image of its class to find; "
                         f"it needs at least two images of some class")
    report = {f"recall@{k}": 100.0 * hits[k] / queries for k in ks}
    report.update({"map@r": 100.0 * map_sum / queries, "num_queries": queries, "singletons": n - queries})
    return report
