"""Images too large to decode (decompression-bomb refusals, --max-pixels) are one error entry, a
skipped sample or a listed file — never a traceback — in every command that reads images."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from cncnn_cli.data.images import ImageReadError, open_checked, set_max_pixels
from cncnn_cli.cli.main import main
from tests.helpers import datasets as fixtures
from tests.helpers.configs import TINY


@pytest.fixture(autouse=True)
def _default_limit():
    yield
    set_max_pixels(None)  # in-process commands may have changed it


def test_a_huge_image_is_one_error_entry_and_the_others_are_predicted(tmp_path, cncnn_checkpoint, capsys):
    huge = fixtures.huge_png(tmp_path / "huge.png")
    ok = fixtures.photo(tmp_path / "ok.png", seed=0)
    assert main(["predict", str(huge), str(ok), "--checkpoint", str(cncnn_checkpoint), "--json"]) == 2
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [r["image"] for r in results] == [str(huge), str(ok)]
    assert "too large" in results[0]["error"] and "--max-pixels" in results[0]["error"]
    assert results[1]["predictions"]
    assert "Traceback" not in captured.err


def test_max_pixels_refuses_above_the_limit_and_lifts_pils_guard(tmp_path, cncnn_checkpoint, capsys):
    ok = fixtures.photo(tmp_path / "ok.png", seed=0)  # 80×72 = 5,760 pixels
    assert main(["predict", str(ok), "--checkpoint", str(cncnn_checkpoint), "--json", "--max-pixels", "5000"]) == 2
    assert "more than max_pixels 5,000" in json.loads(capsys.readouterr().out)[0]["error"]
    assert main(["predict", str(ok), "--checkpoint", str(cncnn_checkpoint), "--json", "--max-pixels", "5760"]) == 0
    # Raised above PIL's guard, a 900-megapixel file is no longer refused (its header is read, lazily).
    huge = fixtures.huge_png(tmp_path / "huge.png")
    set_max_pixels(None)
    with pytest.raises(ImageReadError, match="too large"):
        open_checked(huge)
    set_max_pixels(10**9)
    with open_checked(huge) as image:
        assert image.size == (30000, 30000)
    set_max_pixels(None)
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own guard is back


def test_visualize_reports_a_huge_image_and_draws_the_rest(tmp_path, cncnn_checkpoint, capsys):
    huge = fixtures.huge_jpeg(tmp_path / "huge.jpg")
    ok = fixtures.photo(tmp_path / "ok.png", seed=1)
    out = tmp_path / "out"
    assert main(["visualize", str(huge), str(ok), "--checkpoint", str(cncnn_checkpoint), "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["ok_cncnn.png"]
    err = capsys.readouterr().err
    assert "huge.jpg" in err and "too large" in err and "Traceback" not in err


def test_training_skips_and_counts_a_huge_image_and_data_check_lists_it(tmp_path, capsys):
    root = fixtures.make_imagefolder(tmp_path / "data")
    huge = fixtures.huge_jpeg(sorted((root / "train").rglob("*.jpg"))[0])  # the JPEG fast path's header check
    with pytest.warns(UserWarning, match=huge.name):
        assert main(["train", "cub", "--work-dir", str(tmp_path / "run"), *TINY, "--epochs", "1", "--batch-size", "2",
                     "--data-root", str(root), "--dataset", "imagefolder"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_images"] >= 1
    capsys.readouterr()
    assert main(["data", "check", "--dataset", "imagefolder", "--data-root", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert str(huge) in json.dumps(report) and "too large" in json.dumps(report)


def test_eval_skips_and_counts_a_huge_image(tmp_path, cncnn_checkpoint, capsys):
    root = fixtures.make_imagefolder(tmp_path / "data", classes=("a", "b", "c", "d", "e"))
    fixtures.huge_png(sorted((root / "test").rglob("*.jpg"))[0].with_suffix(".png"))
    with pytest.warns(UserWarning, match="too large"):
        code = main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(root), "--json",
                     "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["num_images"] == 5
    assert "1 unreadable image(s) were skipped" in captured.err
