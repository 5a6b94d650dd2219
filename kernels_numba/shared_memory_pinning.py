"""Page-locking the shared-memory mappings that host images lie in, so that the GPU copies them by DMA in place.

Triton's Python backend hands a model its host inputs as numpy views into the stub's shared-memory region
(a /dev/shm file mapped into the model's process). Copied from there as ordinary pageable memory, each image
costs a CPU copy into a page-locked buffer before its DMA (0.6 ms of CPU for a 1080p frame). Registered once
with CUDA (cuMemHostRegister), the region is page-locked where it lies, and every later image in it goes to the
GPU by DMA alone.

Only the Python backend's own regions are registered (/dev/shm files named with its default region prefix): the
stub never unmaps them while it lives (it keeps every mapping when its region grows), so an address once found
in one stays in it. Other host memory (a numpy array on the heap, a region someone may unmap) is left alone and
staged as before.
"""
from __future__ import annotations

from typing import Any

# Triton's Python backend: --backend-config=python,shm-region-prefix-name=... (default below).
PYTHON_BACKEND_REGION_PREFIX = "/dev/shm/triton_python_backend_shm_region"


def mapping_of(address: int, maps: str) -> tuple[int, int, str] | None:
    """The (start, end, path) of the mapping in ``maps`` (/proc/self/maps text) that holds ``address``."""
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        start_text, _, end_text = fields[0].partition("-")
        start, end = int(start_text, 16), int(end_text, 16)
        if start <= address < end:
            return start, end, fields[5] if len(fields) == 6 else ""
    return None


class SharedMemoryPinning:
    """Registers with CUDA each Python-backend shared-memory mapping of this process that an image lies in, once;
    says whether an address range is page-locked so."""

    def __init__(self, driver: Any, prefix: str = PYTHON_BACKEND_REGION_PREFIX) -> None:
        self._driver = driver  # cuda.bindings.driver
        self._prefix = prefix
        self._pinned: list[tuple[int, int]] = []
        self._refused: set[tuple[int, int]] = set()

    def is_pinned(self, address: int, size: int) -> bool:
        """Whether [address, address + size) lies in a registered mapping, registering its mapping first if it
        is a Python-backend region not seen before."""
        for start, end in self._pinned:
            if start <= address and address + size <= end:
                return True
        # Reading /proc/self/maps costs 0.7 ms: a mapping once refused is not looked up again. (Were it unmapped
        # and its addresses reused by a region, images there would only be staged, never copied wrongly.)
        if any(start <= address < end for start, end in self._refused):
            return False
        with open("/proc/self/maps") as maps:
            mapping = mapping_of(address, maps.read())
        if mapping is None:
            return False
        start, end, path = mapping
        if address + size > end:
            return False
        if not path.startswith(self._prefix) or not self._register(start, end - start):
            self._refused.add((start, end))
            return False
        self._pinned.append((start, end))
        return True

    def _register(self, start: int, size: int) -> bool:
        result = self._driver.cuMemHostRegister(start, size, 0)
        error = result[0] if isinstance(result, tuple) else result
        return int(error) == 0
