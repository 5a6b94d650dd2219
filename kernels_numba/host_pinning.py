"""Page-lock the shared-memory mappings that host inputs already sit in, so they are copied to the GPU
directly (one DMA), not first into a pinned staging buffer.

The Python backend hands each request's input to the model as a view of its shared-memory region
(`/dev/shm/...`), mapped for the stub's lifetime. Registering that whole mapping once with
``cuMemHostRegister`` makes every later input inside it DMA-able at full PCIe speed.
"""
from __future__ import annotations

import bisect


def mapping_of(address: int, maps_path: str = "/proc/self/maps") -> tuple[int, int, str] | None:
    """(start, end, path) of this process's memory mapping that holds ``address``, or None."""
    with open(maps_path, encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(part, 16) for part in fields[0].split("-"))
            if start <= address < end:
                return start, end, fields[5].strip() if len(fields) > 5 else ""
    return None


class SharedMemoryPinner:
    """Registers each `/dev/shm` mapping that an input lies in, once; answers whether a range is pinned.

    ``register(start, size)`` does the registration (``cuMemHostRegister`` on a real GPU) and returns
    None on success, else the error. A mapping that failed once is not tried again. ``log`` hears
    once per mapping what was done.
    """

    def __init__(self, register, path_prefix: str = "/dev/shm/", log=None) -> None:
        self._register = register
        self._log = log or (lambda message: None)
        self._told: set[str] = set()
        self._prefix = path_prefix
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._refused: set[tuple[int, int]] = set()

    def _covered(self, address: int, size: int) -> bool:
        i = bisect.bisect_right(self._starts, address) - 1
        return i >= 0 and address + size <= self._ends[i]

    def pinned(self, address: int, size: int) -> bool:
        """Whether [address, address + size) is page-locked, registering its mapping if it is shared memory."""
        if self._covered(address, size):
            return True
        found = mapping_of(address)
        if found is None:
            return False
        start, end, path = found
        if not path.startswith(self._prefix) or (start, end) in self._refused or address + size > end:
            self._tell(path, f"input memory is in mapping {path!r}, not shared memory: staged through a pinned buffer")
            return False
        error = self._register(start, end - start)
        if error:
            self._refused.add((start, end))
            self._tell(path, f"page-locking {path} ({(end - start) >> 20} MiB) failed ({error}): staged instead")
            return False
        self._tell(path, f"page-locked {path} ({(end - start) >> 20} MiB): inputs there are copied to the GPU directly")
        i = bisect.bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        return True

    def _tell(self, path: str, message: str) -> None:
        if path not in self._told:
            self._told.add(path)
            self._log(message)
