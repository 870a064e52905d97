"""JPEG decoding and resizing on the model's device, for when the CPUs cannot feed the model.

The loader then only reads files: :class:`JpegBytes` yields each JPEG's bytes (a uint8 1-D
tensor; :func:`~cncnn_cli.data.collate.collate` keeps them as a list), and :func:`decode_batch`
decodes the whole batch in one ``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG
on CUDA), then resizes and crops each image there with the same v2 operations as
:func:`~cncnn_cli.data.transforms.build_transform`. The code is device-agnostic: on CPU it
gives the normal loader's pixels exactly (that loader also decodes JPEGs with
``decode_jpeg`` and resizes the uint8 tensor, antialiased bilinear). On CUDA, nvJPEG's
IDCT and the GPU resize round differently and may differ by a few grey levels.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from cncnn_cli.data.dataset import JPEG_SUFFIXES, FineGrainedDataset
from cncnn_cli.data.transforms import size_pair


class JpegBytes(torch.utils.data.Dataset):
    """A dataset's samples as undecoded JPEG bytes: ``{"inputs": uint8 1-D, "data_samples", "path"}``.

    A file that is not a JPEG by name is ``None`` (dropped and counted by the collate
    function): the device decoder reads JPEG only.
    """

    def __init__(self, dataset: FineGrainedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict | None:
        path, label = self.dataset.samples[index]
        if not str(path).lower().endswith(JPEG_SUFFIXES):
            return None
        with open(path, "rb") as file:
            data = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
        return {"inputs": data, "data_samples": label, "path": path}


def decode_batch(raw: Sequence[torch.Tensor], preprocess: dict, device: torch.device | str, train: bool = False,
                 crop_bottom: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG bytes → uint8 B×3×crop on ``device``: decode, drop ``crop_bottom`` rows (Aircraft's banner), resize, crop.

    Eval: center crop, as the eval transform. Train: a random crop and a horizontal flip per
    image, drawn from ``generator`` (a CPU generator, so draws do not depend on the device).
    """
    resize, crop = size_pair(preprocess["resize"]), size_pair(preprocess["crop"])
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec (dataset.decode too)
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(list(raw), mode=ImageReadMode.RGB, device=device)
    out = []
    for image in images:
        if crop_bottom:
            image = image[:, : max(image.shape[1] - crop_bottom, 1)]
        image = TF.resize(image, list(resize), antialias=True)
        if train:
            top = int(torch.randint(0, resize[0] - crop[0] + 1, (), generator=generator))
            left = int(torch.randint(0, resize[1] - crop[1] + 1, (), generator=generator))
            image = image[:, top:top + crop[0], left:left + crop[1]]
            if torch.rand((), generator=generator) < 0.5:
                image = image.flip(-1)
        else:
            image = TF.center_crop(image, list(crop))
        out.append(image)
    return torch.stack(out)
