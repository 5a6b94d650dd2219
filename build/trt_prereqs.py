"""What a TensorRT build needs from the host (TensorRT, Polygraphy, a CUDA GPU), and what is missing."""

from __future__ import annotations

import ctypes
import importlib
from functools import lru_cache

CONTAINER_HINT = "build inside nvcr.io/nvidia/tensorrt:<release>-py3 of the Triton release that serves the plan"


def tensorrt_problem() -> str | None:
    """Why TensorRT's Python runtime is unusable here, or None when it imports."""
    try:
        module = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or OSError when libnvinfer is absent
        return f"TensorRT is not installed: `import tensorrt` failed ({type(exc).__name__}: {exc})"
    # tensorrt-stubs alone leaves a stub-only `tensorrt` namespace package: importable, empty.
    if not hasattr(module, "Builder"):
        where = ", ".join(getattr(module, "__path__", [])) or "?"
        return f"TensorRT is not installed: only type stubs (tensorrt-stubs) were found at {where}"
    return None


def polygraphy_problem() -> str | None:
    """Why Polygraphy is unusable here, or None."""
    try:
        importlib.import_module("polygraphy.backend.trt")
    except Exception as exc:
        return f"Polygraphy is not installed: {exc}"
    return None


@lru_cache(maxsize=1)
def _libcuda() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def gpu_problem() -> str | None:
    """Why no CUDA GPU is usable here (no driver, init failure, no device), or None."""
    lib = _libcuda()
    if lib is None:
        return "no CUDA GPU: the NVIDIA driver library libcuda.so.1 is not present"
    status = lib.cuInit(0)
    if status != 0:
        return f"no CUDA GPU: cuInit failed with CUDA error {status}"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no CUDA GPU: the driver sees no device"
    return None


def compute_capability(device: int = 0) -> str:
    """The compute capability of `device` as digits (e.g. "90" for an H100); call after gpu_problem() is None."""
    lib = _libcuda()
    if lib is None:
        raise RuntimeError("libcuda.so.1 is not present")
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    # CUdevice_attribute 75/76: COMPUTE_CAPABILITY_MAJOR/MINOR.
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
    return f"{major.value}{minor.value}"


def gpu_name(device: int = 0) -> str:
    """The marketing name of `device` (e.g. "NVIDIA H100 80GB HBM3"); call after gpu_problem() is None."""
    lib = _libcuda()
    if lib is None:
        raise RuntimeError("libcuda.so.1 is not present")
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, len(name), device)
    return name.value.decode(errors="replace")


def missing_prerequisites() -> list[str]:
    """Everything a TensorRT build lacks on this host; empty when it can build."""
    checks = (tensorrt_problem(), polygraphy_problem(), gpu_problem())
    return [problem for problem in checks if problem is not None]
