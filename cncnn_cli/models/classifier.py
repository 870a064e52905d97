"""The CN-CNN model (mmengine ``BaseModel``) assembled from registered plugins.

backbone → fusion (HL) → attention (LH) → heads. Loss mode returns one cross-entropy
per classifier (mmengine sums every ``loss_*`` for the step and logs each apart);
predict mode returns, per image, the ensemble logits (mean of the classifiers) and
the logits of every classifier.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor, BaseModel

from cncnn_cli.registry import ATTENTIONS, BACKBONES, FUSIONS, HEADS, MODELS, build_from
from cncnn_cli.data.gpu_decode import EncodedBatch
from cncnn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD

class CncnnDataPreprocessor(BaseDataPreprocessor):
    """Moves a uint8 batch to the device and normalizes it there: ``(x - mean) / std``.

    A batch of JPEG bytes (``gpu_decode``) is decoded, resized and cropped on the device first.

    Images travel as uint8 (4× fewer bytes through the loader); ``channels_last`` helps
    cuDNN and bf16 on recent GPUs. The host→device copy is non-blocking: from the pinned
    batches the CUDA loaders deliver it overlaps with compute instead of stalling the host,
    and from pageable memory CUDA stages it synchronously anyway, so it is safe either way.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels_last: bool = False) -> None:
        super().__init__(non_blocking=True)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.channels_last = channels_last

    def forward(self, data: dict, training: bool = False) -> dict:
        data = {k: data[k] for k in ("inputs", "data_samples") if k in data}  # loaders may add bookkeeping
        if isinstance(data["inputs"], EncodedBatch):  # gpu_decode: JPEG bytes, decoded here on the device
            data["inputs"], kept = data["inputs"].decode(self.mean.device, keep_size=training)
            if data.get("data_samples") is not None and kept != list(range(len(data["data_samples"]))):
                data["data_samples"] = data["data_samples"][kept]
        data = self.cast_data(data)
        inputs = data["inputs"]
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        inputs = (inputs.float() - self.mean) / self.std
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        data["inputs"] = inputs
        data.setdefault("data_samples", None)
        return data


class Classifier(BaseModel):
    """Shared loss / predict / tensor logic for models whose forward yields named classifier logits.

    A subclass writes the pipeline once, in :meth:`forward_features`; every mode reads it.
    """

    def forward_features(self, images: torch.Tensor) -> dict:
        """Normalized images → ``{"logits": ensemble, "heads": {name: logits}, "maps": masks or None}``."""
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, data_samples: torch.Tensor | None = None, mode: str = "tensor"):
        if mode == "tensor":
            return self.forward_features(inputs)
        outputs = self.forward_features(inputs)
        if mode == "loss":
            labels = torch.as_tensor(data_samples, device=inputs.device)
            return {f"loss_{name}": F.cross_entropy(value, labels) for name, value in outputs["heads"].items()}
        if mode == "predict":
            ensemble, heads = outputs["logits"], outputs["heads"]
            labels = None if data_samples is None else torch.as_tensor(data_samples).tolist()
            return [
                {"logits": ensemble[i], "heads": {k: v[i] for k, v in heads.items()},
                 "label": None if labels is None else labels[i]}
                for i in range(ensemble.shape[0])
            ]
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', not {mode!r}")

    def infer(self, data: dict) -> dict:
        """A loader batch (uint8 ``inputs``) → tensor-mode outputs, through the model's own preprocessor.

        mmengine's ``test_step`` is the same path in predict mode (one dict per image);
        this one keeps the batch tensors and the maps that pictures need.
        """
        return self(self.data_preprocessor(data, False)["inputs"], mode="tensor")


def ensemble_logits(logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """The prediction: the mean of the classifiers' logit vectors."""
    return torch.stack(list(logits.values())).mean(0)


@MODELS.register_module(name="CNCNN")
class CNCNN(Classifier):
    """Cross-layer Navigation CNN: backbone, HL fusion, LH attention, four classifiers."""

    def __init__(self, num_classes: int, backbone: dict, fusion: dict, attention: dict, head: dict,
                 data_preprocessor: dict | None = None) -> None:
        super().__init__(data_preprocessor=CncnnDataPreprocessor(**(data_preprocessor or {})))
        self.backbone = build_from(BACKBONES, backbone, "backbone")
        self.fusion = build_from(FUSIONS, fusion, "fusion", in_channels=self.backbone.out_channels)
        channels = self.fusion.out_channels
        self.attention = build_from(ATTENTIONS, attention, "attention", channels=channels)
        self.head = build_from(HEADS, head, "head", channels=channels, num_classes=num_classes)

    def forward_features(self, images: torch.Tensor) -> dict:
        """The pipeline, once: per-head logits and their ensemble, attended maps A_l, spatial masks."""
        fused = self.fusion(self.backbone(images))
        attended, masks = self.attention(fused)
        logits = self.head(attended, fused)
        return {"logits": ensemble_logits(logits), "heads": logits, "attended": attended, "maps": masks}


def build_model(cfg: dict) -> Classifier:
    """Build a whole model from its config dict (``type`` names an entry of the models registry)."""
    from cncnn_cli.registry import load_plugins

    load_plugins()
    return build_from(MODELS, copy.deepcopy(dict(cfg)), "model")
