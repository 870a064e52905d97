"""JPEG decoding, resizing and cropping on the model's device, for when the CPUs cannot feed the model.

With ``gpu_decode`` (``cncnn train --gpu-decode``) the loader workers only read files.
:class:`JpegBytes` wraps a dataset so that each plain JPEG leaves the worker as its bytes and a
:class:`Plan`: the region the dataset keeps (Aircraft drops its banner), the resize, the crop and
the flip. A training plan is drawn with the same random numbers, in the same order, as
``v2.RandomCrop`` and ``v2.RandomHorizontalFlip`` draw them, so a seeded run takes the same crops
with or without the switch. :func:`~cncnn_cli.data.collate.collate` gathers such samples into an
:class:`EncodedBatch`, which the model's data preprocessor decodes in one
``torchvision.io.decode_jpeg(list, device=...)`` call (nvJPEG on CUDA) before carrying out each
plan there.

Images the device decoder would not read as the CPU path does (not a JPEG, CMYK, an EXIF
rotation, no end-of-image marker, a dataset that makes its own images or fixes them up beyond a
box crop) are decoded in the worker as usual and travel, decoded, in the same batch.

On CPU the result equals the normal loader's pixels exactly, in training and evaluation
(tested). On CUDA, nvJPEG's IDCT and the GPU resize round differently and may differ by a few
grey levels.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from cncnn_cli.data.dataset import FineGrainedDataset, Sample
from cncnn_cli.errors import CncnnError
from cncnn_cli.data.images import ImageReadError, open_checked, read_image_file
from cncnn_cli.data.transforms import size_pair

#: EXIF tag 0x0112: nvJPEG cannot apply the rotation the CPU decoder applies.
_EXIF_ORIENTATION = 0x0112

Box = tuple[int, int, int, int]  # top, left, height, width


class UndecodableImageWarning(UserWarning):
    """An image the worker let through failed to decode on the device and on the CPU; it was dropped."""


@dataclass(frozen=True)
class Plan:
    """What the device does to one decoded JPEG: keep ``region``, resize to ``resize``, keep ``crop``, maybe flip."""

    region: Box
    resize: tuple[int, int]
    crop: Box
    flip: bool


def draw_plan(region: Box, preprocess: dict, train: bool) -> Plan:
    """The plan ``build_transform(preprocess, train)`` would carry out, with its random draws.

    Train: ``v2.RandomCrop`` draws the top, then the left offset (each only where the resize is
    larger than the crop), then ``v2.RandomHorizontalFlip`` flips when ``torch.rand(1) < 0.5``.
    Eval: ``v2.CenterCrop``'s offsets, ``round((resize - crop) / 2)``.
    """
    resize = size_pair(preprocess["resize"])
    crop_h, crop_w = size_pair(preprocess["crop"])
    if train:
        top = int(torch.randint(0, resize[0] - crop_h + 1, size=())) if resize[0] > crop_h else 0
        left = int(torch.randint(0, resize[1] - crop_w + 1, size=())) if resize[1] > crop_w else 0
        flip = bool(torch.rand(1) < 0.5)
    else:
        top, left = int(round((resize[0] - crop_h) / 2.0)), int(round((resize[1] - crop_w) / 2.0))
        flip = False
    return Plan(region, resize, (top, left, crop_h, crop_w), flip)


def apply_plan(image: torch.Tensor, plan: Plan) -> torch.Tensor:
    """uint8 3×H×W (on any device) → the planned uint8 crop: the CPU transform's operations, in its order."""
    top, left, height, width = plan.region
    image = TF.resize(image[:, top:top + height, left:left + width], list(plan.resize), antialias=True)
    top, left, height, width = plan.crop
    image = image[:, top:top + height, left:left + width]
    return image.flip(-1) if plan.flip else image


def decodes_on_device(dataset: FineGrainedDataset) -> bool:
    """Whether ``dataset``'s images are plain files that the device may decode for it.

    A dataset that makes its images itself (its own ``load_image``, e.g. the demo) or fixes them
    up beyond a box crop (its own ``prepare``; a box is declared with ``kept_region``) keeps
    decoding in the loader workers.
    """
    kind = type(dataset)
    return (kind.load_image is FineGrainedDataset.load_image) and (kind.prepare is FineGrainedDataset.prepare)


def jpeg_size(raw: bytes, path: str) -> tuple[int, int] | None:
    """(height, width) of a JPEG that nvJPEG reads as the CPU path reads it, else None.

    Checked from the header only: the JPEG start and end markers (a truncated file fails the
    batch decode, so it goes to the worker, which reports it), RGB or grayscale (not CMYK) and no
    EXIF rotation. An image over the pixel limit is None too, and the worker refuses it by name.
    """
    if raw[:2] != b"\xff\xd8" or raw.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return None
    try:
        with open_checked(Path(path), raw) as image:
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return None
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                return None
            return image.height, image.width
    except Exception:  # noqa: BLE001 - PIL's header parsers raise many kinds; the worker's decode names the problem
        return None


class JpegBytes(torch.utils.data.Dataset):
    """A dataset whose plain JPEGs come out undecoded: ``{"inputs": uint8 1-D bytes, "plan", "data_samples", "path"}``.

    Every other sample is the dataset's own (decoded and transformed in the worker), drawn
    from the same random state, so that what the run sees does not depend on which path an
    image took.
    """

    def __init__(self, dataset: FineGrainedDataset, preprocess: dict, train: bool) -> None:
        self.dataset, self.preprocess, self.train = dataset, dict(preprocess), train
        self.on_device = decodes_on_device(dataset)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def samples(self) -> list[tuple[str, int]]:
        return self.dataset.samples

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample | None:
        if self.on_device:
            path, label = self.dataset.samples[index]
            try:
                raw = read_image_file(path)  # a FIFO or device is refused, never opened
            except ImageReadError:
                raw = b""  # the dataset's own path names the problem
            size = jpeg_size(raw, path)
            if size is not None:
                plan = draw_plan(self.dataset.kept_region(*size), self.preprocess, self.train)
                return {"inputs": torch.frombuffer(bytearray(raw), dtype=torch.uint8), "plan": plan,
                        "data_samples": label, "path": path}
        return self.dataset[index]


@dataclass
class EncodedBatch:
    """A batch's images under device decoding: JPEG bytes with their plan, or (plan ``None``) an image
    the worker has already decoded and transformed."""

    images: list[torch.Tensor]
    plans: list[Plan | None]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def pin_memory(self) -> "EncodedBatch":
        """The DataLoader's pinning hook: nvJPEG reads its input from ordinary host memory."""
        return self

    def decode(self, device: torch.device | str, keep_size: bool = False) -> tuple[torch.Tensor, list[int]]:
        """(uint8 N×3×crop on ``device``, the batch index of each of the N images), in batch order.

        One batched decode; if it fails, each image is decoded alone, on the device, then on the
        CPU. An image neither decodes is dropped with an :class:`UndecodableImageWarning`; with
        ``keep_size`` (training) the next image of the batch that decoded takes its place instead,
        as the loader replaces an unreadable image, so that the batch keeps its size (BatchNorm, DDP).
        """
        encoded = [i for i, plan in enumerate(self.plans) if plan is not None]
        out: list[torch.Tensor | None] = [None if plan is not None else image.to(device, non_blocking=True)
                                          for image, plan in zip(self.images, self.plans)]
        for i, image in zip(encoded, self._decode_all([self.images[i] for i in encoded], device, encoded)):
            out[i] = None if image is None else apply_plan(image, self.plans[i])
        kept = [i for i, image in enumerate(out) if image is not None]
        if not kept:
            raise CncnnError(f"none of the {len(self)} images of a batch decodes ({', '.join(self.paths[:3])}"
                             f"{', ...' if len(self) > 3 else ''}); `cncnn data check` lists the unreadable files")
        if keep_size and len(kept) < len(self):  # each dropped image: the next one that decoded, wrapping round
            kept = [i if out[i] is not None else next((j for j in kept if j > i), kept[0]) for i in range(len(self))]
        return torch.stack([out[i] for i in kept]), kept

    def _decode_all(self, raw: list[torch.Tensor], device, indices: list[int]) -> list[torch.Tensor | None]:
        if not raw:
            return []
        try:
            return list(_decode(raw, device))
        except torch.cuda.OutOfMemoryError:
            raise  # the batch is too large for the GPU, not a bad image: say so, do not drop images
        except RuntimeError:
            return [self._decode_one(data, device, index) for data, index in zip(raw, indices)]

    def _decode_one(self, data: torch.Tensor, device, index: int) -> torch.Tensor | None:
        for where in dict.fromkeys((torch.device(device), torch.device("cpu"))):
            try:
                return _decode([data], where)[0].to(device)
            except torch.cuda.OutOfMemoryError:
                raise
            except RuntimeError as exc:
                failure = exc
        warnings.warn(f"dropping {self.paths[index]}: it failed to decode ({str(failure).splitlines()[0]})",
                      UndecodableImageWarning, stacklevel=2)
        return None


def _decode(raw: list[torch.Tensor], device) -> list[torch.Tensor]:
    """``decode_jpeg`` of the batch onto ``device``; on CUDA only once the caller's stream has drained.

    nvJPEG's hardware decoder writes its outputs without waiting for the work queued on the
    stream: memory that the caching allocator has just handed back (still read by the previous
    step's kernels) can be overwritten, giving wrong numbers elsewhere (pytorch/vision#9606).
    Waiting for the stream first is the fix; ``decode_jpeg`` waits for it before returning anyway.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec (dataset.decode too)
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)


def describe(dataset: FineGrainedDataset, device: torch.device) -> str:
    """The one line a run prints about ``gpu_decode``: where images are decoded, and why when not on the device."""
    if not decodes_on_device(dataset):
        return (f"note: gpu_decode: dataset {getattr(dataset, 'name', '') or type(dataset).__name__} makes or fixes "
                f"up its own images (load_image / prepare), so the loader workers decode them as without it")
    if device.type != "cuda":
        return ("note: gpu_decode on the CPU decodes in the training process between steps, slower than the "
                "loader workers; it is meant for CUDA")
    return (f"decoding JPEGs on {device} (nvJPEG), resizing and cropping there; the loader workers read files "
            f"(other images they decode as usual)")
