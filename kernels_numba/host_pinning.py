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
        self._refused_starts: list[int] = []  # mappings not to try again: not shared memory, or refused
        self._refused_ends: list[int] = []

    @staticmethod
    def _inside(starts: list[int], ends: list[int], address: int, size: int) -> bool:
        i = bisect.bisect_right(starts, address) - 1
        return i >= 0 and address + size <= ends[i]

    @staticmethod
    def _remember(starts: list[int], ends: list[int], start: int, end: int) -> None:
        i = bisect.bisect_right(starts, start)
        starts.insert(i, start)
        ends.insert(i, end)

    def pinned(self, address: int, size: int) -> bool:
        """Whether [address, address + size) is page-locked, registering its mapping if it is shared memory."""
        if self._inside(self._starts, self._ends, address, size):
            return True
        if self._inside(self._refused_starts, self._refused_ends, address, size):
            return False  # known not to be pinnable: no second read of /proc/self/maps
        found = mapping_of(address)
        if found is None:
            return False
        start, end, path = found
        if address + size > end:
            return False
        if not path.startswith(self._prefix):
            self._remember(self._refused_starts, self._refused_ends, start, end)
            self._tell(path, f"input memory is in mapping {path!r}, not shared memory: staged through a pinned buffer")
            return False
        error = self._register(start, end - start)
        if error:
            self._remember(self._refused_starts, self._refused_ends, start, end)
            self._tell(path, f"page-locking {path} ({(end - start) >> 20} MiB) failed ({error}): staged instead")
            return False
        self._tell(path, f"page-locked {path} ({(end - start) >> 20} MiB): inputs there are copied to the GPU directly")
        self._remember(self._starts, self._ends, start, end)
        return True

    def _tell(self, path: str, message: str) -> None:
        if path not in self._told:
            self._told.add(path)
            self._log(message)
