"""What every cncnn dataset shares: the sample interface, fast decoding, layout checks.

A dataset is a list of ``(path, label)`` samples plus class names. ``__getitem__`` returns
``{"inputs", "data_samples", "path"}`` or ``None`` for an image that cannot be decoded, so
one bad file costs one sample (counted by ``cncnn_cli.data.collate``), never a training run.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from PIL import Image

from cncnn_cli.errors import CncnnError, first_line
from cncnn_cli.data.images import ImageReadError, load_rgb, open_checked, read_image_file
from cncnn_cli.registry import DATASETS, load_plugins, lookup
from cncnn_cli.utils.textio import read_text_file

if TYPE_CHECKING:  # download.py reads the registry through this module
    from cncnn_cli.data.download import Archive

try:  # torchvision's image codecs are deprecated since 0.29; PIL remains the fallback.
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - depends on the installed torchvision
    decode_jpeg = None

Sample = dict[str, Any]
JPEG_SUFFIXES = (".jpg", ".jpeg")


class UnreadableImageWarning(UserWarning):
    """An image was skipped because it could not be decoded."""


def decode(path: str, as_tensor: bool) -> Image.Image | torch.Tensor:
    """Decode ``path`` to RGB: a uint8 CHW tensor (JPEG fast path) or a PIL image.

    libjpeg-turbo through ``torchvision.io.decode_jpeg`` is ~1.4x faster per image than
    PIL plus tensor conversion and gives identical pixels for RGB, grayscale, CMYK and
    EXIF-rotated JPEGs; it rejects truncated files as PIL does. Anything it refuses
    (a PNG named .jpg, a broken file) goes through :func:`load_rgb`, which decides.
    """
    if as_tensor and decode_jpeg is not None and path.lower().endswith(JPEG_SUFFIXES):
        try:
            raw = read_image_file(path)  # a FIFO or device is refused, never opened
            open_checked(Path(path), raw).close()  # the pixel limit, from the header, before decoding
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except ImageReadError:
            raise
        except Exception:  # noqa: BLE001 - load_rgb decodes it again and names the problem
            pass
    return load_rgb(path)


class FineGrainedDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``classes`` and ``samples`` in ``__init__``."""

    name: str = ""
    #: Splits ``cncnn data check`` inspects when none is given.
    check_splits: tuple[str, ...] = ("train", "test")
    #: Image counts per split and the number of classes of the published dataset, which
    #: ``cncnn data check`` compares a copy with; empty for user data.
    published: ClassVar[dict[str, int]] = {}
    #: (width, height) of a typical image, for ``cncnn data speed``'s synthetic JPEGs without a copy;
    #: None for a set that is generated, not read (measured as it is).
    typical_image_size: ClassVar[tuple[int, int] | None] = (500, 375)
    #: The published files (name, URL or ``None``, size, sha256) that ``cncnn data download``
    #: fetches and ``cncnn data verify`` compares copies with; empty for user data.
    archives: ClassVar[tuple[Archive, ...]] = ()
    #: What ``cncnn data download`` says when no archive has a URL: why, and where copies come from.
    download_note: ClassVar[str] = ""

    def __init__(self, transform: Callable | None = None) -> None:
        self.transform = transform
        self.classes: list[str] = []
        self.samples: list[tuple[str, int]] = []
        #: The file listing this split's samples, set by readers of annotation files so that
        #: ``cncnn data check`` names it for a listed image that is missing; ``None`` where the
        #: folders are the list (ImageFolder) or the images are generated (demo).
        self.annotation_file: Path | None = None
        #: Folders holding this split's image files, in which ``cncnn data check`` lists files
        #: that no annotation mentions.
        self.image_dirs: list[Path] = []
        self._warned: set[str] = set()

    @classmethod
    def splits_to_check(cls, data_root: str, **options: Any) -> list[str]:
        """The splits that together cover the dataset (``cncnn data check`` without ``--split``)."""
        return list(cls.check_splits)

    @classmethod
    def published_counts(cls, **options: Any) -> dict[str, int]:
        """:attr:`published` for the protocol ``options`` select (some datasets have several)."""
        return dict(cls.published)

    def listed_files(self) -> set[str]:
        """Every image path the annotations name inside :attr:`image_dirs`, whichever split names it.

        This split's samples by default, which is right when no other split shares the folders.
        """
        return {path for path, _ in self.samples}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample | None:
        path, label = self.samples[index]
        try:
            image = self.load_image(index, as_tensor=self.transform is not None)
        except ImageReadError as exc:
            if path not in self._warned:
                self._warned.add(path)
                warnings.warn(f"skipping unreadable image {exc}", UnreadableImageWarning, stacklevel=2)
            return None
        image = self.prepare(image)
        if self.transform is not None:
            image = self.transform(image)
        return {"inputs": image, "data_samples": label, "path": path}

    def load_image(self, index: int, as_tensor: bool) -> Image.Image | torch.Tensor:
        """The decoded RGB image of sample ``index``; raises :class:`ImageReadError`."""
        return decode(self.samples[index][0], as_tensor)

    def kept_region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of a decoded ``height`` × ``width`` image that :meth:`prepare` keeps.

        The whole image by default; a dataset that drops a border (Aircraft's banner) says so
        here, which the device decoder (``gpu_decode``) can carry out too.
        """
        return 0, 0, height, width

    def prepare(self, image: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        """Dataset-specific fix-up applied before ``transform``: by default, keep :meth:`kept_region`.

        A subclass that overrides this (beyond a box) has its images decoded in the loader
        workers even under ``gpu_decode``.
        """
        height, width = image.shape[-2:] if isinstance(image, torch.Tensor) else image.size[::-1]
        top, left, kept_height, kept_width = self.kept_region(height, width)
        if (top, left, kept_height, kept_width) == (0, 0, height, width):
            return image
        if isinstance(image, torch.Tensor):
            return image[..., top:top + kept_height, left:left + kept_width]
        return image.crop((left, top, left + kept_width, top + kept_height))

    def inspect(self, index: int) -> tuple[str, tuple[int, int]]:
        """Stored mode and ``(width, height)`` of sample ``index`` after a full decode.

        Used by ``cncnn data check``; raises :class:`ImageReadError` naming the file.
        """
        path = self.samples[index][0]
        load_rgb(path)
        with open_checked(Path(path)) as header:
            return header.mode, header.size


def dataset_dir(data_root: str | Path, folder: str, markers: tuple[str, ...]) -> Path:
    """The extracted dataset folder: ``data_root`` itself or its child ``folder``.

    ``data_root`` is the folder when it is named ``folder`` or holds one of ``markers``;
    otherwise ``data_root/folder`` is used when it exists.
    """
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise CncnnError(f"data root {root} is not a directory: pass --data-root with the extracted "
                         f"dataset folder or its parent (docs/datasets.md)")
    if root.name == folder or any((root / marker).exists() for marker in markers):
        return root
    return root / folder if (root / folder).is_dir() else root


def require(path: Path, dataset: str, layout: str) -> Path:
    """``path`` if it exists, else a :class:`CncnnError` naming it and the expected layout."""
    if not path.exists():
        raise CncnnError(
            f"{dataset}: missing {path} - expected layout {layout} "
            f"(--data-root may be that folder or its parent)"
        )
    return path


def read_pairs(path: Path) -> dict[int, str]:
    """Parse a CUB-style ``<id> <value>`` file into ``{id: value}``."""
    pairs = {}
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value:
            raise CncnnError(f"{path}:{number}: expected '<id> <value>', got {line.strip()!r}")
        pairs[int(key)] = value
    return pairs


def check_split(dataset: str, split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise CncnnError(f"{dataset}: unknown split '{split}'; choose one of {', '.join(allowed)}")
    return split


def dataset_class(name: str) -> type:
    """The dataset class registered as ``name``, or a one-line error listing the known ones."""
    load_plugins()
    return lookup(DATASETS, name, "dataset")


def build_dataset(
    name: str, data_root: str, split: str = "train", transform: Callable | None = None, **options: Any
) -> FineGrainedDataset:
    """Build a registered dataset by name, turning unknown names and options into one-line errors."""
    cls = dataset_class(name)
    try:
        inspect.signature(cls).bind(data_root, split, transform, **options)
    except TypeError as exc:
        raise CncnnError(f"dataset '{name}': {exc}") from None
    try:
        return cls(data_root, split, transform, **options)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:  # an option of the wrong type or value
        given = ", ".join(f"{key}={value!r}" for key, value in options.items()) or "no options"
        raise CncnnError(f"dataset '{name}' cannot be read with {given}: {type(exc).__name__}: {first_line(exc)}. "
                         f"Check the dataset options in the recipe or --cfg-options") from exc
