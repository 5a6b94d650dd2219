"""How a model process's threads wait for the GPU: the CUDA primary context's scheduling flag.

CUDA's default ("auto") spins while a process has fewer CUDA contexts than the host has cores, which is every
Python-backend stub: each instance's thread keeps a core busy for as long as it waits for its batch's decode,
kernels and classifier. With eight instances on a 16-core host, those cores are the ones the other stubs, their
decoders' host threads and Triton's front end need. "block" makes the waiting thread sleep until the GPU is done
(at the cost of a wake-up); "yield" spins but yields its core to any other ready thread.

The flag is the device's primary context's, which torch, numba and nvImageCodec all share in the process; it is
set through the CUDA driver (``cuDevicePrimaryCtxSetFlags``) when the model loads, before any of them runs work.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Mapping

HOST_WAIT_PARAMETER = "gpu_host_wait"
# CUctx_flags' scheduling bits (cuda.h).
HOST_WAIT_FLAGS = {"auto": 0, "spin": 1, "yield": 2, "block": 4}
_SCHED_MASK = 7


def host_wait_parameter(parameters: Mapping[str, str]) -> str:
    """The ``gpu_host_wait`` setting (``auto`` when absent); ValueError naming the choices for any other text."""
    text = parameters.get(HOST_WAIT_PARAMETER, "auto").strip().lower()
    if text not in HOST_WAIT_FLAGS:
        raise ValueError(f"parameter {HOST_WAIT_PARAMETER}={text!r}: expected one of {', '.join(HOST_WAIT_FLAGS)}")
    return text


def _driver() -> ctypes.CDLL:
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    return ctypes.CDLL(name)


def _check(result: int, call: str) -> None:
    if result != 0:
        raise RuntimeError(f"{call} failed with CUresult {result}")


def set_host_wait(device_id: int, mode: str) -> tuple[int, bool]:
    """Set the scheduling flag of GPU ``device_id``'s primary context to ``mode`` (a HOST_WAIT_FLAGS key).

    Returns (the scheduling flag the driver now reports, whether the context was already active). Other flags of
    the context are kept. RuntimeError if the driver refuses."""
    driver = _driver()
    _check(driver.cuInit(0), "cuInit")
    device = ctypes.c_int()
    _check(driver.cuDeviceGet(ctypes.byref(device), device_id), "cuDeviceGet")
    flags, active = ctypes.c_uint(), ctypes.c_int()
    _check(driver.cuDevicePrimaryCtxGetState(device, ctypes.byref(flags), ctypes.byref(active)),
           "cuDevicePrimaryCtxGetState")
    was_active = bool(active.value)
    wanted = (flags.value & ~_SCHED_MASK) | HOST_WAIT_FLAGS[mode]
    set_flags = getattr(driver, "cuDevicePrimaryCtxSetFlags_v2", None) or driver.cuDevicePrimaryCtxSetFlags
    _check(set_flags(device, ctypes.c_uint(wanted)), "cuDevicePrimaryCtxSetFlags")
    _check(driver.cuDevicePrimaryCtxGetState(device, ctypes.byref(flags), ctypes.byref(active)),
           "cuDevicePrimaryCtxGetState")
    return flags.value & _SCHED_MASK, was_active
