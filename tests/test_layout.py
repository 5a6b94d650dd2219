"""How the code is packaged: one importable home (`pixelserve.*`), no sys.path edits, models that import alike."""
from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Top-level names that exist only as folders of this repository: importing them works by accident of sys.path.
# The folder list lives in pyproject.toml ([tool.setuptools.package-dir]) and nowhere else.
with open(REPO_ROOT / "pyproject.toml", "rb") as _handle:
    FOLDERS = tomllib.load(_handle)["tool"]["setuptools"]["package-dir"]
FOLDER_NAMES = set(FOLDERS.values())
SYS_PATH_EDIT = re.compile(r"sys\.path\s*(\[[^\]]*\]\s*)?(=|\+=)|sys\.path\.(insert|append|extend|remove)\(")


def _tracked(pattern: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", pattern], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [REPO_ROOT / line for line in listed.stdout.splitlines()]


def _pyproject() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


MODEL_FILES = [p for folder in ("model_repository", "build", "perf", "tests") for p in _tracked(f"{folder}/**/model.py")]


def test_every_model_py_is_found():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in MODEL_FILES}
    assert {"model_repository/preprocess/1/model.py", "model_repository/classifier/1/model.py",
            "perf/peer_models/preprocess_torch/1/model.py", "tests/gpu_repository/gpu_consumer/1/model.py"} <= names


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_model_py_reaches_the_project_only_as_an_installed_package(path):
    """No bootstrap lines: the stub's interpreter finds `pixelserve` (installed in the container; triton_local's
    stub environment locally), so a model imports it like any package, and nothing else of this repository."""
    source = path.read_text(encoding="utf-8")
    assert not SYS_PATH_EDIT.search(source), "model.py edits sys.path"
    assert "PIXELSERVE_PYTHONPATH" not in source and "PYTHONPATH" not in source
    folders = {name.split(".")[0] for name in _imported_modules(path)} & FOLDER_NAMES
    assert not folders, f"imports repository folders {folders}; import pixelserve.<package> instead"


def test_no_python_file_edits_sys_path():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in _tracked("*.py") if SYS_PATH_EDIT.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_no_python_file_imports_a_repository_folder_by_its_folder_name():
    offenders = {}
    for path in _tracked("*.py"):
        folders = {name.split(".")[0] for name in _imported_modules(path)} & FOLDER_NAMES
        if folders:
            offenders[str(path.relative_to(REPO_ROOT))] = sorted(folders)
    assert offenders == {}


def test_pyproject_installs_only_pixelserve_packages_mapped_onto_the_design_folders():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert all(package.startswith("pixelserve.") for package in setuptools["packages"]), setuptools["packages"]
    assert set(setuptools["package-dir"]) == set(setuptools["packages"])
    assert set(setuptools["package-dir"].values()) == FOLDER_NAMES
    for folder in setuptools["package-dir"].values():
        assert (REPO_ROOT / folder).is_dir()


def test_entry_points_name_importable_functions():
    import importlib

    for name, target in _pyproject()["project"]["scripts"].items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_each_subpackage_is_named_after_its_folder():
    """A grep for an import finds the folder: pixelserve.<folder> for every folder, and pyproject lists each once."""
    assert FOLDERS and all(name == f"pixelserve.{folder}" for name, folder in FOLDERS.items()), FOLDERS
    assert sorted(_pyproject()["tool"]["setuptools"]["packages"]) == sorted(FOLDERS)
    for folder in FOLDER_NAMES:
        assert (REPO_ROOT / folder).is_dir(), folder
