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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cncnn_cli import __version__
from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.errors import CheckpointError, CncnnError, first_line

FORMAT = "cncnn"
FORMAT_VERSION = "1"


@dataclass
class Checkpoint:
    """What a cncnn checkpoint carries besides its weights."""

    model: dict
    classes: list[str]
    preprocess: dict
    dataset: dict | None = None
    version: str = __version__
    extra: dict = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        return {
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
    """Write weights and metadata atomically; on failure the previous file at ``path`` is intact."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    info = Checkpoint(**{**info.__dict__, "model": portable_model_config(info.model)})
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
    try:
        info = Checkpoint(
            model=json.loads(meta["model"]),
            classes=json.loads(meta["classes"]),
            preprocess=json.loads(meta["preprocess"]),
            dataset=json.loads(meta.get("dataset", "null")),
            version=meta.get("cncnn_version", "unknown"),
            extra=json.loads(meta.get("extra", "{}")),
        )
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cncnn metadata is damaged ({first_line(exc)})") from None
    if not isinstance(info.classes, list) or not all(isinstance(name, str) for name in info.classes):
        raise CheckpointError(f"{path}: cncnn metadata is damaged (its classes are not a list of names)")
    return info, state


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
