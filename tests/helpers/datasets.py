"""Tiny datasets written in the exact published layouts, for tests.

Each ``make_*`` writes under ``root`` and returns the dataset folder (``CUB_200_2011``,
``stanford_cars``, ``fgvc-aircraft-2013b``, another Cars copy's folder or the ImageFolder
root). Images are small noisy JPEGs tinted by class. As in the real sets, some files are not plain RGB: the first
training image of class 0 is a grayscale JPEG and the first training image of class 1 a
CMYK JPEG (see :func:`special_mode`). :func:`truncate` breaks a file for error tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

IMAGE_SIZE = (48, 40)  # width, height; taller than the 20-pixel aircraft banner
CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani")
CAR_CLASSES = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008")
AIRCRAFT_VARIANTS = (
    ("707-320", "Boeing 707", "Boeing"),
    ("A320", "A320", "Airbus"),
    ("F/A-18", "F/A-18", "McDonnell Douglas"),
    ("737-700", "Boeing 737", "Boeing"),
)


def special_mode(label: int, index_in_class: int, train: bool) -> str:
    """The PIL mode a fixture image is saved in: ``L`` and ``CMYK`` for two training images."""
    if train and index_in_class == 0 and label in (0, 1):
        return ("L", "CMYK")[label]
    return "RGB"


def write_image(path: Path, label: int, seed: int, mode: str = "RGB", size: tuple[int, int] = IMAGE_SIZE) -> Path:
    """A noisy image tinted by ``label``, saved at ``path`` (format from the suffix) in ``mode``."""
    rng = np.random.default_rng(seed)
    tint = np.array([(label * 70) % 256, (label * 140 + 60) % 256, (255 - label * 50) % 256])
    pixels = np.clip(tint + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def truncate(path: Path) -> Path:
    """Cut a JPEG in the middle of its scan data (headers intact), as an interrupted copy does."""
    data = path.read_bytes()
    scan = data.index(b"\xff\xda")
    path.write_bytes(data[: scan + (len(data) - scan) // 2])
    return path


def _split_images(num_classes: int, train_per_class: int, test_per_class: int):
    """``(label, index_in_class, train)`` for every image, class by class."""
    for label in range(num_classes):
        for index in range(train_per_class + test_per_class):
            yield label, index, index < train_per_class


def make_cub(root: Path, num_classes: int = 3, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``root/CUB_200_2011`` with the four 1-based annotation files and ``images/NNN.Name/*.jpg``."""
    folder = Path(root) / "CUB_200_2011"
    names = [CUB_CLASSES[i] if i < len(CUB_CLASSES) else f"{i + 1:03d}.Species_{i + 1}" for i in range(num_classes)]
    images, labels, split = [], [], []
    for image_id, (label, index, train) in enumerate(_split_images(num_classes, train_per_class, test_per_class), 1):
        relative = f"{names[label]}/{names[label].split('.', 1)[1]}_{index + 1:04d}_{image_id}.jpg"
        write_image(folder / "images" / relative, label, image_id, special_mode(label, index, train))
        images.append(f"{image_id} {relative}")
        labels.append(f"{image_id} {label + 1}")
        split.append(f"{image_id} {int(train)}")
    _write_lines(folder / "classes.txt", [f"{i + 1} {name}" for i, name in enumerate(names)])
    _write_lines(folder / "images.txt", images)
    _write_lines(folder / "image_class_labels.txt", labels)
    _write_lines(folder / "train_test_split.txt", split)
    return folder


def make_cars(root: Path, num_classes: int = 3, train_per_class: int = 2, test_per_class: int = 2) -> Path:
    """``root/stanford_cars`` in torchvision's layout: devkit .mat files, cars_train/, cars_test/."""
    folder = Path(root) / "stanford_cars"
    _write_cars_devkit(folder, "devkit", folder, False, (num_classes, train_per_class, test_per_class))
    return folder


def make_cars_repackaged(
    root: Path,
    devkit: str = "car_devkit/devkit",
    labels_in: str | None = ".",
    name: str = "stanford-cars-dataset",
    num_classes: int = 3,
    train_per_class: int = 2,
    test_per_class: int = 2,
) -> Path:
    """``root/<name>`` as Kaggle re-packages Stanford Cars.

    Images one folder deeper (``cars_train/cars_train/``, ``cars_test/cars_test/``), the
    devkit under ``devkit`` with its unlabelled ``cars_test_annos.mat``, and the separately
    downloaded ``cars_test_annos_withlabels.mat`` in the sub-folder ``labels_in`` (``None``:
    not there, as the Kaggle copy ships).
    """
    folder = Path(root) / name
    labels = None if labels_in is None else folder / labels_in
    _write_cars_devkit(folder, devkit, labels, True, (num_classes, train_per_class, test_per_class))
    return folder


def make_cars_class_folders(
    root: Path, num_classes: int = 3, train_per_class: int = 2, test_per_class: int = 1
) -> Path:
    """``root/car_data/car_data/{train,test}/<car model>/<NNNNN>.jpg``: the class-folder copy of Stanford Cars."""
    folder = Path(root) / "car_data" / "car_data"
    names = _car_names(num_classes)
    for seed, (label, index, train) in enumerate(_split_images(num_classes, train_per_class, test_per_class)):
        split = "train" if train else "test"
        path = folder / split / names[label] / f"{seed + 1:05d}.jpg"
        write_image(path, label, seed, special_mode(label, index, train))
    return folder


def make_cars_annos(root: Path, num_classes: int = 3, train_per_class: int = 2, test_per_class: int = 2) -> Path:
    """``root/stanford_cars`` in the single-folder layout: ``car_ims/`` and ``cars_annos.mat``."""
    folder = Path(root) / "stanford_cars"
    annotations = []
    for seed, (label, index, train) in enumerate(_split_images(num_classes, train_per_class, test_per_class)):
        relative = f"car_ims/{seed + 1:06d}.jpg"
        write_image(folder / relative, label, seed, special_mode(label, index, train))
        annotations.append({"relative_im_path": relative, "class": label + 1, "test": int(not train)})
    scipy.io.savemat(
        str(folder / "cars_annos.mat"),
        {"annotations": _struct_array(annotations), "class_names": _cell(_car_names(num_classes))},
    )
    return folder


def make_aircraft(
    root: Path, num_classes: int = 3, train_per_class: int = 2, val_per_class: int = 1, test_per_class: int = 1
) -> Path:
    """``root/fgvc-aircraft-2013b/data`` with images/, class lists and every images_<level>_<split>.txt."""
    folder = Path(root) / "fgvc-aircraft-2013b"
    data = folder / "data"
    levels = [sorted({row[level] for row in AIRCRAFT_VARIANTS[:num_classes]}) for level in range(3)]
    levels[0] = [row[0] for row in AIRCRAFT_VARIANTS[:num_classes]]
    for name, classes in zip(("variants", "families", "manufacturers"), levels):
        _write_lines(data / f"{name}.txt", classes)
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    image_id = 1000000
    for label in range(num_classes):
        for split, count in (("train", train_per_class), ("val", val_per_class), ("test", test_per_class)):
            for index in range(count):
                image_id += 1
                mode = special_mode(label, index, split == "train")
                write_image(data / "images" / f"{image_id}.jpg", label, image_id, mode)
                rows[split].append((str(image_id), label))
    rows["trainval"] = rows["train"] + rows["val"]
    for level, name in enumerate(("variant", "family", "manufacturer")):
        for split, items in rows.items():
            lines = [f"{image} {AIRCRAFT_VARIANTS[label][level]}" for image, label in items]
            _write_lines(data / f"images_{name}_{split}.txt", lines)
    return folder


def make_imagefolder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), counts: dict[str, int] | None = None
) -> Path:
    """``root/imagefolder/<split>/<class>/<image>.jpg``; ``counts`` is images per class per split."""
    folder = Path(root) / "imagefolder"
    counts = counts or {"train": 2, "test": 1}
    seed = 0
    for split, count in counts.items():
        for label, name in enumerate(classes):
            for index in range(count):
                seed += 1
                mode = special_mode(label, index, split == "train")
                write_image(folder / split / name / f"{name}_{index}.jpg", label, seed, mode)
    return folder


def _write_cars_devkit(
    folder: Path, devkit: str, labels: Path | None, nested: bool, sizes: tuple[int, int, int]
) -> None:
    """Images, devkit .mat files and the test labels (in ``labels``, if given) of a devkit-style Cars copy.

    ``sizes`` is ``(num_classes, train_per_class, test_per_class)``; ``nested`` puts the
    images one folder deeper, and writes the devkit's unlabelled test annotations, as Kaggle's copy has.
    """
    annotations = {True: [], False: []}
    for seed, (label, index, train) in enumerate(_split_images(*sizes)):
        fname = f"{len(annotations[train]) + 1:05d}.jpg"
        split = "cars_train" if train else "cars_test"
        image_dir = folder / split / split if nested else folder / split
        write_image(image_dir / fname, label, seed, special_mode(label, index, train))
        annotations[train].append({"class": label + 1, "fname": fname})
    _save_struct(folder / devkit / "cars_train_annos.mat", annotations[True])
    if labels is not None:
        _save_struct(labels / "cars_test_annos_withlabels.mat", annotations[False])
    if nested:
        _save_struct(folder / devkit / "cars_test_annos.mat", [{"fname": r["fname"]} for r in annotations[False]])
    scipy.io.savemat(str(folder / devkit / "cars_meta.mat"), {"class_names": _cell(_car_names(sizes[0]))})


def _car_names(num_classes: int) -> list[str]:
    return [CAR_CLASSES[i] if i < len(CAR_CLASSES) else f"Car Model {i + 1} 2012" for i in range(num_classes)]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _cell(strings: list[str]) -> np.ndarray:
    """A 1xN MATLAB cell array of strings, as ``class_names`` is stored."""
    cell = np.empty((1, len(strings)), dtype=object)
    cell[0, :] = strings
    return cell


def _struct_array(records: list[dict]) -> np.ndarray:
    """A 1xN MATLAB struct array with uint8/uint16 numbers and char fields, as the Cars devkit has."""
    bbox = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]
    leading = [name for name in records[0] if name == "relative_im_path"]
    fields = [*leading, *bbox, *(name for name in records[0] if name not in leading)]
    array = np.zeros((1, len(records)), dtype=[(name, object) for name in fields])
    for i, record in enumerate(records):
        values = {"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": IMAGE_SIZE[0], "bbox_y2": IMAGE_SIZE[1], **record}
        for name in fields:
            value = values[name]
            array[0, i][name] = value if isinstance(value, str) else np.array([[value]], dtype=np.uint16)
    return array


def _save_struct(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"annotations": _struct_array(records)})


def huge_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A real PNG header declaring ``width``×``height`` pixels (a few KB of rows follow, not all):
    what a decompression bomb or a giant scan looks like to a decoder before it decodes."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = zlib.compress(b"\x00" + bytes(3 * width))  # one filtered row of zeros
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def huge_jpeg(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A small real JPEG whose frame header (SOF0) is rewritten to declare ``width``×``height``."""
    import struct

    write_image(path, 0, 0)
    data = bytearray(path.read_bytes())
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def photo(path: Path, seed: int) -> Path:
    """A smooth gradient with a bright disc and some noise: something a plot of it cannot hide."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:72, 0:80]
    disc = ((x - rng.integers(20, 60)) ** 2 + (y - rng.integers(20, 50)) ** 2 < 150) * 120
    rgb = np.stack([x * 3, y * 3, 255 - x * 2], -1) + disc[..., None] + rng.integers(0, 30, (72, 80, 3))
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


def random_pngs(folder: Path, count: int, size: int = 20) -> list[Path]:
    """``count`` noise PNGs ``img_00000.png`` ... in ``folder``, for predict and streaming tests."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
