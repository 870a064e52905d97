"""Training end to end on CPU: config errors, every dataset layout, exact resume, interruption, DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cncnn_cli.weights.checkpoint import read_checkpoint
from cncnn_cli.cli.main import main
from tests.helpers import datasets as fixtures
from tests.helpers.configs import DEMO, TINY

pytestmark = pytest.mark.slow

HELPERS = Path(__file__).parents[1] / "helpers"
def _train(work_dir: Path, *extra: str, recipe: str = "demo") -> int:
    return main(["train", recipe, "--work-dir", str(work_dir), *TINY, *extra])


def test_config_errors_name_the_key_and_the_closest_valid_one(tmp_path, capsys):
    assert _train(tmp_path / "a", "--cfg-options", "train_cfg.max_epoch=3") == 2
    err = capsys.readouterr().err
    assert "train_cfg.max_epoch" in err and "max_epochs" in err and "Traceback" not in err
    assert _train(tmp_path / "b", "--cfg-options", "model.fusion.chanels=8") == 2
    assert "Did you mean 'channels'" in capsys.readouterr().err
    assert _train(tmp_path / "c", "--cfg-options", "batch_size='many'") == 2
    assert "batch_size" in capsys.readouterr().err
    assert main(["train", "cubb"]) == 2
    assert "Did you mean 'cub'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_recipes_hold_the_papers_values():
    from cncnn_cli.config.resolve import resolve_config

    for name, resize, hidden in (("cub", 600, 512), ("cars", 448, 256), ("aircraft", 512, 256)):
        cfg = resolve_config(name)
        assert cfg.preprocess["crop"] == 448 and cfg.preprocess["resize"] == resize
        assert cfg.model["backbone"] == {"type": "resnet50", "pretrained": "IMAGENET1K_V1"}
        assert cfg.model["fusion"]["type"] == "convlstm" and cfg.model["attention"]["type"] == "spatial_channel"
        assert cfg.model["head"]["hidden"] == hidden
        optimizer = cfg.optim_wrapper["optimizer"]
        assert optimizer == {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
        assert cfg.optim_wrapper["paramwise_cfg"]["custom_keys"]["backbone"]["lr_mult"] == 0.01
        assert cfg.train_cfg["max_epochs"] == 300 and cfg.batch_size == 16
        assert cfg.param_scheduler[0]["type"] == "CosineAnnealingLR" and cfg.param_scheduler[0]["T_max"] == 300


def test_lr_groups_follow_the_recipe_and_scale_with_the_batch(tmp_path, capsys):
    constant = ["--cfg-options", "param_scheduler=[]"]  # no warmup or cosine: the rates as set
    assert _train(tmp_path / "run", *DEMO, *constant, "--epochs", "1", "--lr", "0.2", "--no-scale-lr") == 0
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert history[0]["lr"] == pytest.approx(0.2)
    assert history[0]["backbone_lr"] == pytest.approx(0.2)  # demo: backbone at the full rate
    assert "kept as given (--no-scale-lr)" in capsys.readouterr().err
    # batch 8 against the demo recipe's 32: every rate × 0.25, and the log says so with the numbers
    assert _train(tmp_path / "scaled", *DEMO, *constant, "--epochs", "1", "--lr", "0.2") == 0
    metrics = json.loads((tmp_path / "scaled" / "metrics.json").read_text())
    assert metrics["history"][0]["lr"] == pytest.approx(0.05)
    assert metrics["batch"] == {"per_device": 8, "processes": 1, "accumulate": 1, "recipe": 32, "scale_lr": True,
                                "effective": 8, "lr_scale": 0.25}
    assert "effective batch 8" in capsys.readouterr().err.replace("\n", " ")
    log = next((tmp_path / "scaled").glob("*/*.log")).read_text()
    assert "scaled by 0.25 (lr 0.2 → 0.05" in log


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.parametrize("interrupt", ["crash", "signal"])
def test_interrupted_and_resumed_equals_straight(tmp_path, capsys, interrupt):
    args = [*DEMO, "--epochs", "3", "--seed", "3"]
    assert _train(tmp_path / "straight", *args) == 0
    hook = "{'type': 'InterruptAt', 'epoch': 1, 'iteration': 2, 'mode': '%s'}" % interrupt
    code = _train(tmp_path / "resumed", *args, "--plugin", str(HELPERS / "interrupt_hook.py"),
                  "--cfg-options", f"custom_hooks=[{hook}]")
    assert code == 130 if interrupt == "signal" else code != 0
    if interrupt == "signal":
        assert "--resume" in capsys.readouterr().err
        read_checkpoint(tmp_path / "resumed" / "last.safetensors")
    assert _train(tmp_path / "resumed", *args, "--resume") == 0
    straight = _weights(tmp_path / "straight" / "last.safetensors")
    resumed = _weights(tmp_path / "resumed" / "last.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6, msg=key)
    history = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_resume_refuses_a_different_epoch_count_and_a_fresh_run_refuses_an_existing_one(tmp_path, capsys):
    assert _train(tmp_path / "run", *DEMO, "--epochs", "1") == 0
    assert _train(tmp_path / "run", *DEMO, "--epochs", "1") == 2
    assert "--resume" in capsys.readouterr().err
    assert _train(tmp_path / "run", *DEMO, "--epochs", "4", "--resume") == 2
    assert "--epochs 1" in capsys.readouterr().err


def test_metrics_and_checkpoints_of_a_run(tmp_path, capsys):
    assert _train(tmp_path / "run", *DEMO, "--epochs", "2") == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert {"loss", "lr", "top1", "top5", "train_images_per_s"} <= metrics["history"][0].keys()
    assert metrics["best"]["selected_on"] == "test" and metrics["last"]["epoch"] == 2
    assert metrics["seed"] == 0 and "torch" in metrics["versions"]
    info, _ = read_checkpoint(run / "best.safetensors")
    assert info.classes[0] == "red crown" and info.preprocess["crop"] == 32
    assert (run / "config.py").is_file() and (run / "state.pth").is_file()
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(run / "state.pth")) == []
    capsys.readouterr()
    assert main(["eval", str(run / "best.safetensors"), "--json", "--workers", "0",
                 "--out", str(tmp_path / "report")]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"top1", "top5", "mean_class_accuracy", "num_images", "heads", "calibration"}
    assert set(document["heads"]) == {"cls3", "cls4", "cls5", "concat", "ensemble"}
    assert document["top1"] == pytest.approx(metrics["best"]["top1"])
    assert (tmp_path / "report" / "confusion.png").is_file() and (tmp_path / "report" / "per_class.csv").is_file()
    assert main(["eval", str(run / "best.safetensors"), "--json", "--workers", "0", "--tta", "flip"]) == 0
    flipped = json.loads(capsys.readouterr().out)
    assert flipped["num_images"] == document["num_images"] and 0 <= flipped["top1"] <= 100
    assert main(["eval", str(run / "best.safetensors"), "--tta", "rotate"]) == 2


@pytest.mark.parametrize("layout", ["cub", "cars", "cars_annos", "aircraft", "imagefolder"])
def test_one_epoch_trains_and_evaluates_on_each_dataset_layout(tmp_path, layout, capsys):
    maker = getattr(fixtures, f"make_{layout}")
    root = maker(tmp_path / "data")
    recipe = {"cars_annos": "cars", "imagefolder": "cub"}.get(layout, layout)
    dataset = ["--dataset", "imagefolder"] if layout == "imagefolder" else []
    assert _train(tmp_path / "run", "--epochs", "1", "--batch-size", "2", "--data-root", str(root), *dataset,
                  recipe=recipe) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run" / "last.safetensors"), "--json", "--workers", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["num_images"] > 0


def test_the_work_dir_holds_one_config_the_validated_one(tmp_path):
    """mmengine's Runner dumps its own copy named after the recipe; a recipe named config.py would replace ours."""
    recipe = tmp_path / "config.py"
    recipe.write_text("_base_ = ['" + str(Path(__file__).parents[2] / "recipes" / "demo.py") + "']\n")
    assert _train(tmp_path / "run", *DEMO, "--epochs", "1", recipe=str(recipe)) == 0
    assert sorted(p.name for p in (tmp_path / "run").glob("*.py")) == ["config.py"]
    saved = (tmp_path / "run" / "config.py").read_text()
    assert "compile = False" in saved and "sync_bn = False" in saved  # not the Runner's copy (None)


def test_gpu_decode_trains_exactly_as_the_worker_decoding(tmp_path, capsys):
    """Same seed, same crops and flips, same pixels (on CPU): the same losses and weights, bit for bit.

    The fixture's training images include a grayscale JPEG (decoded on the device) and a CMYK
    one (decoded in the worker), and Aircraft crops its banner on either path.
    """
    root = fixtures.make_aircraft(tmp_path / "data", train_per_class=4)
    common = ("--epochs", "2", "--batch-size", "4", "--data-root", str(root), "--val-fraction", "0.25")
    assert _train(tmp_path / "cpu", *common, recipe="aircraft") == 0
    capsys.readouterr()
    assert _train(tmp_path / "gpu", *common, "--gpu-decode", "--workers", "1", recipe="aircraft") == 0
    assert "gpu_decode on the CPU decodes in the training process" in capsys.readouterr().err
    runs = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("cpu", "gpu")]
    assert runs[1]["gpu_decode"] is True and runs[0]["gpu_decode"] is False
    assert [row["loss"] for row in runs[0]["history"]] == [row["loss"] for row in runs[1]["history"]]
    assert runs[0]["test_at_best_val"] == runs[1]["test_at_best_val"]
    weights = [_weights(tmp_path / name / "last.safetensors") for name in ("cpu", "gpu")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_missing_annotation_file_stops_before_training(tmp_path, capsys):
    root = fixtures.make_cub(tmp_path / "data")
    next(root.rglob("train_test_split.txt")).unlink()
    assert _train(tmp_path / "run", "--epochs", "1", "--data-root", str(root), recipe="cub") == 2
    err = capsys.readouterr().err
    assert "train_test_split.txt" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "state.pth").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cncnn_cli", *args]


def test_ctrl_c_in_a_subprocess_saves_a_resumable_run(tmp_path):
    work = tmp_path / "run"
    process = subprocess.Popen(_cli("train", "demo", "--work-dir", str(work), *TINY, *DEMO, "--epochs", "200"),
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = []
    deadline = time.time() + 120
    for line in process.stderr:
        lines.append(line)
        if "iter 2/" in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    err = "".join(lines) + rest
    assert process.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    read_checkpoint(work / "last.safetensors")
    assert (work / "state.pth").is_file()


def test_one_run_per_work_dir_and_a_killed_run_does_not_block(tmp_path, capsys):
    from cncnn_cli.engine.lock import LOCK_FILE

    work = tmp_path / "run"
    hook = "custom_hooks=[{'type': 'SleepBeforeTrain', 'seconds': 300}]"
    first = subprocess.Popen(_cli("train", "demo", "--work-dir", str(work), *TINY, *DEMO, "--epochs", "1",
                                  "--plugin", str(HELPERS / "protocol_plugins.py"), "--cfg-options", hook),
                             stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while f"pid {first.pid}" not in ((work / LOCK_FILE).read_text() if (work / LOCK_FILE).exists() else ""):
            assert time.time() < deadline and first.poll() is None, "the first run never took the lock"
            time.sleep(0.2)
        assert _train(work, *DEMO, "--epochs", "1") == 2
        err = capsys.readouterr().err.strip()
        assert f"pid {first.pid}" in err and "train demo --work-dir" in err and len(err.splitlines()) == 1
    finally:
        first.kill()  # SIGKILL: the kernel drops its lock
        first.wait()
    assert _train(work, *DEMO, "--epochs", "1") == 0
    assert (work / "best.safetensors").is_file()


def test_two_process_gloo_run_finishes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cncnn_cli",
         "train", "demo", "--work-dir", str(tmp_path / "ddp"), "--launcher", "pytorch", "--device", "cpu",
         *TINY, *DEMO, "--epochs", "1", "--batch-size", "4", "--effective-batch", "16", "--val-fraction", "0.25"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["history"][0]["top1"] >= 0
    assert (metrics["batch"]["processes"], metrics["batch"]["accumulate"], metrics["batch"]["effective"]) == (2, 2, 16)
    assert metrics["best"]["num_images"] == 10 and metrics["test_at_best_val"]["num_images"] == 20  # gathered
    read_checkpoint(tmp_path / "ddp" / "best.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # results gathered in memory: no .dist_test/


def test_two_process_run_with_a_batch_left_with_one_readable_image(tmp_path):
    """Rank 1's first batch loses all but one image: every rank keeps its batch size (the unreadable
    images are replaced and counted), so neither BatchNorm nor the other rank sees a difference."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cncnn_cli",
         "train", "demo", "--work-dir", str(tmp_path / "ddp"), "--launcher", "pytorch", "--device", "cpu",
         "--plugin", str(HELPERS / "protocol_plugins.py"), "--dataset", "rank1_unreadable_demo", *TINY, *DEMO,
         "--epochs", "1", "--batch-size", "4"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 3 and metrics["history"][0]["skipped_images"] == 3  # both ranks counted


def test_amp_trains_on_cpu_with_bf16(tmp_path):
    assert _train(tmp_path / "amp", *DEMO, "--epochs", "1", "--amp") == 0
    metrics = json.loads((tmp_path / "amp" / "metrics.json").read_text())
    assert metrics["history"][0]["loss"] > 0


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    assert _train(tmp_path / "run", *DEMO, "--epochs", "3", "--lr", "1e30") == 1
    err = capsys.readouterr().err
    assert "epoch" in err and "iteration" in err and "Traceback" not in err
    metrics_file = tmp_path / "run" / "metrics.json"
    if metrics_file.exists():  # the loss survived epoch 1: its checkpoint must still load
        read_checkpoint(tmp_path / "run" / "last.safetensors")


def test_curves_from_a_real_short_run(tmp_path):
    assert _train(tmp_path / "run", *DEMO, "--epochs", "2") == 0
    assert main(["visualize", "--curves", str(tmp_path / "run")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "run" / "curves.png") as image:
        assert image.width >= 800


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch, cncnn_checkpoint):
    import errno

    import cncnn_cli.weights.checkpoint as checkpoint
    from cncnn_cli.errors import CncnnError

    info, weights = read_checkpoint(cncnn_checkpoint)
    target = tmp_path / "last.safetensors"
    checkpoint.save_checkpoint(target, weights, info)
    before = target.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(CncnnError) as failure:
        checkpoint.save_checkpoint(target, weights, info)
    assert failure.value.exit_code == 1 and "intact" in str(failure.value)
    assert target.read_bytes() == before
    assert target.stat().st_mode & 0o044  # readable by others, like any file the user writes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_truncated_jpeg_is_skipped_with_a_warning_and_counted(tmp_path):
    root = fixtures.make_imagefolder(tmp_path / "data")
    broken = sorted((root / "train").rglob("*.jpg"))[-1]
    fixtures.truncate(broken)
    with pytest.warns(UserWarning, match=broken.name):
        assert _train(tmp_path / "run", "--epochs", "1", "--batch-size", "2", "--data-root", str(root),
                      "--dataset", "imagefolder", recipe="cub") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_images"] >= 1 and metrics["history"][0]["skipped_images"] >= 1
