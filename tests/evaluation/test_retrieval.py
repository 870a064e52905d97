"""Recall@K and MAP@R against a brute-force reference written in plain Python."""
from __future__ import annotations

import pytest
import torch

from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.retrieval import retrieval_metrics


def brute_force(embeddings: list[list[float]], labels: list[int], ks=(1, 2, 4, 8)) -> dict:
    """One query at a time: every other image sorted by (-similarity, index)."""
    n = len(labels)
    recalls, maps = {k: [] for k in ks}, []
    for q in range(n):
        r = sum(1 for j in range(n) if j != q and labels[j] == labels[q])
        if r == 0:
            continue
        sims = [(-sum(a * b for a, b in zip(embeddings[q], embeddings[j])), j) for j in range(n) if j != q]
        ranked = [labels[j] == labels[q] for _, j in sorted(sims)]
        for k in ks:
            recalls[k].append(any(ranked[:k]))
        found, total = 0, 0.0
        for i, relevant in enumerate(ranked[:r], 1):
            if relevant:
                found += 1
                total += found / i
        maps.append(total / r)
    report = {f"recall@{k}": 100.0 * sum(v) / len(v) for k, v in recalls.items()}
    report.update({"map@r": 100.0 * sum(maps) / len(maps), "num_queries": len(maps), "singletons": n - len(maps)})
    return report


@pytest.mark.parametrize("block", [1, 3, 7, None])
def test_equals_the_brute_force_reference_with_ties_and_singletons(block):
    generator = torch.Generator().manual_seed(0)
    # Small integer vectors: many exactly equal similarities, and dot products exact in float.
    embeddings = torch.randint(-2, 3, (40, 3), generator=generator).float()
    labels = torch.randint(0, 6, (40,), generator=generator)
    labels[[5, 17]] = torch.tensor([6, 7])  # two classes of one image each
    got = retrieval_metrics(embeddings, labels, block=block)
    want = brute_force(embeddings.tolist(), labels.tolist())
    assert got["singletons"] == want["singletons"] == 2
    assert got == pytest.approx(want, abs=1e-9)


def test_ties_go_to_the_lower_index():
    # Query 0 sees images 1 (other class) and 2 (its class) at the same similarity: image 1 ranks first.
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    got = retrieval_metrics(embeddings, labels, ks=(1, 2))
    # query 0: [1, 2, 3] → miss, hit; query 1: [0, 2, 3] → miss, miss (3 is third);
    # query 2: [0, 1, 3] → hit; query 3: [0, 1, 2] → tied at 0: miss, hit.
    assert got["recall@1"] == pytest.approx(25.0)
    assert got["recall@2"] == pytest.approx(75.0)
    assert got["map@r"] == pytest.approx(100.0 * (0 + 0 + 1 + 0) / 4)


def test_an_image_never_retrieves_itself():
    # Each image's nearest other image is of another class; counting itself would make Recall@1 100 %.
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 1, 0, 1])
    assert retrieval_metrics(embeddings, labels, ks=(1,))["recall@1"] == 0.0


def test_only_singletons_is_one_clear_error():
    with pytest.raises(CncnnError, match="at least two images of some class"):
        retrieval_metrics(torch.eye(3), torch.tensor([0, 1, 2]))
