"""NABirds, Stanford Dogs, Flowers-102, Oxford-IIIT Pets and iNaturalist 2021 read in their published layouts.

Fixtures (tests/helpers/benchmark_layouts.py) use the published file names and formats. A missing
annotation file, a label out of range and an image listed but absent are each one line, exit 2;
`data check` reports each set; the recipes train and evaluate on each; `data download` takes the
published files (or a repackaged copy) and extracts them where the readers look.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from cncnn_cli.cli.main import main
from cncnn_cli.data.dataset import build_dataset, dataset_class
from cncnn_cli.data.download import Archive
from cncnn_cli.errors import CncnnError
from tests.helpers.benchmark_layouts import (
    make_dogs,
    make_flowers,
    make_inat21,
    make_nabirds,
    make_pets,
    save_dog_list,
)
from tests.helpers.configs import TINY

LAYOUTS = {"nabirds": make_nabirds, "dogs": make_dogs, "flowers": make_flowers, "pets": make_pets,
           "inat21": make_inat21}
RECIPES = {"nabirds": "nabirds", "dogs": "dogs", "flowers": "flowers", "pets": "pets", "inat21": "inat21_mini"}


def labels(dataset) -> list[int]:
    return [label for _, label in dataset.samples]


def one_line_error(capsys, *argv: str, alone: bool = True) -> str:
    """Run ``cncnn *argv``, expect exit 2 and a one-line error without a traceback; return the line.

    ``alone``: nothing else on stderr (a download reports the files it installed before the bad one).
    """
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("error: ") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 or not alone, err
    return err.splitlines()[-1]


def check(capsys, name: str, root: Path) -> str:
    return one_line_error(capsys, "data", "check", "--dataset", name, "--data-root", str(root))


def test_nabirds_maps_sparse_leaf_ids_keeps_names_and_the_hierarchy(tmp_path):
    folder = make_nabirds(tmp_path, num_classes=4, train_per_class=2, test_per_class=1)
    train, test = build_dataset("nabirds", str(tmp_path), "train"), build_dataset("nabirds", str(folder), "test")
    assert train.classes == ["Mallard (Male)", "Mallard (Female/Juvenile)", "Wood Duck", "Snow Goose"]
    assert train.class_ids == ["295", "313", "817", "1010"]  # numeric order, not text order
    assert labels(train) == [0, 0, 1, 1, 2, 2, 3, 3] and labels(test) == [0, 1, 2, 3]
    assert train.ancestors(1) == ["Mallard (Female/Juvenile)", "Mallard", "Ducks, Geese, and Swans", "Birds"]
    assert train.ancestors(3) == ["Snow Goose", "Snow Goose", "Ducks, Geese, and Swans", "Birds"]


@pytest.mark.parametrize("lists", ["lists", "."])
def test_dogs_reads_the_mat_lists_in_lists_or_beside_images(tmp_path, lists):
    folder = make_dogs(tmp_path, num_classes=3, train_per_class=2, test_per_class=1, lists=lists)
    train, test = build_dataset("dogs", str(folder), "train"), build_dataset("dogs", str(tmp_path), "test")
    assert train.classes == ["Chihuahua", "Japanese spaniel", "Maltese dog"]
    assert labels(train) == [0, 0, 1, 1, 2, 2] and labels(test) == [0, 1, 2]
    assert train.samples[2][0].endswith("Images/n02085782-Japanese_spaniel/n02085782_1004.jpg")


def test_flowers_published_train_is_the_small_split_and_trainval_is_offered(tmp_path):
    folder = make_flowers(tmp_path, num_classes=3, per_split=1, test_per_class=2)
    sizes = {split: len(build_dataset("flowers", str(folder), split)) for split in ("train", "val", "trainval", "test")}
    assert sizes == {"train": 6, "val": 3, "trainval": 6, "test": 6}  # cncnn's train: trainval by default
    assert len(build_dataset("flowers", str(folder), "train", train_split="train")) == 3
    test = build_dataset("flowers", str(tmp_path), "test")
    assert test.classes == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]  # torchvision's names
    assert labels(test) == [0, 0, 1, 1, 2, 2] and test.samples[0][0].endswith("jpg/image_00003.jpg")


def test_pets_is_read_by_torchvision_with_its_class_names(tmp_path):
    folder = make_pets(tmp_path, num_classes=3, trainval_per_class=2, test_per_class=1)
    train, test = build_dataset("pets", str(folder), "train"), build_dataset("pets", str(tmp_path), "test")
    assert train.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    assert labels(train) == [0, 0, 1, 1, 2, 2] and labels(test) == [0, 1, 2]
    assert len(build_dataset("pets", str(folder), "trainval")) == 6
    renamed = folder.rename(tmp_path / "pets")
    with pytest.raises(CncnnError, match="needs the folder .* to be named 'oxford-iiit-pet'"):
        build_dataset("pets", str(renamed))


def test_inat_lists_compactly_from_the_json_and_keeps_the_taxonomy(tmp_path):
    folder = make_inat21(tmp_path, num_classes=3, train_per_class=2, val_per_class=1)
    train = build_dataset("inat21", str(tmp_path), "train")
    assert train.classes == ["Anas platyrhynchos", "Rosa canina", "Amanita muscaria"]
    assert train.taxonomy[2]["kingdom"] == "Fungi" and train.taxonomy[0]["genus"] == "Anas"
    assert labels(train) == [0, 0, 1, 1, 2, 2] and train.samples.labels.dtype == np.int32
    assert not isinstance(train.samples, list)  # numpy arrays, a tuple made per access
    path, label = train.samples[3]
    assert path == str(folder / "train_mini/00001_Plantae_Tracheophyta_Magnoliopsida_Rosales_Rosaceae_Rosa_canina/"
                                 "00000000-0000-0000-0000-000000000004.jpg") and label == 1
    assert train[3]["inputs"].size == (48, 40)
    assert labels(build_dataset("inat21", str(folder), "test")) == labels(build_dataset("inat21", str(folder), "val"))


@pytest.mark.parametrize(("name", "removed"), [
    ("nabirds", "image_class_labels.txt"),
    ("nabirds", "hierarchy.txt"),
    ("dogs", "lists/test_list.mat"),
    ("flowers", "setid.mat"),
    ("flowers", "imagelabels.mat"),
    ("pets", "annotations/test.txt"),
    ("inat21", "val.json"),
])
def test_a_missing_annotation_file_is_one_line_naming_it(tmp_path, capsys, name, removed):
    folder = LAYOUTS[name](tmp_path)
    (folder / removed).unlink()
    err = check(capsys, name, tmp_path)
    assert f"{name}: missing {folder / removed} - expected layout" in err


def _edit_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def _nabirds_label(folder: Path) -> str:
    image = (folder / "image_class_labels.txt").read_text().split()[0]
    _edit_line(folder / "image_class_labels.txt", 0, f"{image} 9999")
    return f"image {image} has class '9999', which classes.txt does not number"


def _dogs_label(folder: Path) -> str:
    path = folder / "lists" / "test_list.mat"
    files = [str(name) for name in scipy.io.loadmat(str(path), squeeze_me=True)["file_list"]]
    save_dog_list(path, [(name, 121 if i == 0 else i + 1) for i, name in enumerate(files)])
    return f"{files[0]} has label 121, outside 1-3"


def _flowers_label(folder: Path) -> str:
    path = folder / "imagelabels.mat"
    values = scipy.io.loadmat(str(path))["labels"]
    values[0, 4] = 103
    scipy.io.savemat(str(path), {"labels": values})
    return "image 5 has label 103, outside 1-102"


def _pets_label(folder: Path) -> str:
    _edit_line(folder / "annotations" / "test.txt", 0, "Abyssinian_3 38 1 3")
    return "class id 38 is outside 1-3"


def _inat_label(folder: Path) -> str:
    document = json.loads((folder / "val.json").read_text())
    document["annotations"][1]["category_id"] = 10000
    (folder / "val.json").write_text(json.dumps(document))
    return "an annotation has category_id 10000, which is not one of its 3 categories"


@pytest.mark.parametrize(("name", "corrupt"), [("nabirds", _nabirds_label), ("dogs", _dogs_label),
                                               ("flowers", _flowers_label), ("pets", _pets_label),
                                               ("inat21", _inat_label)])
def test_a_label_out_of_range_is_one_line_naming_the_file(tmp_path, capsys, name, corrupt):
    folder = LAYOUTS[name](tmp_path)
    message = corrupt(folder)
    err = check(capsys, name, folder)
    assert message in err and str(folder) in err


def test_a_dogs_label_of_another_breed_is_named(tmp_path):
    folder = make_dogs(tmp_path)
    path = folder / "lists" / "train_list.mat"
    files = [str(name) for name in scipy.io.loadmat(str(path), squeeze_me=True)["file_list"]]
    save_dog_list(path, [(name, 2 if i == 0 else 1 + i // 2) for i, name in enumerate(files)])
    with pytest.raises(CncnnError, match=f"{files[0]} has label 2, which is breed n02085782-Japanese_spaniel"):
        build_dataset("dogs", str(folder), "test")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_an_image_listed_but_absent_is_one_line_naming_it(tmp_path, capsys, name):
    folder = LAYOUTS[name](tmp_path)
    dataset = build_dataset(name, str(folder), "test")
    absent = [Path(dataset.samples[index][0]) for index in (0, 2)]
    for path in absent:
        path.unlink()
    err = check(capsys, name, folder)
    assert f"{name}: {absent[0]} and 1 more listed in " in err and "not on disk - the copy is incomplete" in err


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_data_check_reports_counts_classes_and_modes(tmp_path, capsys, name):
    LAYOUTS[name](tmp_path)
    assert main(["data", "check", "--dataset", name, "--data-root", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["num_classes"] == 3 and report["unlisted_files"] == []
    train = report["splits"]["train"]
    assert train["modes"]["L"] == 1 and train["modes"]["CMYK"] == 1  # decoded as RGB all the same
    assert sorted(train["per_class"].values()) == [2, 2, 2]
    published = dataset_class(name).published_counts()
    assert f"classes: 3 classes, published {published['classes']:,}" in "\n".join(report["differences_from_published"])


def test_an_extra_image_no_annotation_mentions_is_noted(tmp_path, capsys):
    folder = make_flowers(tmp_path)
    shutil.copy(folder / "jpg" / "image_00001.jpg", folder / "jpg" / "image_00099.jpg")
    assert main(["data", "check", "--dataset", "flowers", "--data-root", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unlisted_files"] == [str(folder / "jpg" / "image_00099.jpg")]


def test_recipes_list_each_dataset_with_its_size_and_classes(capsys):
    from cncnn_cli.cli.catalog import _dataset_summary
    from cncnn_cli.config.recipes import bundled_dir

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "dataset" in out and all(name in out for name in ("nabirds", "dogs"))
    summaries = {name: _dataset_summary(bundled_dir() / f"{name}.py") for name in (*RECIPES.values(), "cub")}
    assert summaries == {
        "nabirds": "NABirds (23,929 train / 24,633 test, 555 classes)",
        "dogs": "Stanford Dogs (12,000 train / 8,580 test, 120 classes)",
        "flowers": "Oxford Flowers-102 (2,040 train+val / 6,149 test, 102 classes)",
        "pets": "Oxford-IIIT Pets (3,680 trainval / 3,669 test, 37 breeds)",
        "inat21_mini": "iNaturalist 2021 mini (500,000 train_mini / 100,000 val, 10,000 species)",
        "cub": "CUB-200-2011 (5,994 train / 5,794 test, 200 classes)",
    }


def _tgz(folder: Path, arcname: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname or folder.name)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_flowers_from_a_repackaged_copy_verifies_and_extracts(tmp_path, capsys):
    copy = tmp_path / "Downloads" / "flowers-copy.tgz"
    copy.parent.mkdir()
    copy.write_bytes(_tgz(make_flowers(tmp_path / "made")))
    data = tmp_path / "data"
    assert main(["data", "download", "flowers", "--root", str(data), "--from", str(copy),
                 "--sha256", _sha256(copy.read_bytes())]) == 0
    captured = capsys.readouterr()
    assert (data / "flowers-102" / "setid.mat").is_file() and "OK" in captured.out
    assert "sha256 verified; extracting" in captured.err
    altered = tmp_path / "Downloads" / "altered.tgz"
    altered.write_bytes(copy.read_bytes()[:-7])
    err = one_line_error(capsys, "data", "download", "flowers", "--root", str(tmp_path / "other"), "--from",
                         str(altered), "--sha256", _sha256(copy.read_bytes()))
    assert f"expected {_sha256(copy.read_bytes())}" in err and not (tmp_path / "other" / "flowers-102").exists()


def test_download_flowers_published_files_by_name_into_the_torchvision_folder(tmp_path, capsys, monkeypatch):
    made = make_flowers(tmp_path / "made")
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    (downloads / "102flowers.tgz").write_bytes(_tgz(made / "jpg"))
    for name in ("imagelabels.mat", "setid.mat"):
        shutil.copy(made / name, downloads / name)
    published = tuple(Archive(path.name, None, path.stat().st_size, None,
                              md5=hashlib.md5(path.read_bytes()).hexdigest(), into="flowers-102")
                      for path in sorted(downloads.iterdir()))
    monkeypatch.setattr(dataset_class("flowers"), "archives", published)
    sources = [argument for path in sorted(downloads.iterdir()) for argument in ("--from", str(path))]
    assert main(["data", "download", "flowers", "--root", str(tmp_path / "data"), *sources]) == 0
    assert "md5 verified" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "data" / "flowers-102").iterdir()) == ["imagelabels.mat", "jpg",
                                                                                      "setid.mat"]
    assert main(["data", "download", "flowers", "--root", str(tmp_path / "data"), *sources]) == 0  # nothing redone
    assert capsys.readouterr().err.count("already downloaded, verified and extracted") == 3
    wrong = downloads / "setid.mat"
    wrong.write_bytes(b"another file")
    again = str(tmp_path / "again")
    err = one_line_error(capsys, "data", "download", "flowers", "--root", again, *sources, alone=False)
    assert f"{wrong}: md5 {hashlib.md5(b'another file').hexdigest()}, expected {published[2].md5} for setid.mat" in err
    assert not (tmp_path / "again" / "flowers-102" / "setid.mat").exists() and wrong.is_file()
    other = downloads / "flowers.zip"
    other.write_bytes(b"zip")
    err = one_line_error(capsys, "data", "download", "flowers", "--root", str(tmp_path / "again"), "--from", str(other))
    assert "not one of the files flowers publishes (102flowers.tgz, imagelabels.mat, setid.mat)" in err


def test_download_nabirds_needs_the_file_and_extracts_it_unverified(tmp_path, capsys):
    err = one_line_error(capsys, "data", "download", "nabirds", "--root", str(tmp_path / "data"))
    assert "https://dl.allaboutbirds.org/nabirds" in err
    archive = tmp_path / "nabirds.tar.gz"
    archive.write_bytes(_tgz(make_nabirds(tmp_path / "made")))
    assert main(["data", "download", "nabirds", "--root", str(tmp_path / "data"), "--from", str(archive)]) == 0
    assert "no checksum is published for nabirds.tar.gz, so it cannot be verified" in capsys.readouterr().err
    assert (tmp_path / "data" / "nabirds" / "hierarchy.txt").is_file()


def test_published_sums_are_torchvisions_and_the_sources(capsys):
    from torchvision.datasets import Flowers102, OxfordIIITPet

    flowers = {archive.name: archive.md5 for archive in dataset_class("flowers").archives}
    assert flowers == {name: md5 for name, md5 in Flowers102._file_dict.values()}
    pets = {archive.url: archive.md5 for archive in dataset_class("pets").archives}
    assert pets == dict(OxfordIIITPet._RESOURCES)
    inat = {archive.name: archive.md5 for archive in dataset_class("inat21").archives}
    assert inat["train_mini.tar.gz"] == "db6ed8330e634445efc8fec83ae81442"  # torchvision's DATASET_MD5 too
    dogs = {archive.name: archive for archive in dataset_class("dogs").archives}
    assert dogs["lists.tar"].sha256 == "34b47cacd9a98b5d150e084f24d29391c084c55272295ec65c85651bc35f4d6c"
    assert all(archive.url.startswith("http://vision.stanford.edu/aditya86/ImageNetDogs/") for archive in dogs.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_recipe_trains_and_evaluates_on_its_layout(tmp_path, capsys, name):
    LAYOUTS[name](tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", RECIPES[name], "--data-root", str(tmp_path / "data"), "--work-dir", str(run), *TINY,
                 "--epochs", "1", "--batch-size", "2"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run / "last.safetensors"), "--data-root", str(tmp_path / "data"), "--workers", "0",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_images"] == len(build_dataset(name, str(tmp_path / "data"), "test"))
