"""ImageNet weights for backbones: torchvision's enum names, torchvision's cache, or a file.

Files are read with ``safetensors`` or ``torch.load(weights_only=True)`` only: a weights
file can never run code.
"""
from __future__ import annotations

from pathlib import Path

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
        raise CncnnError(
            f"{path}: refused or unreadable as a weights-only PyTorch file ({first_line(exc)}). "
            f"cncnn loads plain tensor state dicts only and never unpickles other objects."
        ) from None
    for wrapper in ("state_dict", "model", "net"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CncnnError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def cache_path_for(arch: str, weights_name: str) -> tuple[Path, str]:
    """Where torchvision caches ``arch``'s ``weights_name`` file, and its download URL."""
    try:
        weights = torchvision.models.get_model_weights(arch)[weights_name]
    except KeyError:
        known = ", ".join(w.name for w in torchvision.models.get_model_weights(arch))
        raise CncnnError(
            f"unknown pretrained weights '{weights_name}' for {arch}. "
            f"torchvision offers: {known}; or give a file path."
        ) from None
    url = weights.url
    return Path(get_dir()) / "checkpoints" / Path(url).name, url


def load_pretrained_state(arch: str, pretrained: str | Path) -> dict[str, torch.Tensor]:
    """Resolve ``pretrained`` (enum name or path) to a state dict for torchvision's ``arch``."""
    text = str(pretrained)
    if Path(text).suffix in (".pth", ".pt", ".bin", ".safetensors") or Path(text).exists():
        return load_state_file(text)
    cached, url = cache_path_for(arch, text)
    if not cached.is_file():
        _download(url, cached, arch, text)
    return load_state_file(cached)


def _download(url: str, target: Path, arch: str, name: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as exc:
        target.with_suffix(target.suffix + ".partial").unlink(missing_ok=True)
        raise CncnnError(
            f"ImageNet weights {arch} {name} are not cached and could not be downloaded ({type(exc).__name__}). "
            f"Put the file {url} at {target} (torchvision's cache; TORCH_HOME moves it), "
            f"or pass --pretrained PATH to a local copy, or --no-pretrained to train from scratch."
        ) from None
