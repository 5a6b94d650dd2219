"""Type-check the shipped packages and the TensorRT build scripts with mypy (strict), against the TensorRT stubs.

Usage: python -m pixelserve.build.typecheck [files...]   (default: DEFAULT_TARGETS below)

mypy cannot follow the import hook of setuptools' editable install, which maps ``pixelserve.<name>``
onto the design folders (``[tool.setuptools.package-dir]`` of pyproject.toml). So the package is laid
out as an install would lay it out (links to those folders) in a temporary directory on MYPYPATH.

The stubs come from the installed ``tensorrt-stubs`` package. Its files cannot be used as
shipped: they sit next to no ``py.typed`` marker (so mypy ignores them) and contain a few
generator slips that are Python syntax errors. A patched copy is written to a temporary
directory and put on MYPYPATH; every patch must apply, so a new stub release is noticed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BUILD_DIR = Path(__file__).resolve().parent
REPO_ROOT = BUILD_DIR.parent
DEFAULT_TARGETS = (
    "-p", "pixelserve.kernels_numba",
    "-p", "pixelserve.model_runtime",
    "-p", "pixelserve.client",
    "-m", "pixelserve.build.build_engine",
    "-m", "pixelserve.build.quantize_int8",
    "-m", "pixelserve.build.typecheck",
)
STUB_FILES = ("tensorrt/__init__.pyi", "tensorrt_bindings/__init__.pyi", "tensorrt_bindings/tensorrt.pyi")

# (file, pattern, replacement, why)
PATCHES = (
    ("tensorrt_bindings/tensorrt.pyi", r"([(,] ?)in:", r"\1in_:",
     "parameters named `in` (a Python keyword) are a syntax error"),
    ("tensorrt_bindings/tensorrt.pyi", r"(power: Weights = None, channel_axis: int)\)", r"\1 = ...)",
     "add_scale_nd: a parameter without default after defaulted ones is a syntax error"),
    ("tensorrt_bindings/tensorrt.pyi", r"(?m)^bool: DataType.*$", "",
     "module-level `bool: DataType` shadows builtins.bool in every annotation of the module"),
)


class StubError(RuntimeError):
    """tensorrt-stubs is missing or no longer matches the patches."""


def patched_stubs(target: Path) -> str:
    """Copy the installed tensorrt-stubs into `target` with PATCHES applied; returns the stub version."""
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        raise StubError("tensorrt-stubs is not installed (pip install --no-deps -r requirements-typecheck.txt)") from None
    for name in STUB_FILES:
        source = Path(str(dist.locate_file(name)))
        text = source.read_text(encoding="utf-8")
        for file, pattern, replacement, why in PATCHES:
            if file != name:
                continue
            text, count = re.subn(pattern, replacement, text)
            if count == 0:
                raise StubError(f"tensorrt-stubs {dist.version}: patch for {why!r} no longer applies to {name}")
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return dist.version


def package_layout(target: Path) -> None:
    """``target/pixelserve/<name>``: a link to each folder that pyproject.toml maps ``pixelserve.<name>`` onto."""
    toml: Any = importlib.import_module("tomllib")  # Python >= 3.11, where this runs; mypy checks for 3.10
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        package_dirs: dict[str, str] = toml.load(handle)["tool"]["setuptools"]["package-dir"]
    for package, folder in package_dirs.items():
        link = target.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO_ROOT / folder, target_is_directory=True)


def run_mypy(targets: list[str]) -> int:
    """Run mypy on `targets` (files, or -m/-p names) with build/mypy.ini and the patched stubs; returns its status."""
    with tempfile.TemporaryDirectory(prefix="typecheck-") as tmp:
        stubs, packages = Path(tmp) / "stubs", Path(tmp) / "packages"
        version = patched_stubs(stubs)
        package_layout(packages)
        print(f"typecheck: tensorrt-stubs {version} (patched copy on MYPYPATH)", flush=True)
        env = {**os.environ, "MYPYPATH": os.pathsep.join([str(stubs), str(packages)])}
        command = [sys.executable, "-m", "mypy", "--config-file", str(BUILD_DIR / "mypy.ini"), *targets]
        return subprocess.run(command, env=env, cwd=tmp, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Type-check `argv` (default: the shipped packages and the TensorRT build scripts); returns the exit status."""
    targets = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_mypy([str(Path(t).resolve()) for t in targets] or list(DEFAULT_TARGETS))
    except StubError as exc:
        print(f"typecheck: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
