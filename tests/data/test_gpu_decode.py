"""Device-side JPEG decoding (``data.gpu_decode``) on CPU: the normal loader's pixels, exactly, in training too."""
from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cncnn_cli.data import gpu_decode
from cncnn_cli.errors import CncnnError
from cncnn_cli.data.collate import collate
from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.data.gpu_decode import EncodedBatch, JpegBytes, UndecodableImageWarning, jpeg_size
from cncnn_cli.data.speed import write_synthetic_jpegs
from cncnn_cli.data.transforms import build_transform
from cncnn_cli.engine.sampling import SeededAugmentation
from cncnn_cli.models.classifier import CncnnDataPreprocessor
from tests.helpers import datasets as fixtures

#: Non-square on purpose: a swapped height and width would show.
PREPROCESS = {"resize": (80, 96), "crop": (64, 64)}


def _imagefolder(tmp_path, train: bool, count: int = 6, size=(150, 100)):
    root = str(write_synthetic_jpegs(tmp_path, count=count, size=size))
    return build_dataset("imagefolder", root, "train", build_transform(PREPROCESS, train))


def _both(dataset, train: bool, keys) -> tuple[dict, dict]:
    """(normal batch, device-decoded batch) of the same samples, each augmented from its own seed."""
    normal, encoded = dataset, JpegBytes(dataset, PREPROCESS, train)
    if train:
        normal, encoded = SeededAugmentation(normal, seed=7), SeededAugmentation(encoded, seed=7)
    return collate([normal[key] for key in keys]), collate([encoded[key] for key in keys])


def _decoded(batch: dict) -> torch.Tensor:
    images, kept = batch["inputs"].decode("cpu")
    assert kept == list(range(len(batch["inputs"])))
    return images


def test_evaluation_pixels_equal_the_eval_transform(tmp_path):
    dataset = _imagefolder(tmp_path, train=False)
    expected, batch = _both(dataset, False, range(len(dataset)))
    assert isinstance(batch["inputs"], EncodedBatch) and all(plan is not None for plan in batch["inputs"].plans)
    assert batch["inputs"].images[0].dim() == 1  # the worker sent the file's bytes
    decoded = _decoded(batch)
    assert decoded.dtype == torch.uint8 and decoded.shape == (len(dataset), 3, 64, 64)
    assert torch.equal(decoded, expected["inputs"]) and torch.equal(batch["data_samples"], expected["data_samples"])


def test_training_crops_and_flips_are_the_seeded_transforms_own(tmp_path):
    dataset = _imagefolder(tmp_path, train=True)
    keys = [(epoch, index) for epoch in range(3) for index in range(len(dataset))]
    expected, batch = _both(dataset, True, keys)
    plans = batch["inputs"].plans
    assert len({plan.crop for plan in plans}) > 3 and {plan.flip for plan in plans} == {True, False}
    assert torch.equal(_decoded(batch), expected["inputs"])


def test_the_aircraft_banner_is_cropped_and_odd_images_decode_in_the_worker(tmp_path):
    root = fixtures.make_aircraft(tmp_path / "data", train_per_class=3)
    dataset = build_dataset("aircraft", str(root.parent), "train", build_transform(PREPROCESS, True))
    png = tmp_path / "data" / "other.png"
    fixtures.write_image(png, 2, seed=5, mode="RGBA")
    rotated = tmp_path / "data" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(fixtures.write_image(tmp_path / "data" / "plain.jpg", 1, seed=6)).save(rotated, exif=exif)
    dataset.samples += [(str(png), 2), (str(rotated), 1)]
    keys = [(epoch, index) for epoch in range(2) for index in range(len(dataset))]
    expected, batch = _both(dataset, True, keys)
    modes = {Image.open(path).mode for path, _ in dataset.samples}
    assert {"L", "CMYK", "RGB", "RGBA"} <= modes
    on_device = [plan is not None for plan in batch["inputs"].plans]
    # grayscale JPEGs decode on the device; CMYK, the PNG and the rotated JPEG in the worker
    assert any(on_device) and not all(on_device)
    assert {plan.region for plan in batch["inputs"].plans if plan} == {(0, 0, 20, 48)}  # 40 rows less the banner
    assert torch.equal(_decoded(batch), expected["inputs"])


def test_what_the_device_decoder_reads(tmp_path):
    jpeg = fixtures.write_image(tmp_path / "a.jpg", 0, seed=1)
    assert jpeg_size(jpeg.read_bytes(), str(jpeg)) == (40, 48)
    gray = fixtures.write_image(tmp_path / "g.jpg", 0, seed=1, mode="L")
    assert jpeg_size(gray.read_bytes(), str(gray)) == (40, 48)
    for mode, name in (("CMYK", "c.jpg"), ("RGB", "p.png")):
        path = fixtures.write_image(tmp_path / name, 0, seed=1, mode=mode)
        assert jpeg_size(path.read_bytes(), str(path)) is None
    truncated = fixtures.truncate(fixtures.write_image(tmp_path / "t.jpg", 0, seed=1))
    assert jpeg_size(truncated.read_bytes(), str(truncated)) is None
    assert jpeg_size(b"", "missing.jpg") is None


def test_an_unreadable_file_is_skipped_by_the_worker_as_without_device_decoding(tmp_path):
    dataset = _imagefolder(tmp_path, train=False, count=4)
    broken = fixtures.truncate(tmp_path / "train" / "class_0" / "0000.jpg")
    with pytest.warns(UserWarning, match="0000.jpg"):
        batch = collate([JpegBytes(dataset, PREPROCESS, False)[i] for i in range(len(dataset))])
    assert batch["skipped"] == 1 and len(batch["inputs"]) == len(dataset) - 1
    assert str(broken) not in batch["paths"]


def test_a_failed_batch_decode_falls_back_per_image_and_drops_only_what_never_decodes(tmp_path, monkeypatch):
    dataset = _imagefolder(tmp_path, train=False, count=3)
    expected, batch = _both(dataset, False, range(len(dataset)))
    real = gpu_decode._decode
    bad = batch["inputs"].images[1]

    def flaky(raw, device):
        if len(raw) > 1 or raw[0] is bad:
            raise RuntimeError("nvjpeg: unsupported\nmore detail")
        return real(raw, device)

    monkeypatch.setattr(gpu_decode, "_decode", flaky)
    with pytest.warns(UndecodableImageWarning, match=rf"dropping {batch['paths'][1]}: it failed to decode \(nvjpeg: unsupported\)"):
        images, kept = batch["inputs"].decode("cpu")
    assert kept == [0, 2] and torch.equal(images, expected["inputs"][[0, 2]])
    # the preprocessor drops the label with the image
    with pytest.warns(UndecodableImageWarning):
        out = CncnnDataPreprocessor()({"inputs": batch["inputs"], "data_samples": batch["data_samples"]})
    assert out["inputs"].shape[0] == 2 and torch.equal(out["data_samples"], expected["data_samples"][[0, 2]])
    # in training another image of the batch takes its place, label and all: the batch keeps its size
    with pytest.warns(UndecodableImageWarning):
        out = CncnnDataPreprocessor()({"inputs": batch["inputs"], "data_samples": batch["data_samples"]}, True)
    assert torch.equal(out["data_samples"], expected["data_samples"][[0, 2, 2]])
    assert torch.equal(out["inputs"][1], out["inputs"][2])
    monkeypatch.setattr(gpu_decode, "_decode", lambda raw, device: (_ for _ in ()).throw(RuntimeError("bad")))
    with pytest.warns(UndecodableImageWarning), pytest.raises(CncnnError, match="none of the 3 images"):
        batch["inputs"].decode("cpu", keep_size=True)


@pytest.mark.parametrize("failing", ["batch", "single"])
def test_running_out_of_gpu_memory_is_reported_not_taken_for_bad_images(failing, tmp_path, monkeypatch):
    """An out-of-memory error is the batch's size, not its images: no per-image retries, nothing dropped."""
    dataset = _imagefolder(tmp_path, train=False, count=2)
    _, batch = _both(dataset, False, range(len(dataset)))
    calls = []

    def out_of_memory(raw, device):
        calls.append(len(raw))
        if failing == "batch" or len(raw) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("nvjpeg: batch failed")

    monkeypatch.setattr(gpu_decode, "_decode", out_of_memory)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndecodableImageWarning)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            batch["inputs"].decode("cpu")
    assert calls == ([2] if failing == "batch" else [2, 1])


def test_on_cuda_the_callers_stream_drains_before_nvjpeg_writes(monkeypatch):
    """nvJPEG's hardware decoder does not wait for the stream: it could overwrite memory still being read."""
    events = []

    class Stream:
        def synchronize(self):
            events.append("synchronize")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(gpu_decode, "decode_jpeg", lambda raw, mode, device: events.append(("decode", device)) or [])
    gpu_decode._decode([torch.zeros(4, dtype=torch.uint8)], "cuda:0")
    gpu_decode._decode([torch.zeros(4, dtype=torch.uint8)], "cpu")
    assert events == ["synchronize", ("decode", torch.device("cuda:0")), ("decode", torch.device("cpu"))]


def test_the_preprocessor_normalizes_a_decoded_batch_as_a_stacked_one(tmp_path):
    dataset = _imagefolder(tmp_path, train=False, count=2)
    expected, batch = _both(dataset, False, range(len(dataset)))
    preprocessor = CncnnDataPreprocessor(channels_last=True)
    assert torch.equal(preprocessor(batch)["inputs"], preprocessor(expected)["inputs"])
    assert batch["inputs"].pin_memory() is batch["inputs"]


def test_loader_workers_deliver_encoded_batches(tmp_path):
    dataset = _imagefolder(tmp_path, train=False, count=4)
    loader = DataLoader(JpegBytes(dataset, PREPROCESS, False), batch_size=4, collate_fn=collate, num_workers=1)
    expected = collate([dataset[i] for i in range(len(dataset))])
    assert torch.equal(_decoded(next(iter(loader))), expected["inputs"])


def test_a_dataset_that_makes_its_own_images_keeps_them_in_the_worker():
    demo = build_dataset("demo", "", "test", build_transform({"resize": 40, "crop": 32}, False), test_per_class=1)
    wrapped = JpegBytes(demo, {"resize": 40, "crop": 32}, False)
    assert not wrapped.on_device and wrapped.classes == demo.classes
    batch = collate([wrapped[i] for i in range(3)])
    assert isinstance(batch["inputs"], torch.Tensor) and batch["inputs"].shape == (3, 3, 32, 32)
    assert "makes or fixes up its own images" in gpu_decode.describe(demo, torch.device("cuda"))
    assert "meant for CUDA" in gpu_decode.describe(_plain_dataset(), torch.device("cpu"))


def _plain_dataset():
    class Plain(gpu_decode.FineGrainedDataset):
        pass

    return Plain()
