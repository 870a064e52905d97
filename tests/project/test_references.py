"""Every repository path that a comment, a docstring or a doc names exists, and nothing names a file
outside the repository.

A path counts when its first component is one of the repository's top-level folders (``docs/model.md``,
``cncnn_cli/engine/hooks.py``, ``tests/helpers/``): output names such as ``work_dirs/demo/best.safetensors``
are not checked. Markdown link targets are resolved from the page's own folder, other mentions from the
repository root. Dotted names under the installed packages (``cncnn_cli.engine.sampling.SeededAugmentation``)
must name a module that exists and, after it, a name that module defines. CHANGELOG.md may name files that
a release removed, so only the rule on outside files applies to it.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Top-level folders whose paths are checked (those a clone has).
FOLDERS = ("cncnn_cli", "plugins", "recipes", "tests", "tools", "docs", ".ci")
#: Files the repository's tools write when they run, named in the docs as outputs; each must be named in
#: the tool that writes it (checked below), so the list cannot hide a stale reference.
GENERATED = {"docs/benchmarks/gpu.json": "tools/gpu_check.sh", "docs/benchmarks/gpu_checks.json": "tools/gpu_check.sh",
             "docs/benchmarks/gpu_check.log": "tools/gpu_check.sh"}
#: Spec files that live outside the repository; written in pieces so that this file does not name them.
OUTSIDE = ("../" + "shared", "MODEL" + ".md", "DESIGN" + ".md", "MMENGINE" + "-NOTES")
SKIPPED_PARTS = {"__pycache__", ".git", ".pytest_cache", "work_dirs", "build", "dist"}

#: Where the installed package names live in the repository (setup.py's package-dir).
PACKAGES = {"cncnn_cli": ROOT / "cncnn_cli", "cncnn_plugins": ROOT / "plugins", "cncnn_recipes": ROOT / "recipes"}
DOTTED = re.compile(r"(?<![\w.])((?:%s)(?:\.\w+)+)" % "|".join(PACKAGES))
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*\w)" % "|".join(re.escape(f) for f in FOLDERS))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _files() -> list[Path]:
    """The repository's own text files: the top-level docs and configs, and every file of its folders."""
    found = [ROOT / name for name in ("README.md", "CHANGELOG.md", "setup.py", "pyproject.toml")]
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if path.is_file() and not parts & SKIPPED_PARTS and not any(p.endswith(".egg-info") for p in parts):
                found.append(path)
    return [p for p in found if p.is_file() and p.suffix not in (".png", ".safetensors", ".pth", ".json")]


def _python_prose(source: str) -> str:
    """The comments and docstrings of a Python file: its prose, not its string values."""
    chunks = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            chunks.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(chunks)


def _shell_comments(source: str) -> str:
    return "\n".join(line.split("#", 1)[1] for line in source.splitlines() if "#" in line)


def _prose(path: Path) -> str:
    """What of ``path`` is prose: a whole Markdown page, a Python file's comments and docstrings, other
    files' ``#`` comments (shell scripts, CI, TOML)."""
    text = path.read_text(encoding="utf-8")
    return text if path.suffix == ".md" else _python_prose(text) if path.suffix == ".py" else _shell_comments(text)


def _named_paths(path: Path) -> set[tuple[Path, str]]:
    """(base folder, path as written) for every repository path named in ``path``'s prose."""
    prose = _prose(path)
    named = {(ROOT, match) for match in PATH.findall(prose) if ".." not in match}
    if path.suffix == ".md":
        named |= {(path.parent, target.split("#")[0]) for target in LINK.findall(prose)
                  if not re.match(r"[a-z]+:|#", target)}
    return {(base, target) for base, target in named if target}


def _missing(path: Path) -> list[str]:
    missing = []
    for base, target in sorted(_named_paths(path)):
        resolved = (base / target).resolve()
        if resolved.exists():
            continue
        relative = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else target
        if relative in GENERATED:
            continue
        missing.append(target)
    return missing


def _top_level_names(module: Path) -> set[str]:
    """What ``module`` defines or imports at its top level, and the names its ``__all__`` lists (PEP 562)."""
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
            if any(isinstance(target, ast.Name) and target.id == "__all__" for target in targets):
                names.update(ast.literal_eval(node.value))
    return names


def _module_name_exists(dotted: str) -> bool:
    """A dotted name under one of :data:`PACKAGES`: its packages and module exist, and so does the name after them."""
    head, *parts = dotted.split(".")
    folder = PACKAGES[head]
    while parts and (folder / parts[0]).is_dir():
        folder = folder / parts.pop(0)
    module = folder / "__init__.py"
    if parts and (folder / f"{parts[0]}.py").is_file():
        module = folder / f"{parts.pop(0)}.py"
    return module.is_file() and (not parts or parts[0] in _top_level_names(module))


def test_every_named_module_exists():
    """Dotted names such as ``cncnn_cli.engine.sampling.SeededAugmentation`` in comments, docstrings and docs."""
    missing = [f"{path.relative_to(ROOT)}: {name}" for path in _files() if path.name != "CHANGELOG.md"
               for name in sorted(set(DOTTED.findall(_prose(path)))) if not _module_name_exists(name)]
    assert missing == []


@pytest.mark.parametrize("path", [p for p in _files() if p.name != "CHANGELOG.md"],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_repo_path_exists(path):
    assert _missing(path) == [], f"{path.relative_to(ROOT)} names paths that do not exist"


def test_no_file_names_a_path_outside_the_repository():
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in _files()
                 for name in OUTSIDE if name in path.read_text(encoding="utf-8")]
    assert offenders == []


def test_generated_paths_are_written_by_their_tool():
    for generated, tool in GENERATED.items():
        assert generated in (ROOT / tool).read_text(encoding="utf-8"), f"{tool} no longer writes {generated}"


def test_the_scan_sees_comments_docstrings_and_links(tmp_path):
    """The scanner finds paths in each place it looks, and ignores string values and output names."""
    module = tmp_path / "mod.py"
    module.write_text('"""See docs/nowhere.md."""\n# and tests/gone.py\nOUT = "docs/not_prose.md"\n')
    page = tmp_path / "page.md"
    page.write_text("[a](missing.md) `tools/absent.sh` work_dirs/demo/best.safetensors docs/.../x.md\n")
    assert _missing(module) == ["docs/nowhere.md", "tests/gone.py"]
    assert sorted(_missing(page)) == ["missing.md", "tools/absent.sh"]
    assert _module_name_exists("cncnn_cli.engine.sampling.SeededAugmentation")
    assert _module_name_exists("cncnn_cli.models.build_model")  # listed in __all__, loaded on first use
    assert not _module_name_exists("cncnn_cli.engine.data.SeededAugmentation")
    assert not _module_name_exists("cncnn_cli.engine.sampling.NoSuchName")


def test_readme_is_a_front_page_that_links_every_docs_page():
    """The README stays short (issue 24: at most 250 lines) and every page under docs/ is reachable from it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    linked = {target for _, target in _named_paths(ROOT / "README.md")}
    assert sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")
                  if p.relative_to(ROOT).as_posix() not in linked) == []
