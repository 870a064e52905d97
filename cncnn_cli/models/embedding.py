"""Image embeddings: one L2-normalised vector per image, read off a classifier's forward pass.

Two vectors are on offer (``docs/beyond-top1.md`` gives the Recall@1 that chose the default):

- ``penultimate``: the input of each classifier's final linear layer (for CN-CNN the
  BN → ELU features of cls3, cls4, cls5 and concat, 4 × D values), each part L2-normalised
  so that every classifier weighs the same, then concatenated;
- ``attended``: the attended LH maps A3, A4, A5 average-pooled (3 × C values), each
  L2-normalised, then concatenated. Only models with an ``attention`` module have them.

The vector is captured with forward hooks while the model runs its usual forward, so the
logits and the embedding of an image come from one pass. A checkpoint names its vector in
its metadata (``embedding``); one without uses :data:`DEFAULT_EMBEDDING`.
"""
from __future__ import annotations

from types import TracebackType

import torch
import torch.nn.functional as F
from torch import nn

from cncnn_cli.errors import CncnnError

EMBEDDINGS = ("penultimate", "attended")
DEFAULT_EMBEDDING = "penultimate"


def check_embedding(kind: str) -> str:
    if kind not in EMBEDDINGS:
        raise CncnnError(f"unknown embedding {kind!r}; expected one of {', '.join(EMBEDDINGS)}")
    return kind


def final_linears(model: nn.Module, num_classes: int) -> list[nn.Linear]:
    """Each classifier's final linear layer: the last ``nn.Linear`` child of a module, when it has
    ``num_classes`` outputs (a hidden layer as wide as the classes is not the last one)."""
    found = []
    for module in model.modules():
        linears = [child for child in module.children() if isinstance(child, nn.Linear)]
        if linears and linears[-1].out_features == num_classes:
            found.append(linears[-1])
    return found


class EmbeddingCapture:
    """Collects the embedding of every forward pass of ``model`` while active (a context manager).

    ``take()`` returns the B×D float32 embeddings of the last pass, L2-normalised, and clears them.
    """

    def __init__(self, model: nn.Module, kind: str, num_classes: int) -> None:
        self.kind = check_embedding(kind)
        self._parts: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        if kind == "penultimate":
            layers = final_linears(model, num_classes)
            if not layers:
                raise CncnnError(f"embedding 'penultimate': the model has no final linear layer with "
                                 f"{num_classes} outputs to read its input from")
            self._handles = [layer.register_forward_pre_hook(self._keep_input) for layer in layers]
        else:
            attention = getattr(model, "attention", None)
            if not isinstance(attention, nn.Module):
                raise CncnnError(f"embedding 'attended': {type(model).__name__} has no attention module "
                                 f"(use 'penultimate')")
            self._handles = [attention.register_forward_hook(self._keep_attended)]

    def _keep_input(self, module: nn.Module, args: tuple) -> None:
        self._parts.append(args[0].detach())

    def _keep_attended(self, module: nn.Module, args: tuple, output) -> None:
        attended = output[0]
        self._parts += [F.adaptive_avg_pool2d(level.detach(), 1).flatten(1) for level in attended]

    def take(self) -> torch.Tensor:
        if not self._parts:
            raise CncnnError("no forward pass ran since the last embedding was taken", exit_code=1)
        parts = [F.normalize(part.float(), dim=1) for part in self._parts]
        self._parts = []
        return F.normalize(torch.cat(parts, dim=1), dim=1)

    def __enter__(self) -> "EmbeddingCapture":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Remove the forward hooks: the model runs as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
