"""The pictures behind ``cncnn visualize``: Figure-3 attention maps per image, and training curves' data."""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from cncnn_cli.apis.inference import Predictor
from cncnn_cli.data.images import load_rgb
from cncnn_cli.errors import CncnnError
from cncnn_cli.visualization.plotting import attention_figure, save_figure


def attention_pictures(predictor: Predictor, images: Sequence[Path], out: Path,
                       batch_size: int) -> Iterator[Path | CncnnError]:
    """One forward pass per batch, one PNG per image; yields each written path or the image's read error."""
    used: set[str] = set()
    for start in range(0, len(images), batch_size):
        loaded, tensors = [], []
        for path in images[start:start + batch_size]:
            try:
                tensors.append(predictor.preprocess(load_rgb(path)))
                loaded.append(path)
            except CncnnError as exc:
                yield exc
        if not tensors:
            continue
        batch = torch.stack(tensors)
        outputs = predictor.forward(batch)
        if outputs.get("maps") is None:
            raise CncnnError(f"this checkpoint's model ({_describe(predictor.info.model)}) has no attention maps "
                             f"to show; visualize needs a CN-CNN with an LH attention (e.g. 'spatial_channel'). "
                             f"`cncnn predict` still gives its classes.")
        probs = torch.softmax(outputs["logits"].float(), 1).cpu()
        scores, indices = probs.max(1)
        attended = [level.float().cpu().numpy() for level in outputs["attended"]]
        masks = [level.float().cpu().numpy() for level in outputs["maps"]]
        for i, path in enumerate(loaded):
            title = f"{path.name} — top prediction: {predictor.classes[int(indices[i])]} ({scores[i].item():.1%})"
            figure = attention_figure(batch[i].permute(1, 2, 0).numpy(), [a[i] for a in attended],
                                      [m[i] for m in masks], title)
            yield save_figure(figure, out / _output_name(path, used))


def read_metrics(path: Path) -> dict:
    """A ``metrics.json`` document with a non-empty ``history`` of per-epoch entries, or one clear error."""
    if not path.is_file():
        raise CncnnError(f"{path}: no such file; `cncnn train` writes metrics.json into its work dir "
                         f"(e.g. work_dirs/demo/), give that folder to --curves")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CncnnError(f"{path}: not a readable JSON document ({exc})") from None
    history = document.get("history") if isinstance(document, dict) else None
    if not history or not isinstance(history, list) or \
            not all(isinstance(entry, dict) and isinstance(entry.get("epoch"), int) for entry in history):
        raise CncnnError(f'{path}: no training history to plot (expected {{"history": [{{"epoch": 1, '
                         f'"loss": ..., "lr": ..., "top1": ...}}, ...]}})')
    return document


def _describe(model_cfg: dict) -> str:
    attention = model_cfg.get("attention")
    kind = model_cfg.get("type", "unknown")
    return f"{kind} with attention {attention['type']!r}" if isinstance(attention, dict) else kind


def _output_name(path: Path, used: set[str]) -> str:
    """``<stem>_cncnn.png``, numbered when two inputs share a stem so neither overwrites the other."""
    name, n = f"{path.stem}_cncnn.png", 1
    while name in used:
        n += 1
        name = f"{path.stem}_{n}_cncnn.png"
    used.add(name)
    return name
