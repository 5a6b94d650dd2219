"""Whether in-place DMA from a /dev/shm mapping gives the right bytes here.

Raw frames that reach a Python-backend model over system shared memory are staged: copied by the CPU into a
page-locked buffer, then DMA'd to the GPU. Registering the memory they lie in with CUDA (``cuMemHostRegister``)
would let the GPU read them in place. On the H100 host of docs/performance.md R24 a copy from such a registered
/dev/shm mapping gave wrong bytes with no error reported, so the product stages every host image. This check
tells, on any host, whether in-place copies are right: it fills a /dev/shm file with random bytes, registers
its mapping (shared or private, several flags, before or after the write), copies it to the GPU and compares.

    python -m pixelserve.perf.host_register_check [--megabytes 64]

Exit status 0: every variant copied the right bytes; 1: some did not (each printed); 2: no CUDA GPU here.
"""
from __future__ import annotations

import argparse
import mmap
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

OFFSET = 3 * 4096 + 512  # inside the mapping, not page-aligned, as a tensor inside a region is


@dataclass(frozen=True)
class Variant:
    """One way of copying from a mapping: MAP_PRIVATE or MAP_SHARED, registered or not (the control) with which
    cuMemHostRegister flags, written before or after, copied from the host pointer or from its device pointer."""

    name: str
    private: bool = False
    flags: int | None = 0  # None: not registered (pageable memory, the driver stages it)
    write_first: bool = True
    via_device_pointer: bool = False


VARIANTS = (
    Variant("control: shared, not registered", flags=None),
    Variant("shared, flags 0, written then registered"),
    Variant("shared, flags 0, registered then written", write_first=False),
    Variant("private, flags 0, written then registered", private=True),
    Variant("shared, PORTABLE", flags=1),
    Variant("shared, READ_ONLY", flags=8),
    Variant("shared, DEVICEMAP, copied from cuMemHostGetDevicePointer", flags=2, via_device_pointer=True),
)


def mapped_shm_file(size: int, private: bool) -> mmap.mmap:
    """A fresh /dev/shm file of ``size`` bytes, mapped read-write (the file itself is removed at once)."""
    path = f"/dev/shm/pixelserve_host_register_check_{uuid.uuid4().hex}"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE if private else mmap.MAP_SHARED)
    finally:
        os.close(fd)
        os.unlink(path)


def check_variant(variant: Variant, size: int, rng: np.random.Generator, driver: Any) -> str | None:
    """None if the copy from the mapping gave the bytes written, else what went wrong."""
    from numba import cuda

    region = mapped_shm_file(size, variant.private)
    host = np.frombuffer(region, np.uint8)
    base = host.ctypes.data
    data = rng.integers(0, 256, size // 2, dtype=np.uint8)
    if variant.write_first:
        host[OFFSET:OFFSET + data.size] = data
    if variant.flags is not None:
        (registered,) = driver.cuMemHostRegister(base, size, variant.flags)
        if int(registered) != 0:
            return f"cuMemHostRegister refused: {registered}"
    try:
        if not variant.write_first:
            host[OFFSET:OFFSET + data.size] = data
        device = cuda.device_array(data.size, np.uint8)
        stream = cuda.stream()
        handle = int((stream.handle.value if hasattr(stream.handle, "value") else stream.handle) or 0)
        target = device.device_ctypes_pointer.value
        if variant.via_device_pointer:
            status, mapped = driver.cuMemHostGetDevicePointer(base, 0)
            if int(status) != 0:
                return f"cuMemHostGetDevicePointer failed: {status}"
            (copied,) = driver.cuMemcpyDtoDAsync(target, int(mapped) + OFFSET, data.size, handle)
        else:
            (copied,) = driver.cuMemcpyHtoDAsync(target, base + OFFSET, data.size, handle)
        stream.synchronize()
        if int(copied) != 0:
            return f"the copy failed: {copied}"
        got = device.copy_to_host()
    finally:
        if variant.flags is not None:
            driver.cuMemHostUnregister(base)
    wrong = np.flatnonzero(got != data)
    if wrong.size == 0:
        return None
    first = int(wrong[0])
    zeros = int(np.count_nonzero(got == 0))
    return f"{wrong.size} of {data.size} bytes wrong, the first at {first}; {zeros} zero bytes received"


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant on GPU 0 and print whether each copied the right bytes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64, help="size of the /dev/shm mapping (default 64)")
    args = parser.parse_args(argv)
    try:
        from numba import config, cuda

        if config.ENABLE_CUDASIM or not cuda.is_available():
            raise RuntimeError("numba sees no CUDA GPU (or runs its simulator)")
        from cuda.bindings import driver

        cuda.current_context()
        (status,) = driver.cuInit(0)
        if int(status) != 0:
            raise RuntimeError(f"cuInit: {status}")
    except Exception as exc:  # no numba-cuda, no driver library, no device: all mean "not here"
        print(f"host_register_check: cannot run here: {exc}", file=sys.stderr)
        return 2
    name = cuda.get_current_device().name
    attribute = driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
    usable = driver.cuDeviceGetAttribute(attribute, driver.cuCtxGetDevice()[1])[1]
    print(f"# {name.decode() if isinstance(name, bytes) else name}, host pointer usable for registered memory {usable}")
    rng = np.random.default_rng()
    failures = 0
    for variant in VARIANTS:
        problem = check_variant(variant, args.megabytes << 20, rng, driver)
        failures += problem is not None
        print(f"{variant.name}: {problem or 'right bytes'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
