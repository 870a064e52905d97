"""The paper's ablation variants (docs/model.md, 'Ablation variants'; Tables 2 and 3) as edits of a model config."""
from __future__ import annotations

import copy

from cncnn_cli.errors import CncnnError

#: variant → (fusion, attention); ``None`` is the baseline model (backbone → GAP → FC).
VARIANTS: dict[str, tuple[str, str] | None] = {
    "baseline": None,
    "hl": ("sum", "identity"),
    "hl+lh": ("sum", "spatial_channel"),
    "full": ("convlstm", "spatial_channel"),
}
#: ``cncnn benchmark`` also times the full model computed the authors' way (``fusion=convlstm_official``).
OFFICIAL_FORMULATION = "official-formulation"
#: The paper's CUB-200-2011 top-1 per variant (ResNet-50, Tables 2 and 3).
PAPER_CUB_TOP1 = {"baseline": 84.1, "hl": 86.6, "hl+lh": 87.2, "full": 88.9}


def select_variant(no_convlstm: bool, no_attention: bool, baseline: bool) -> str:
    """The variant named by ``cncnn ablate``'s flags."""
    if baseline:
        if no_convlstm or no_attention:
            raise CncnnError("--baseline is the fine-tuned backbone alone; it takes no --no-convlstm/--no-attention")
        return "baseline"
    if no_attention and not no_convlstm:
        raise CncnnError("the paper has no ConvLSTM-without-attention variant: --no-attention goes with "
                         "--no-convlstm (Table 2's HL)")
    return {(False, False): "full", (True, False): "hl+lh", (True, True): "hl"}[(no_convlstm, no_attention)]


def variant_model(model: dict, variant: str) -> dict:
    """``model`` (a CN-CNN config) turned into ``variant``; width C and the head are kept."""
    if variant not in VARIANTS:
        raise CncnnError(f"unknown variant '{variant}'. Available: {', '.join(VARIANTS)}")
    parts = VARIANTS[variant]
    model = copy.deepcopy(dict(model))
    if parts is None:
        return {"type": "baseline", "num_classes": model.get("num_classes"), "backbone": model["backbone"]}
    fusion, attention = parts
    model["fusion"] = {**model["fusion"], "type": fusion}
    if fusion != "convlstm":
        model["fusion"].pop("checkpoint", None)  # activation checkpointing is a ConvLSTM option
    attention_cfg = {"type": attention}
    if attention == model.get("attention", {}).get("type"):
        attention_cfg = dict(model["attention"])
    model["attention"] = attention_cfg
    return model
