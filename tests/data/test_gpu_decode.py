"""Device-side JPEG decoding (``data.gpu_decode``) on CPU: the normal loader's eval pixels, exactly."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg

from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.data.gpu_decode import JpegBytes, decode_batch
from cncnn_cli.data.speed import write_synthetic_jpegs
from cncnn_cli.data.transforms import build_transform

PREPROCESS = {"resize": 80, "crop": 64}


def _datasets(tmp_path, transform):
    root = str(write_synthetic_jpegs(tmp_path, count=6, size=(150, 100)))
    return build_dataset("imagefolder", root, "test", transform)


def test_device_decode_equals_the_eval_transform(tmp_path):
    normal = _datasets(tmp_path, build_transform(PREPROCESS, train=False))
    expected = next(iter(DataLoader(normal, batch_size=6, collate_fn=collate)))
    raw = next(iter(DataLoader(JpegBytes(_datasets(tmp_path, None)), batch_size=6, collate_fn=collate)))
    assert isinstance(raw["inputs"], list) and raw["inputs"][0].dim() == 1
    decoded = decode_batch(raw["inputs"], PREPROCESS, "cpu")
    assert decoded.dtype == torch.uint8 and decoded.shape == (6, 3, 64, 64)
    assert torch.equal(decoded, expected["inputs"]) and torch.equal(raw["data_samples"], expected["data_samples"])


def test_training_crops_and_flips_follow_the_generator_and_the_banner_is_dropped(tmp_path):
    raw = [JpegBytes(_datasets(tmp_path, None))[i]["inputs"] for i in range(4)]
    draws = [decode_batch(raw, PREPROCESS, "cpu", train=True, generator=torch.Generator().manual_seed(3))
             for _ in range(2)]
    assert torch.equal(draws[0], draws[1]) and draws[0].shape == (4, 3, 64, 64)
    assert not torch.equal(draws[0], decode_batch(raw, PREPROCESS, "cpu"))
    # 100 rows less a 20-row banner, "resized" to its own 80x150: the center crop of the top 80 rows
    cropped = decode_batch(raw[:1], {"resize": (80, 150), "crop": (64, 128)}, "cpu", crop_bottom=20)
    top = decode_jpeg(raw[0], mode=ImageReadMode.RGB)[:, :80]
    assert torch.equal(cropped[0], top[:, 8:72, 11:139])


def test_a_file_that_is_not_a_jpeg_is_skipped_and_counted(tmp_path):
    data = _datasets(tmp_path, None)
    png = tmp_path / "test" / "class_0" / "x.png"
    png.write_bytes(b"not a jpeg")
    data.samples.append((str(png), 0))
    batch = collate([JpegBytes(data)[len(data) - 1], JpegBytes(data)[0]])
    assert batch["skipped"] == 1 and len(batch["inputs"]) == 1
