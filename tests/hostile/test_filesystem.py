"""Odd filesystem entries, walked or named: skipped with one warning each (walked) or their own error
entry (named); never a hang, never the end of the command. Every command that reads the user's folders
is tried: predict, visualize, eval, data check and training on an imagefolder dataset.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cncnn_cli.cli.main import main
from cncnn_cli.data.images import SkippedEntryWarning
from tests.helpers import datasets as fixtures
from tests.helpers.configs import TINY
from tests.helpers.datasets import random_pngs

#: Entry kinds anyone can make. ``device`` is a link to /dev/zero: reading it never ends.
KINDS = ("symlink_loop", "dangling_link", "fifo", "socket", "device")
#: What the message says each one is.
SAYS = {"symlink_loop": "symbolic link loop", "dangling_link": "which does not exist", "fifo": "named pipe (FIFO)",
        "socket": "a socket", "device": "a device file"}
HANG_LIMIT_S = 60


def make_odd(kind: str, path: Path) -> Path:
    """Create an entry of ``kind`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "symlink_loop":
        os.symlink(path.name, path)
    elif kind == "dangling_link":
        os.symlink(path.parent / "gone.jpg", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":  # bound by a relative name: the full path may exceed a socket address's 108 bytes
        here = os.getcwd()
        os.chdir(path.parent)
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(path.name)
        finally:
            os.chdir(here)
    else:
        os.symlink("/dev/zero", path)
    return path


@pytest.fixture(autouse=True)
def _no_hang():
    """A read that blocks (a FIFO, /dev/zero) fails the test instead of hanging the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {HANG_LIMIT_S} s: something blocked on an odd file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(HANG_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def skipped(recwarn, name: str) -> list[str]:
    return [str(w.message) for w in recwarn if issubclass(w.category, SkippedEntryWarning) and name in str(w.message)]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_skips_an_odd_entry_in_a_folder_with_one_warning(tmp_path, cncnn_checkpoint, capsys, recwarn, kind):
    folder = tmp_path / "photos"
    good = random_pngs(folder, 2)
    make_odd(kind, folder / "x.jpg")
    assert main(["predict", str(folder), "--checkpoint", str(cncnn_checkpoint), "--jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == list(map(str, good))
    assert all("error" not in line for line in lines)
    warned = skipped(recwarn, "x.jpg")
    assert len(warned) == 1 and SAYS[kind] in warned[0]


@pytest.mark.parametrize("kind", KINDS)
def test_predict_gives_a_named_odd_entry_its_own_error_entry(tmp_path, cncnn_checkpoint, capsys, kind):
    good = random_pngs(tmp_path / "photos", 1)[0]
    odd = make_odd(kind, tmp_path / "photos" / "x.jpg")
    assert main(["predict", str(good), str(odd), "--checkpoint", str(cncnn_checkpoint), "--jsonl"]) == 2
    captured = capsys.readouterr()
    first, second = (json.loads(line) for line in captured.out.splitlines())
    assert first["image"] == str(good) and "predictions" in first
    assert second["image"] == str(odd) and SAYS[kind] in second["error"]
    assert captured.err.count("error:") == 1 and "Traceback" not in captured.err


@pytest.mark.parametrize("kind", KINDS)
def test_data_check_skips_an_odd_entry_among_images_and_class_folders(tmp_path, capsys, recwarn, kind):
    root = fixtures.make_imagefolder(tmp_path / "data")
    make_odd(kind, root / "train" / "cat" / "x.jpg")
    make_odd(kind, root / "train" / "zebra")  # where a class folder would be
    assert main(["data", "check", "--dataset", "imagefolder", "--data-root", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_classes"] == 2 and report["splits"]["train"]["num_images"] == 4
    assert len(skipped(recwarn, "x.jpg")) == 1 and len(skipped(recwarn, "zebra")) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_eval_on_an_imagefolder_skips_an_odd_entry(tmp_path, cncnn_checkpoint, capsys, recwarn, kind):
    root = fixtures.make_imagefolder(tmp_path / "data", classes=tuple("abcde"), counts={"train": 1, "test": 1})
    make_odd(kind, root / "test" / "a" / "x.jpg")
    assert main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(root),
                 "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 5
    assert len(skipped(recwarn, "x.jpg")) == 1


def test_links_to_folders_are_followed_but_a_link_back_up_is_a_loop(tmp_path, cncnn_checkpoint, capsys, recwarn):
    elsewhere = random_pngs(tmp_path / "elsewhere", 1)
    folder = tmp_path / "photos"
    random_pngs(folder, 1)
    (folder / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to("..", target_is_directory=True)
    assert main(["predict", str(folder), "--checkpoint", str(cncnn_checkpoint), "--jsonl"]) == 0
    images = [json.loads(line)["image"] for line in capsys.readouterr().out.splitlines()]
    assert images == [str(folder / "img_00000.png"), str(folder / "more" / elsewhere[0].name)]
    warned = skipped(recwarn, "up")
    assert len(warned) == 1 and "symbolic link loop" in warned[0]


def test_visualize_skips_walked_odd_entries_and_reports_named_ones(tmp_path, cncnn_checkpoint, capsys, recwarn):
    folder = tmp_path / "photos"
    random_pngs(folder, 1)
    make_odd("fifo", folder / "pipe.jpg")
    make_odd("symlink_loop", folder / "loop.png")
    named = make_odd("dangling_link", tmp_path / "gone_too.jpg")
    out = tmp_path / "maps"
    assert main(["visualize", str(folder), str(named), "--checkpoint", str(cncnn_checkpoint), "--device", "cpu",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["img_00000_cncnn.png"]
    assert err.count("error:") == 1 and "gone_too.jpg" in err and "Traceback" not in err
    assert len(skipped(recwarn, "pipe.jpg")) == 1 and len(skipped(recwarn, "loop.png")) == 1


@pytest.mark.slow
def test_training_on_an_imagefolder_skips_odd_entries(tmp_path, recwarn):
    root = fixtures.make_imagefolder(tmp_path / "data")
    for kind in KINDS:
        make_odd(kind, root / "train" / "cat" / f"{kind}.jpg")
    assert main(["train", "cub", "--work-dir", str(tmp_path / "run"), *TINY, "--epochs", "1", "--batch-size", "2",
                 "--data-root", str(root), "--dataset", "imagefolder"]) == 0
    assert all(len(skipped(recwarn, f"{kind}.jpg")) == 1 for kind in KINDS)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 0  # the odd entries never became samples


def cli(*args: str, drop_file_permissions_bypass: bool = False) -> subprocess.CompletedProcess:
    """``cncnn ARGS`` in a child process; a hang fails after HANG_LIMIT_S instead of blocking the suite.

    ``drop_file_permissions_bypass``: as root, run without the capabilities that let root read any file
    (DAC_OVERRIDE, DAC_READ_SEARCH), so that ``chmod 000`` means what it says; skipped where that is impossible.
    """
    prefix = []
    if drop_file_permissions_bypass and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None or subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", "true"],
                                             capture_output=True).returncode != 0:
            pytest.skip("running as root without a way to drop DAC_OVERRIDE: file permissions cannot be tested")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    return subprocess.run([*prefix, sys.executable, "-m", "cncnn_cli", *args], capture_output=True, text=True,
                          errors="backslashreplace", timeout=HANG_LIMIT_S)


def test_a_fifo_passed_by_name_as_a_shell_glob_does_is_an_error_entry_not_a_hang(tmp_path, cncnn_checkpoint):
    folder = tmp_path / "photos"
    random_pngs(folder, 2)
    make_odd("fifo", folder / "x.jpg")
    result = cli("predict", *map(str, sorted(folder.iterdir())), "--checkpoint", str(cncnn_checkpoint), "--jsonl")
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [("error" in line) for line in lines] == [False, False, True]
    assert "named pipe (FIFO)" in lines[2]["error"] and "Traceback" not in result.stderr


@pytest.fixture()
def locked(tmp_path):
    """A folder with a readable image, an unreadable one and an unreadable subfolder; restored after the test."""
    folder = tmp_path / "photos"
    random_pngs(folder, 1)
    secret = random_pngs(tmp_path / "secret", 1)[0].rename(folder / "secret.png")
    inner = folder / "locked"
    random_pngs(inner, 1)
    named = random_pngs(tmp_path / "named", 1)[0]
    for path in (secret, inner, named):
        path.chmod(0)
    yield folder, named
    for path in (secret, inner, named):
        path.chmod(stat.S_IRWXU)


def test_predict_skips_unreadable_entries_and_names_an_unreadable_file(locked, cncnn_checkpoint):
    folder, named = locked
    behind = folder / "locked" / "img_00000.png"  # a file in a folder that cannot be entered
    result = cli("predict", str(folder), str(named), str(behind), "--checkpoint", str(cncnn_checkpoint), "--jsonl",
                 drop_file_permissions_bypass=True)
    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(folder / "img_00000.png"), str(named), str(behind)]
    assert [line.get("error") for line in lines] == [None, f"{named}: permission denied",
                                                     f"{behind}: permission denied"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: skipping {folder / 'locked'}: permission denied",
                        f"warning: skipping {folder / 'secret.png'}: permission denied"]
    assert "Traceback" not in result.stderr


def test_data_check_skips_unreadable_entries(tmp_path):
    root = fixtures.make_imagefolder(tmp_path / "data")
    secret = root / "train" / "cat" / "cat_1.jpg"
    secret.chmod(0)
    (root / "test" / "dog").chmod(0)
    try:
        result = cli("data", "check", "--dataset", "imagefolder", "--data-root", str(root), "--json",
                     drop_file_permissions_bypass=True)
    finally:
        secret.chmod(stat.S_IRWXU)
        (root / "test" / "dog").chmod(stat.S_IRWXU)
    assert result.returncode == 0, result.stderr
    splits = json.loads(result.stdout)["splits"]
    assert splits["train"]["per_class"] == {"cat": 1, "dog": 2} and splits["test"]["per_class"] == {"cat": 1, "dog": 0}
    assert result.stderr.count("permission denied") == 2 and "Traceback" not in result.stderr


def test_a_broken_exif_block_is_at_most_one_line(tmp_path, cncnn_checkpoint):
    image = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation, then the entry count made to claim far more entries than there are
    Image.new("RGB", (16, 16), (200, 10, 10)).save(image, "JPEG", exif=exif.tobytes())
    data = bytearray(image.getvalue())
    tiff = data.index(b"Exif\x00\x00") + 6
    data[tiff + 8:tiff + 10] = b"\x40\x00" if data[tiff:tiff + 2] == b"MM" else b"\x00\x40"
    path = tmp_path / "broken_exif.jpg"
    path.write_bytes(bytes(data))
    result = cli("predict", str(path), str(path), "--checkpoint", str(cncnn_checkpoint), "--jsonl")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 1 and all(str(path) in line for line in lines), lines
