"""What a non-editable install gets: every module in the wheel under its installed name, an sdist
that rebuilds the same wheel, and ``cncnn --version``."""
from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from cncnn_cli import __version__
from cncnn_cli.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
#: Source folder → the name it is installed under.
INSTALLED_AS = {"cncnn_cli": "cncnn_cli", "plugins": "cncnn_plugins", "recipes": "cncnn_recipes"}


def _sources() -> set[str]:
    """Every .py file of the three source folders, by the path it must have in site-packages."""
    return {f"{name}/{path.relative_to(ROOT / folder).as_posix()}"
            for folder, name in INSTALLED_AS.items() for path in (ROOT / folder).rglob("*.py")}


def _build(kind: str, source: Path, out: Path) -> Path:
    """Build a wheel or an sdist of ``source`` with setuptools' PEP 517 backend, as pip does."""
    hook = "build_wheel" if kind == "wheel" else "build_sdist"
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.{hook}({str(out)!r})"],
                   cwd=source, check=True, capture_output=True, timeout=300)
    return next(out.glob("*.whl" if kind == "wheel" else "*.tar.gz"))


def _modules(wheel: Path) -> set[str]:
    return {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}


def test_the_sdist_and_its_wheel_hold_every_module(tmp_path):
    """sdist from the checkout, wheel from the unpacked sdist (as pip installs from PyPI; a clean
    tree, so no stale build/ folder can hide a missing module)."""
    sdist = _build("sdist", ROOT, tmp_path / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    unpacked = next((tmp_path / "unpacked").iterdir())
    assert {"pyproject.toml", "setup.py", "README.md"} <= {p.name for p in unpacked.iterdir()}
    modules = _modules(_build("wheel", unpacked, tmp_path / "wheel"))
    assert _sources() - modules == set(), "modules missing from the wheel"
    assert modules == _sources()  # nothing else, and no bare plugins/ or recipes/ package
    assert "cncnn_cli/engine/runner.py" in modules and "cncnn_recipes/_base_/models/cncnn_r50.py" in modules


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cncnn {__version__}"

