"""Calibration: how far a softmax score can be trusted, and temperature scaling to fix it.

- ECE (expected calibration error): the top-1 scores in 15 equal-width bins over [0, 1]; the
  mean over bins, weighted by their share of images, of |accuracy − mean score|.
- NLL: the mean negative log-likelihood of the true class.
- Brier score: the mean over images of Σ_k (p_k − 1[k = y])², between 0 and 2.

Temperature scaling (Guo et al., *On Calibration of Modern Neural Networks*, 2017) divides the
logits by one T > 0 fitted to minimise the NLL on held-out data. It never changes the argmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cncnn_cli.errors import CncnnError

ECE_BINS = 15


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """Per equal-width bin of the top-1 score: ``count``, ``accuracy`` and ``confidence`` (means, 0–1)."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    # Bin b holds scores in (b/bins, (b+1)/bins]; a score of exactly 0 cannot be a top-1 of K ≥ 1 classes.
    index = (torch.ceil(confidence.double() * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    safe = count.clamp(min=1)
    return {"count": count, "accuracy": torch.bincount(index, correct, bins) / safe,
            "confidence": torch.bincount(index, confidence.double(), bins) / safe}


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                       bins: int = ECE_BINS) -> dict:
    """``{"ece": %, "nll": nats, "brier": …, "temperature": T}`` of ``logits / temperature``."""
    logits, labels = logits.double() / temperature, labels.long()
    probs = torch.softmax(logits, 1)
    table = reliability(probs, labels, bins)
    ece = float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(labels))
    onehot = F.one_hot(labels, probs.shape[1]).double()
    return {"ece": 100.0 * ece, "nll": float(F.cross_entropy(logits, labels)),
            "brier": float(((probs - onehot) ** 2).sum(1).mean()), "temperature": temperature}


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises the NLL of ``logits / T``: L-BFGS on log T (so T stays positive)."""
    if len(labels) == 0:
        raise CncnnError("cannot fit a temperature on no images")
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, tolerance_grad=1e-10,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())

