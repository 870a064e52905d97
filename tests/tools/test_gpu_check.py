"""tools/gpu_check.py's CPU dry run: every part of the GPU check runs, so the script never rots."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"device", "torch", "variant", "precision", "batch", "compile", "impl", "train_images_per_s",
            "infer_images_per_s", "mfu", "peak_memory_gib"}


@pytest.mark.slow
def test_dry_run_passes_every_part_and_writes_rows_of_the_documented_shape(tmp_path):
    before = _figures()
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                            capture_output=True, text=True, timeout=7200, cwd=tmp_path)  # a hang guard only
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    rows = json.loads(out.read_text())
    assert {(r["variant"], r["precision"]) for r in rows} == {
        (v, p) for v in ("full", "official-formulation", "baseline") for p in ("fp32", "bf16")}
    assert all(set(r) == ROW_KEYS and r["train_images_per_s"] > 0 for r in rows)
    checks = json.loads((tmp_path / "gpu_checks.json").read_text())
    exact = checks["exactness"]["results"]
    assert exact and all(r["passed"] for r in exact)
    assert {r["precision"] for r in exact} == {"fp64", "fp32", "bf16", "fp16"}
    assert checks["syncs"]["syncs_per_train_iteration"] and checks["syncs"]["syncs_per_val_batch"]
    demo = checks["train_demo"]
    assert demo["amp"]["returncode"] == 0 and demo["amp_accumulate_2"]["batch"]["accumulate"] == 2
    assert demo["amp_resumed"]["returncode"] == 0 and demo["amp_resumed"]["epochs"] == demo["amp"]["epochs"]
    assert checks["torchrun"]["returncode"] == 0 and checks["torchrun"]["backend"] == "gloo"
    decode = checks["gpu_decode"]
    assert decode["max_abs_diff"] == 0 and decode["kept"] == decode["images"]  # on CPU: the same pixels
    assert decode["device_images_per_s"] > 0 and decode["train"]["returncode"] == 0
    assert checks["grid"] == {"rows": len(rows), "failed": [], "skipped": []}
    assert _figures() == before  # the dry run never touches the real figures


def test_the_grid_runs_the_goal_cells_first_and_compiled_ones_last():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "tools"))
    cells = gpu_check.grid_cells(gpu_check.FULL)
    assert cells[0] == ("full", True, 64, False, "conv")  # bf16 at batch 64, the throughput goal
    compiled = [cell[3] for cell in cells]
    assert compiled == sorted(compiled)  # every eager cell before any compiled one
    assert len(cells) == len(set(cells)) == 2 * 2 * 2 * (2 + 1 + 1)  # compile × batch × precision × (impls + 2)
    if not gpu_check.torch.cuda.is_available():
        assert gpu_check.main(["--budget-s", "1"]) == 2  # "no CUDA GPU here; use --dry-run"


def _figures() -> dict:
    folder = ROOT / "docs" / "benchmarks"
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*")} if folder.is_dir() else {}


def test_the_shell_wrapper_names_a_missing_wheel_folder(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no wheels in" in result.stderr
