"""mypy checks the TensorRT build scripts against the TensorRT Python API stubs (tensorrt-stubs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TYPECHECK = REPO / "build" / "typecheck.py"

MISUSE = '''"""Deliberate misuse of the TensorRT API."""
import tensorrt as trt


def misuse(engine: trt.ICudaEngine, logger: trt.ILogger) -> int:
    """Each statement below is wrong in a way only the stubs can tell."""
    trt.Builder(logger).create_network("explicit")
    engine.get_tensor_shape(0)
    return engine.num_io_tensor
'''


def _typecheck(*files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TYPECHECK), *files], capture_output=True, text=True, timeout=900, check=False
    )


def test_build_scripts_pass_mypy_strict_with_tensorrt_stubs() -> None:
    result = _typecheck()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tensorrt-stubs" in result.stdout
    assert "Success: no issues found" in result.stdout


def test_stubs_are_in_effect_and_catch_api_misuse(tmp_path: Path) -> None:
    # Without usable stubs `tensorrt` would be Any and every line below would pass silently.
    bad = tmp_path / "misuse.py"
    bad.write_text(MISUSE, encoding="utf-8")
    result = _typecheck(str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Argument 1 to "create_network" of "Builder" has incompatible type "str"' in result.stdout
    assert 'Argument 1 to "get_tensor_shape" of "ICudaEngine" has incompatible type "int"' in result.stdout
    assert '"ICudaEngine" has no attribute "num_io_tensor"' in result.stdout
