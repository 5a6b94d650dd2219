"""Type-check the TensorRT build scripts with mypy against the TensorRT Python API stubs.

Usage: python build/typecheck.py [files...]   (default: the build scripts listed below)

The stubs come from the installed ``tensorrt-stubs`` package. Its files cannot be used as
shipped: they sit next to no ``py.typed`` marker (so mypy ignores them) and contain a few
generator slips that are Python syntax errors. A patched copy is written to a temporary
directory and put on MYPYPATH; every patch must apply, so a new stub release is noticed.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

BUILD_DIR = Path(__file__).resolve().parent
DEFAULT_TARGETS = ("build_engine.py", "quantize_int8.py", "typecheck.py")
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


def run_mypy(files: list[str]) -> int:
    """Run mypy on `files` with build/mypy.ini and the patched stubs; returns mypy's exit status."""
    with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
        version = patched_stubs(Path(tmp))
        print(f"typecheck: tensorrt-stubs {version} (patched copy on MYPYPATH)", flush=True)
        env = {**os.environ, "MYPYPATH": tmp}
        command = [sys.executable, "-m", "mypy", "--config-file", str(BUILD_DIR / "mypy.ini"), *files]
        return subprocess.run(command, env=env, cwd=BUILD_DIR, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Type-check `argv` (default: the TensorRT build scripts); returns the exit status."""
    files = list(sys.argv[1:] if argv is None else argv) or [str(BUILD_DIR / f) for f in DEFAULT_TARGETS]
    try:
        return run_mypy(files)
    except StubError as exc:
        print(f"typecheck: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
