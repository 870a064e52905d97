"""ImageNet weights for backbones: torchvision's enum names, torchvision's cache, or a file.

Files are read with ``safetensors`` or ``torch.load(weights_only=True)`` only: a weights
file can never run code.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch.hub import get_dir

from cncnn_cli.errors import CncnnError, first_line


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a .safetensors or .pth/.pt file, never unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise CncnnError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CncnnError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for foreign globals, RuntimeError for truncation
        raise _refused(path, exc) from None
    return _state_dict_of(obj, path)


def _refused(path: Path, exc: Exception) -> CncnnError:
    return CncnnError(
        f"{path}: refused or unreadable as a weights-only PyTorch file ({first_line(exc)}). "
        f"cncnn loads plain tensor state dicts only and never unpickles other objects."
    )


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded file (unwrapping ``state_dict``/``model``/``net``), DDP prefixes removed."""
    for wrapper in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CncnnError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_url_state(url: str, what: str) -> dict[str, torch.Tensor]:
    """The weights at ``url`` through torch.hub's cache, downloaded there first when missing.

    The one download path for pretrained weights (torchvision's and timm's): a cached file is read
    without touching the network, a download is checked against the hash in its file name, and
    the file is loaded with ``weights_only=True``. Offline, the error says where to put the file.
    """
    folder = Path(get_dir()) / "checkpoints"
    target = folder / Path(urlparse(url).path).name
    cached = target.is_file()
    try:
        obj = torch.hub.load_state_dict_from_url(url, model_dir=str(folder), map_location="cpu", progress=False,
                                                 check_hash=True, weights_only=True)
    except Exception as exc:  # offline, refused, a hash mismatch, or an unreadable cached file
        if cached:
            raise _refused(target, exc) from None
        raise CncnnError(
            f"{what} are not cached and could not be downloaded ({type(exc).__name__}). "
            f"Put the file {url} at {target} (torch.hub's cache; TORCH_HOME moves it), "
            f"or pass --pretrained PATH to a local copy, or --no-pretrained to train from scratch."
        ) from None
    return _state_dict_of(obj, target)


def weights_url(arch: str, weights_name: str) -> str:
    """The download URL of torchvision's ``weights_name`` weights for ``arch``."""
    try:
        return torchvision.models.get_model_weights(arch)[weights_name].url
    except KeyError:
        known = ", ".join(w.name for w in torchvision.models.get_model_weights(arch))
        raise CncnnError(
            f"unknown pretrained weights '{weights_name}' for {arch}. "
            f"torchvision offers: {known}; or give a file path."
        ) from None


def load_pretrained_state(arch: str, pretrained: str | Path) -> dict[str, torch.Tensor]:
    """Resolve ``pretrained`` (enum name or path) to a state dict for torchvision's ``arch``."""
    text = str(pretrained)
    if Path(text).suffix in (".pth", ".pt", ".bin", ".safetensors") or Path(text).exists():
        return load_state_file(text)
    return load_url_state(weights_url(arch, text), f"ImageNet weights {arch} {text}")
