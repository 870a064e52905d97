"""User-facing checkpoints: one ``.safetensors`` file, self-describing through its metadata.

The metadata holds the resolved model config, class names, preprocessing and the cncnn
version, so ``predict``, ``eval`` and ``visualize`` need nothing else. Only safetensors is
read here — a checkpoint can never run code — and writes are atomic (temporary file in
the same folder, then rename), so a crash or a full disk never leaves a broken file.
"""
from __future__ import annotations

import copy
import json
import os
import zipfile
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import torch
from pydantic import ConfigDict, Field, PositiveInt, ValidationError, field_validator
from pydantic.dataclasses import dataclass
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from typing_extensions import NotRequired, TypedDict

from cncnn_cli import __version__
from cncnn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, size_pair
from cncnn_cli.models.embedding import DEFAULT_EMBEDDING, EMBEDDINGS
from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.errors import CheckpointError, CncnnError, first_line

FORMAT = "cncnn"
FORMAT_VERSION = "1"


Size = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Preprocess(TypedDict):
    """The test-time preprocessing the weights expect: resize, then a center crop (an int is a
    square side); mean/std on the 0–255 scale, ImageNet's when absent. A plain dict once validated,
    as the transforms and exporters take it."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    resize: Size
    crop: Size
    mean: NotRequired[tuple[float, float, float]]
    std: NotRequired[tuple[Positive, Positive, Positive]]


@dataclass
class Checkpoint:
    """What a cncnn checkpoint carries besides its weights; the schema of its metadata.

    Validated (pydantic) whenever one is made: written by training or ``convert``, or read from a
    file by :func:`read_checkpoint`, which every command that loads a checkpoint goes through.
    """

    model: dict[str, Any]
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    preprocess: Preprocess
    dataset: dict[str, Any] | None = None
    version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)
    #: The image embedding every consumer uses (``cncnn_cli.models.embedding``); None: the default one.
    embedding: Literal[EMBEDDINGS] | None = None
    #: The softmax temperature ``cncnn calibrate`` fitted (logits / T); None: uncalibrated (T = 1).
    temperature: Positive | None = None

    @field_validator("preprocess")
    @classmethod
    def _complete_preprocess(cls, preprocess: dict) -> dict:
        resize, crop = size_pair(preprocess["resize"]), size_pair(preprocess["crop"])
        if resize[0] < crop[0] or resize[1] < crop[1]:
            raise ValueError(f"resize {preprocess['resize']} is smaller than crop {preprocess['crop']}")
        complete = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, **preprocess}
        return {key: list(value) if isinstance(value, tuple) else value  # as JSON reads them back
                for key, value in complete.items()}

    def metadata(self) -> dict[str, str]:
        optional = {key: json.dumps(value) for key, value in
                    (("embedding", self.embedding), ("temperature", self.temperature)) if value is not None}
        return {**optional, 
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cncnn_version": self.version,
            "model": json.dumps(self.model),
            "classes": json.dumps(self.classes),
            "preprocess": json.dumps(self.preprocess),
            "dataset": json.dumps(self.dataset),
            "extra": json.dumps(self.extra),
        }


def portable_model_config(model_cfg: dict) -> dict:
    """The model config without its pretrained-weights source: the checkpoint holds the weights."""
    cfg = copy.deepcopy(dict(model_cfg))
    if isinstance(cfg.get("backbone"), dict):
        cfg["backbone"]["pretrained"] = None
    return cfg


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], info: Checkpoint) -> Path:
    """Write weights and metadata atomically; on failure the previous file at ``path`` is intact.

    The file names its embedding (the default one unless ``info`` names another), so that every
    consumer of this checkpoint uses the same vector even if the default changes."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    info = Checkpoint(**{**info.__dict__, "model": portable_model_config(info.model),
                         "embedding": info.embedding or DEFAULT_EMBEDDING})
    with atomic_write(path, errors=(OSError, SafetensorError)) as tmp:
        save_file(tensors, str(tmp), metadata=info.metadata())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    return path


def read_checkpoint(path: str | Path) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    """Metadata and weights of a cncnn checkpoint; :class:`CheckpointError` with one clear line otherwise."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(_folder_hint(path))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path}: a safetensors file, but not a cncnn checkpoint (no cncnn metadata). "
                    f"Import the authors' weights with `cncnn convert official`."
                )
            version = meta.get("format_version", FORMAT_VERSION)
            if not version.isdigit() or int(version) > int(FORMAT_VERSION):
                raise CheckpointError(
                    f"{path}: written in checkpoint format {version!r} by cncnn {meta.get('cncnn_version', '?')}; "
                    f"this cncnn reads format {FORMAT_VERSION}. Upgrade cncnn (pip install -U cncnn) to read it."
                )
            info = _checked_metadata(path, meta)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        hint = _pytorch_file_hint(path)
        if hint is not None:
            raise CheckpointError(hint) from None
        raise CheckpointError(
            f"{path}: not a readable cncnn checkpoint ({first_line(exc)}). cncnn checkpoints are "
            f".safetensors files written by `cncnn train` or `cncnn convert`; the file may be truncated."
        ) from None
    return info, state


#: Metadata keys stored as JSON documents, by the :class:`Checkpoint` field each fills.
_JSON_KEYS = ("model", "classes", "preprocess", "dataset", "extra", "embedding", "temperature")
#: How to get a usable file, for a metadata value that is missing or impossible.
_DEFAULT_FIX = "the file was edited or written by another tool; use a checkpoint `cncnn train` or `cncnn convert` wrote"
_FIXES = {"temperature": "calibrate the original checkpoint again (`cncnn calibrate`)"}


def _checked_metadata(path: Path, meta: dict[str, str]) -> Checkpoint:
    """The metadata of ``path`` validated by :class:`Checkpoint`: a missing or impossible value is
    one line naming the file and the key."""
    values: dict[str, Any] = {}
    for key in _JSON_KEYS:
        if key in meta:
            try:
                values[key] = json.loads(meta[key])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path}: its metadata key {key} is not valid JSON ({exc}); {_DEFAULT_FIX}") \
                    from None
    values["version"] = meta.get("cncnn_version", "unknown")
    try:
        return Checkpoint(**values)
    except ValidationError as exc:
        # the deepest: of a union's members (an int or a pair of ints), the one that came closest
        error = max(exc.errors(), key=lambda found: len(found["loc"]))
        # pydantic names the member of a union that failed (``constrained-int``): not a key
        key = ".".join(str(part) for part in error["loc"] if isinstance(part, int) or part.isidentifier())
        fix = _FIXES.get(key, _DEFAULT_FIX)
        if error["type"] == "missing":
            raise CheckpointError(f"{path}: its metadata lacks {key}; {fix}") from None
        reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        raise CheckpointError(f"{path}: its metadata holds {key} = {error['input']!r}, which is impossible "
                              f"({reason}); {fix}") from None


#: The weights files a training work dir holds, in the order to suggest them.
_WEIGHTS_FILES = ("best.safetensors", "last.safetensors")
_ZIP_MAGIC = b"PK\x03\x04"
_TRAINING_STATE_MARKERS = (b"message_hub", b"optimizer", b"param_schedulers")


def _folder_hint(path: Path) -> str:
    """What to pass instead of a folder: the weights files it holds (a training work dir)."""
    found = [path / name for name in _WEIGHTS_FILES if (path / name).is_file()]
    if found:
        return f"{path} is a folder; pass {' or '.join(map(str, found))}"
    return (f"{path} is a folder, not a checkpoint file; pass a .safetensors file (a training work dir "
            f"holds best.safetensors and last.safetensors)")


def _pytorch_file_hint(path: Path) -> str | None:
    """For a file safetensors cannot read: a one-line explanation when it is a PyTorch file (a zip
    archive or a bare pickle), a training state above all. Looks at bytes only, never unpickles."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return None
    if head.startswith(_ZIP_MAGIC):
        kind = "zip"
    elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        kind = "pickle"
    else:
        return None
    if path.name == "state.pth" or _looks_like_training_state(path, kind):
        siblings = [path.parent / name for name in _WEIGHTS_FILES if (path.parent / name).is_file()]
        pass_what = (" or ".join(map(str, siblings)) if siblings
                     else "best.safetensors or last.safetensors from the same folder")
        return f"{path} is a training state ({path.name}), not weights: pass {pass_what}"
    return (f"{path}: a PyTorch file, not a cncnn checkpoint (.safetensors). If it holds the authors' released "
            f"weights, import them with `cncnn convert official {path} OUT.safetensors`")


def _looks_like_training_state(path: Path, kind: str, limit: int = 1 << 22) -> bool:
    """Whether the pickled top level of a PyTorch file names an optimizer or message hub: a search of
    the pickle's bytes (its first ``limit``), not an unpickling."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                with archive.open(name) as member:
                    data = member.read(limit)
        else:
            with open(path, "rb") as handle:
                data = handle.read(limit)
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile):
        return False
    return any(marker in data for marker in _TRAINING_STATE_MARKERS)


def load_model(path: str | Path) -> tuple[torch.nn.Module, Checkpoint]:
    """Build the model a checkpoint describes and load its weights (eval mode, CPU)."""
    from cncnn_cli.models.classifier import build_model

    info, state = read_checkpoint(path)
    try:
        model = build_model(info.model)
    except CncnnError as exc:
        raise CheckpointError(f"{path}: cannot build its model: {exc}") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot build its model ({type(exc).__name__}: {first_line(exc)})") from None
    load_weights(model, state, path)
    outputs = info.model.get("num_classes")
    if isinstance(outputs, int) and outputs != len(info.classes):
        raise CheckpointError(
            f"{path}: its metadata lists {len(info.classes)} class names but the weights have {outputs} outputs; "
            f"the file was edited or written by another tool. Use the file `cncnn train` or `cncnn convert` wrote"
        )
    return model.eval(), info


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load with a one-line explanation of what does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of other shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise CheckpointError(f"{source}: weights belong to another model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
