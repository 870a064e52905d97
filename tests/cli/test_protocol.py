"""Results users can trust: selection without peeking at test, the paper's batch by accumulation,
linear lr scaling, a clear out-of-memory message, and test-time flips."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cncnn_cli.weights.checkpoint import load_model
from cncnn_cli.config.resolve import resolve_config
from cncnn_cli.engine.batching import plan_batch
from cncnn_cli.engine.protocol import stratified_holdout
from cncnn_cli.errors import CncnnError
from cncnn_cli.evaluation.evaluate import evaluate_checkpoint
from cncnn_cli.cli.main import main
from tests.helpers import datasets as fixtures
from tests.helpers import protocol_plugins
from tests.helpers.configs import DEMO, TINY

pytestmark = pytest.mark.slow

HELPERS = Path(__file__).parents[1] / "helpers"


def test_holdout_is_stratified_disjoint_and_fixed_by_the_seed():
    labels = [label for label in range(5) for _ in range(20)] + [5, 5]  # class 5 has only two images
    keep, held = stratified_holdout(labels, 0.1, seed=0)
    assert sorted(keep + held) == list(range(len(labels))) and not set(keep) & set(held)
    per_class = Counter(labels[i] for i in held)
    assert per_class == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2}  # round(0.1 × 20) each; 0.1 × 2 rounds to 0
    assert stratified_holdout(labels, 0.1, seed=0) == (keep, held)
    assert stratified_holdout(labels, 0.1, seed=1)[1] != held
    _, most = stratified_holdout(labels, 0.9, seed=0)
    assert Counter(labels[i] for i in most)[5] == 1  # every class keeps a training image


def test_val_fraction_selects_on_held_out_images_and_tests_once(tmp_path, capsys):
    protocol_plugins.READS.clear()
    demo = ["--dataset", "logged_demo", "--batch-size", "4", "--cfg-options", "dataset.train_per_class=4",
            "--cfg-options", "dataset.test_per_class=2", "--cfg-options", "dataset.image_size=40"]
    run = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(run), *TINY, *demo, "--epochs", "2", "--val-fraction", "0.25",
                 "--seed", "5"]) == 0
    train_labels = [i % 10 for i in range(40)]  # the demo set's labels cycle through its 10 classes
    keep, held = stratified_holdout(train_labels, 0.25, seed=5)
    assert len(held) == 10 and Counter(train_labels[i] for i in held) == Counter(range(10))
    reads = protocol_plugins.READS
    test_reads = [index for split, _, index in reads if split == "test"]
    assert sorted(test_reads) == list(range(20))  # the 20 test images, each read once: one evaluation
    chosen_on = [index for split, augmented, index in reads if split == "train" and not augmented]
    assert sorted(chosen_on) == sorted(held * 2)  # both epochs validated on the held-out images only
    trained_on = {index for split, augmented, index in reads if split == "train" and augmented}
    assert trained_on <= set(keep) and not trained_on & set(held)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["selected_on"] == "val" and metrics["best"]["num_images"] == 10
    assert metrics["last"]["epoch"] == 2 and metrics["last"]["split"] == "val"
    tested = metrics["test_at_best_val"]
    assert tested["split"] == "test" and tested["num_images"] == 20 and tested["epoch"] == metrics["best"]["epoch"]
    assert evaluate_checkpoint(run / "best.safetensors", workers=0).report["top1"] == tested["top1"]
    assert "quote this" in capsys.readouterr().err


def test_aircraft_val_split_trains_on_train_and_selects_on_val(tmp_path):
    fixtures.make_aircraft(tmp_path / "data", num_classes=3, train_per_class=2, val_per_class=2, test_per_class=1)
    run = tmp_path / "run"
    assert main(["train", "aircraft", "--data-root", str(tmp_path / "data"), "--work-dir", str(run), *TINY,
                 "--batch-size", "2", "--epochs", "1", "--val-split", "val"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["selected_on"] == "val" and metrics["best"]["num_images"] == 6
    assert metrics["test_at_best_val"]["num_images"] == 3
    assert metrics["history"][0]["train_images_per_s"] > 0


def test_val_split_without_a_published_one_and_both_protocols_are_refused(tmp_path, capsys):
    fixtures.make_cub(tmp_path / "data")
    assert main(["train", "cub", "--data-root", str(tmp_path / "data"), "--work-dir", str(tmp_path / "a"), *TINY,
                 "--val-split", "val"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["train", "demo", "--work-dir", str(tmp_path / "b"), "--val-split", "val",
                 "--val-fraction", "0.1"]) == 2
    assert "not both" in capsys.readouterr().err


def _no_bn_recipe(tmp_path: Path) -> Path:
    data = fixtures.make_imagefolder(tmp_path / "data", counts={"train": 2, "test": 1})  # 2 classes: 4 images
    recipe = tmp_path / "no_bn.py"
    recipe.write_text(f"""
model = dict(type='baseline', num_classes=2, backbone=dict(type='tiny_no_bn'))
dataset = dict(type='imagefolder', data_root={str(data)!r})
preprocess = dict(resize=36, crop=32, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4))
train_cfg = dict(max_epochs=1)
batch_size = 4
auto_scale_lr = dict(base_batch_size=4)
workers = 0
""")
    return recipe


def test_accumulating_two_batches_of_two_is_one_step_of_four(tmp_path, capsys):
    """Four training images: batch 4 is one update; batch 2 × accumulate 2 must be the same update."""
    runs, recipe = {}, _no_bn_recipe(tmp_path)
    for name, extra in (("batch4", ["--batch-size", "4"]), ("accumulate", ["--batch-size", "2", "--accumulate", "2"]),
                        ("batch2", ["--batch-size", "2", "--no-scale-lr"])):
        assert main(["train", str(recipe), "--work-dir", str(tmp_path / name), *extra]) == 0
        runs[name] = load_file(str(tmp_path / name / "last.safetensors"))
        if name == "accumulate":  # 2 × 2 = the recipe's 4: nothing to scale
            assert "effective batch" not in capsys.readouterr().err
    for key in runs["batch4"]:
        torch.testing.assert_close(runs["accumulate"][key], runs["batch4"][key], rtol=1e-5, atol=1e-6, msg=key)
    assert any(not torch.allclose(runs["batch2"][k], runs["batch4"][k]) for k in runs["batch4"])  # two steps differ
    metrics = json.loads((tmp_path / "accumulate" / "metrics.json").read_text())
    assert metrics["batch"]["effective"] == 4 and metrics["batch"]["accumulate"] == 2


def test_effective_batch_derives_the_accumulation_from_batch_and_processes(monkeypatch):
    cfg = resolve_config("cub", {"batch_size": 4, "effective_batch": 16})
    plan = plan_batch(cfg)
    assert (plan.accumulate, plan.effective, plan.lr_scale) == (4, 16, 1.0)
    cfg.launcher = "pytorch"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert plan_batch(cfg).accumulate == 2
    cfg.effective_batch = 12
    with pytest.raises(CncnnError, match="not a multiple"):
        plan_batch(cfg)
    cfg = resolve_config("cub", {"batch_size": 8, "no_scale_lr": True})
    assert plan_batch(cfg).lr_scale == 1.0 and plan_batch(cfg).effective == 8
    assert plan_batch(resolve_config("cub", {"batch_size": 8})).lr_scale == 0.5


def test_stop_mid_accumulation_waits_for_the_step_and_resumes_exactly(tmp_path, capsys):
    args = [*DEMO, "--batch-size", "4", "--accumulate", "2", "--epochs", "2", "--seed", "1"]
    assert main(["train", "demo", "--work-dir", str(tmp_path / "straight"), *TINY, *args]) == 0
    hook = "{'type': 'InterruptAt', 'epoch': 0, 'iteration': 2, 'mode': 'signal'}"  # after micro-batch 3 of 10
    assert main(["train", "demo", "--work-dir", str(tmp_path / "resumed"), *TINY, *args,
                 "--plugin", str(HELPERS / "interrupt_hook.py"), "--cfg-options", f"custom_hooks=[{hook}]"]) == 130
    state = torch.load(tmp_path / "resumed" / "state.pth", weights_only=True)
    assert state["meta"]["iter"] == 4 and state["cncnn"]["sampler_skip"] == 16  # stopped at the step's end
    assert main(["train", "demo", "--work-dir", str(tmp_path / "resumed"), *TINY, *args, "--resume"]) == 0
    straight = load_file(str(tmp_path / "straight" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "last.safetensors"))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)


def test_out_of_memory_names_the_batch_and_the_flags_that_fit_and_keeps_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "demo", "--work-dir", str(run), *TINY, *DEMO, "--batch-size", "4", "--epochs", "3",
                 "--plugin", str(HELPERS / "protocol_plugins.py"),
                 "--cfg-options", "custom_hooks=[{'type': 'OutOfMemoryAt', 'epoch': 1}]"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "--batch-size 4 per device" in err and "--batch-size 2 --accumulate 2" in err
    assert "last.safetensors" in err and "--amp" in err and "add --resume" in err
    load_model(run / "last.safetensors")
    assert json.loads((run / "metrics.json").read_text())["history"][-1]["epoch"] == 1
    # the effective batch is the run's: another one is refused, a smaller batch × accumulation goes on
    assert main(["train", "demo", "--work-dir", str(run), *TINY, *DEMO, "--batch-size", "2", "--epochs", "3",
                 "--resume"]) == 2
    assert "effective batch of 4" in capsys.readouterr().err
    assert main(["train", "demo", "--work-dir", str(run), *TINY, *DEMO, "--batch-size", "2", "--accumulate", "2",
                 "--epochs", "3", "--resume"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3] and metrics["batch"]["accumulate"] == 2


def test_flip_tta_is_the_mean_of_the_image_and_its_mirror(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", "--work-dir", str(run), *TINY, *DEMO, "--epochs", "1"]) == 0
    plain = evaluate_checkpoint(run / "best.safetensors", workers=0)
    flipped = evaluate_checkpoint(run / "best.safetensors", workers=0, tta="flip")
    assert not torch.allclose(plain.logits, flipped.logits)
    assert flipped.without_tta == {k: v for k, v in plain.report.items() if k != "calibration"}  # accuracy only
    model, info = load_model(run / "best.safetensors")
    from cncnn_cli.data.transforms import build_transform
    from cncnn_cli.data.dataset import build_dataset

    data = build_dataset("demo", "", "test", build_transform(info.preprocess, False), **{
        k: v for k, v in info.dataset.items() if k not in ("type", "data_root")})
    images = torch.stack([data[i]["inputs"] for i in range(len(data))])
    with torch.inference_mode():
        inputs = model.data_preprocessor({"inputs": images}, False)["inputs"]
        logits = model(inputs, mode="tensor")["logits"]
        mirrored = model(inputs.flip(3), mode="tensor")["logits"]
    torch.testing.assert_close(flipped.logits, (logits + mirrored) / 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain.logits, logits, rtol=1e-5, atol=1e-5)
    assert main(["eval", str(run / "best.safetensors"), "--json", "--workers", "0", "--tta", "flip"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tta"] == "flip" and document["without_tta"]["top1"] == plain.report["top1"]
