"""ECE, NLL, Brier, temperature fitting, and `cncnn calibrate` end to end."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from cncnn_cli.apis.export import ExportGraph
from cncnn_cli.apis.inference import Predictor
from cncnn_cli.cli.main import main
from cncnn_cli.evaluation.calibration import calibration_report, fit_temperature, reliability
from cncnn_cli.models.embedding import final_linears
from cncnn_cli.weights.checkpoint import load_model, read_checkpoint, save_checkpoint
from tests.helpers.datasets import make_imagefolder, write_image

CLASSES = ("a", "b", "c", "d", "e")


def overconfident(n: int = 4000, k: int = 5, scale: float = 4.0, seed: int = 0):
    """Labels drawn from softmax(z): z is calibrated, ``scale × z`` overconfident."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=generator).flatten()
    return scale * z, labels


def test_ece_nll_and_brier_by_hand():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]]))
    labels = torch.tensor([0, 1, 1, 0])
    report = calibration_report(logits, labels)
    # top-1 scores .9 (right), .6 (wrong), .7 (right), .95 (right): bins (.8667,.9333], (.5333,.6], (.6667,.7333],
    # (.9333,1] hold one image each: ECE = (0.1 + 0.6 + 0.3 + 0.05) / 4.
    assert report["ece"] == pytest.approx(100 * (0.1 + 0.6 + 0.3 + 0.05) / 4)
    assert report["nll"] == pytest.approx(-(torch.log(torch.tensor([0.9, 0.4, 0.7, 0.95]))).mean().item())
    brier = [(0.1 ** 2) * 2, 0.6 ** 2 * 2, 0.3 ** 2 * 2, 0.05 ** 2 * 2]
    assert report["brier"] == pytest.approx(sum(brier) / 4)


def test_a_score_on_a_bin_edge_goes_to_the_lower_bin():
    table = reliability(torch.tensor([[1 / 3, 2 / 3], [1.0, 0.0]], dtype=torch.float64), torch.tensor([1, 0]), bins=3)
    assert table["count"].tolist() == [0, 1, 1]


def test_the_fitted_temperature_undoes_the_overconfidence_and_keeps_top1():
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4.0, rel=0.1)
    before, after = calibration_report(logits, labels), calibration_report(logits, labels, temperature)
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    assert torch.equal((logits / temperature).argmax(1), logits.argmax(1))


def _scaled_checkpoint(source, dst, factor: float):
    """The checkpoint with its classifiers' final layers × ``factor``: its logits × ``factor``, overconfident."""
    model, info = load_model(source)
    for layer in final_linears(model, len(info.classes)):
        layer.weight.data *= factor
        layer.bias.data *= factor
    save_checkpoint(dst, model.state_dict(), info)
    return dst


def test_calibrate_fits_on_validation_data_and_every_consumer_applies_it(tmp_path, cncnn_checkpoint, capsys):
    root = make_imagefolder(tmp_path, CLASSES, {"train": 4, "val": 4, "test": 3})
    hot = _scaled_checkpoint(cncnn_checkpoint, tmp_path / "hot.safetensors", 20.0)
    calibrated = tmp_path / "calibrated.safetensors"
    common = ["--dataset", "imagefolder", "--data-root", str(root), "--workers", "0"]
    assert main(["calibrate", str(hot), "--out", str(calibrated), "--val-split", "val", "--json", *common]) == 0
    fitted = json.loads(capsys.readouterr().out)
    assert read_checkpoint(calibrated)[0].temperature == pytest.approx(fitted["temperature"])
    assert fitted["after"]["nll"] < fitted["before"]["nll"]
    assert main(["eval", str(calibrated), "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    plain, scaled = report["calibration"]["plain"], report["calibration"]["calibrated"]
    assert scaled["temperature"] == pytest.approx(fitted["temperature"])
    assert scaled["nll"] < plain["nll"] and scaled["ece"] < plain["ece"]

    image = write_image(tmp_path / "x.jpg", 1, 7)
    hot_scores = Predictor.from_checkpoint(hot, "cpu").predict([image], topk=5)[0].predictions
    cool_scores = Predictor.from_checkpoint(calibrated, "cpu").predict([image], topk=5)[0].predictions
    assert [p["index"] for p in hot_scores] == [p["index"] for p in cool_scores]  # the ranking never changes
    assert cool_scores[0]["score"] < hot_scores[0]["score"]
    model, info = load_model(calibrated)
    images = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    inputs = model.data_preprocessor({"inputs": images}, False)["inputs"]
    graph = ExportGraph(model, info.temperature)
    assert torch.allclose(graph(images), model(inputs, mode="tensor")["logits"] / info.temperature, atol=1e-5)


def test_eval_out_draws_the_reliability_diagram(tmp_path, cncnn_checkpoint, capsys):
    root = make_imagefolder(tmp_path, CLASSES, {"train": 1, "test": 2})
    out = tmp_path / "report"
    assert main(["eval", str(cncnn_checkpoint), "--dataset", "imagefolder", "--data-root", str(root),
                 "--workers", "0", "--out", str(out)]) == 0
    assert (out / "reliability.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    ([], "calibrate needs validation data"),
    (["--val-split", "test"], "must not be fitted on the test split"),
    (["--val-fraction", "1.5"], "expected a fraction between 0 and 1"),
    (["--val-split", "val", "--val-fraction", "0.2"], "not both"),
])
def test_calibrate_without_validation_data_is_one_line(tmp_path, cncnn_checkpoint, capsys, argv, message):
    out = tmp_path / "c.safetensors"
    assert main(["calibrate", str(cncnn_checkpoint), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_a_temperature_not_above_zero_in_metadata_is_one_line(tmp_path, cncnn_checkpoint, capsys, temperature):
    info, weights = read_checkpoint(cncnn_checkpoint)
    broken = tmp_path / "broken.safetensors"
    save_file(weights, str(broken), metadata={**info.metadata(), "temperature": json.dumps(temperature)})
    image = write_image(tmp_path / "x.jpg", 0, 0)
    assert main(["predict", str(image), "--checkpoint", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "temperature" in err and "cncnn calibrate" in err and len(err.splitlines()) == 1
