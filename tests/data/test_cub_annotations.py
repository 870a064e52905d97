"""CUB-200-2011's annotation files that do not agree with each other: one line naming the file and the image."""
from __future__ import annotations

import pytest

from cncnn_cli.data.dataset import build_dataset
from cncnn_cli.errors import CncnnError
from tests.helpers.datasets import make_cub


def _edit(folder, name: str, line: int, text: str) -> None:
    path = folder / name
    lines = path.read_text().splitlines()
    lines[line] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name,text,message", [
    ("image_class_labels.txt", "1 x", r"image_class_labels.txt: image 1 has class 'x', which is not a class id of classes.txt \(1-3\)"),
    ("image_class_labels.txt", "1 300", r"image 1 has class '300'"),
    ("train_test_split.txt", "1 2", r"train_test_split.txt: image 1 has '2'; expected 1 \(train\) or 0 \(test\)"),
])
def test_a_bad_label_or_split_value_names_the_file_and_the_image(tmp_path, name, text, message):
    folder = make_cub(tmp_path, num_classes=3)
    _edit(folder, name, 0, text)
    with pytest.raises(CncnnError, match=message):
        build_dataset("cub", str(folder), "train")


def test_a_label_for_an_image_images_txt_does_not_list_is_named(tmp_path):
    folder = make_cub(tmp_path, num_classes=3)
    labels = folder / "image_class_labels.txt"
    labels.write_text(labels.read_text() + "99 1\n")
    with pytest.raises(CncnnError, match="image_class_labels.txt names image id 99, which images.txt does not list"):
        build_dataset("cub", str(folder), "test")


def test_class_ids_map_in_order_even_when_they_do_not_start_at_one(tmp_path):
    folder = make_cub(tmp_path, num_classes=3)
    for name in ("classes.txt", "image_class_labels.txt"):
        path = folder / name
        rows = [line.split(" ", 1) for line in path.read_text().splitlines()]
        if name == "classes.txt":
            rows = [[str(int(key) + 10), value] for key, value in rows]
        else:
            rows = [[key, str(int(value) + 10)] for key, value in rows]
        path.write_text("".join(f"{a} {b}\n" for a, b in rows))
    dataset = build_dataset("cub", str(folder), "train")
    assert sorted({label for _, label in dataset.samples}) == [0, 1, 2]
