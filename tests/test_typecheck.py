"""mypy (strict) checks the shipped packages pixelserve.kernels_numba, pixelserve.model_runtime and pixelserve.client, and the
TensorRT build scripts against the TensorRT Python API stubs (tensorrt-stubs)."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TYPECHECK = REPO / "build" / "typecheck.py"
MYPY_INI = REPO / "build" / "mypy.ini"
CHECKED_PACKAGES = ("pixelserve.kernels_numba", "pixelserve.model_runtime", "pixelserve.client")

MISUSE = '''"""Deliberate misuse of the TensorRT API."""
import tensorrt as trt


def misuse(engine: trt.ICudaEngine, logger: trt.ILogger) -> int:
    """Each statement below is wrong in a way only the stubs can tell."""
    trt.Builder(logger).create_network("explicit")
    engine.get_tensor_shape(0)
    return engine.num_io_tensor
'''

KERNELS_MISUSE = '''"""Deliberate misuse of the preprocessing package."""
from pixelserve.kernels_numba import preprocess_cpu
from pixelserve.kernels_numba.pixel_math import bilinear_taps


def misuse() -> None:
    """Wrong argument types, for a plain function and for one under numba's @register_jitable."""
    preprocess_cpu([], "224x224")
    bilinear_taps(0, 0.0, 1.0, 0.0, "224")
'''


def _typecheck(*files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TYPECHECK), *files], capture_output=True, text=True, timeout=900, check=False
    )


def test_shipped_packages_and_build_scripts_pass_mypy_strict() -> None:
    result = _typecheck()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tensorrt-stubs" in result.stdout
    assert "Success: no issues found" in result.stdout


def test_shipped_packages_are_checked_without_exemptions() -> None:
    # The default run names each package, and no section of mypy.ini relaxes the check for our own code.
    from pixelserve.build.typecheck import DEFAULT_TARGETS

    targets = list(zip(DEFAULT_TARGETS[::2], DEFAULT_TARGETS[1::2]))
    for package in CHECKED_PACKAGES:
        assert ("-p", package) in targets
    config = configparser.ConfigParser()
    config.read(MYPY_INI, encoding="utf-8")
    own = [section for section in config.sections() if "pixelserve" in section]
    assert own == [], f"mypy.ini relaxes the check for {own}"


@pytest.mark.parametrize("source, errors", [
    # Without usable stubs `tensorrt` would be Any and every line would pass silently.
    (MISUSE, ['Argument 1 to "create_network" of "Builder" has incompatible type "str"',
              'Argument 1 to "get_tensor_shape" of "ICudaEngine" has incompatible type "int"',
              '"ICudaEngine" has no attribute "num_io_tensor"']),
    # The package resolves to its typed sources (not Any), and numba's decorators keep the signatures.
    (KERNELS_MISUSE, ['Argument 2 to "preprocess_cpu" has incompatible type "str"; expected "PreprocessSpec"',
                      'Argument 5 to "bilinear_taps" has incompatible type "str"; expected "int"']),
], ids=["tensorrt-stubs", "kernels"])
def test_api_misuse_is_caught(tmp_path: Path, source: str, errors: list[str]) -> None:
    bad = tmp_path / "misuse.py"
    bad.write_text(source, encoding="utf-8")
    result = _typecheck(str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    for error in errors:
        assert error in result.stdout
