"""``cncnn data speed`` at a recipe's preprocessing, the bottleneck verdict, and the default worker count."""
from __future__ import annotations

import json

import pytest

from cncnn_cli.cli.main import main
from cncnn_cli.config.defaults import DEFAULT_WORKERS, MAX_DEFAULT_WORKERS, default_workers
from cncnn_cli.config.resolve import Recipe
from cncnn_cli.data.speed import bottleneck


def _speed(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["data", "speed", *args, "--seconds", "0.3", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("recipe,resize,size", [("cub", 600, "500x375"), ("aircraft", 512, "1200x800")])
def test_a_recipe_is_measured_at_its_preprocessing_on_jpegs_of_its_datasets_size(recipe, resize, size, capsys):
    result = _speed(capsys, recipe)
    assert (result["resize"], result["crop"]) == (resize, 448)
    assert result["dataset"] == f"synthetic {size} JPEGs (like {recipe})" and result["images_per_s_per_worker"] > 0


def test_the_verdict_names_the_bottleneck_and_the_workers_that_keep_up(capsys):
    result = _speed(capsys, "cub", "--model-images-per-s", "1000000", "--workers", "2")
    assert result["bottleneck"] == "loader" and result["workers"] == 2
    assert result["workers_needed"] > 2 and result["loader_images_per_s"] == pytest.approx(
        2 * result["images_per_s_per_worker"], rel=0.01)
    capsys.readouterr()
    assert main(["data", "speed", "cub", "--seconds", "0.3", "--model-images-per-s", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "the model is the bottleneck" in out and "1 workers keep up" in out


def test_bottleneck_arithmetic():
    assert bottleneck(50.0, 4, 300.0) == {"model_images_per_s": 300.0, "workers": 4, "loader_images_per_s": 200.0,
                                          "bottleneck": "loader", "workers_needed": 6}
    assert bottleneck(50.0, 0, 40.0)["bottleneck"] == "model"  # in-process loading: about one worker


def test_a_recipe_and_an_image_size_conflict(capsys):
    assert main(["data", "speed", "cub", "--image-size", "224"]) == 2
    assert "not both" in capsys.readouterr().err


def test_default_workers_follow_the_cpus_and_have_one_source():
    assert [default_workers(n) for n in (1, 2, 4, 9, 64)] == [0, 1, 3, 8, MAX_DEFAULT_WORKERS]
    assert Recipe.model_fields["workers"].default == DEFAULT_WORKERS == default_workers()


def test_gpu_decode_measures_the_workers_reading_and_the_device_decoding(capsys):
    result = _speed(capsys, "cub", "--gpu-decode")
    assert result["gpu_decode"] is True and result["device"] == "cpu"
    assert result["images_per_s_per_worker"] > 0 and result["device_images_per_s"] > 0
    capsys.readouterr()
    assert main(["data", "speed", "demo", "--seconds", "0.3", "--gpu-decode"]) == 0
    assert "no plain JPEG files" in capsys.readouterr().out
