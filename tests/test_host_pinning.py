"""SharedMemoryPinner: which input ranges get page-locked, found through this process's real mappings."""
from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np

from pixelserve.kernels.host_pinning import SharedMemoryPinner, mapping_of


def test_input_in_shared_memory_registers_its_whole_mapping_once():
    region = shared_memory.SharedMemory(create=True, size=1 << 22)
    try:
        view = np.ndarray((1 << 22,), np.uint8, buffer=region.buf)
        calls, messages = [], []
        pinner = SharedMemoryPinner(lambda start, size: calls.append((start, size)), log=messages.append)
        address = view.ctypes.data
        start, end, path = mapping_of(address)
        assert path.startswith("/dev/shm/") and start <= address < end
        assert pinner.pinned(address + 4096, 1000)
        assert pinner.pinned(address, 1 << 22)  # covered: no second registration
        assert calls == [(start, end - start)]
        assert len(messages) == 1 and "page-locked" in messages[0]
        assert not pinner.pinned(address, (end - start) + 1)  # runs past the mapping
        del view
    finally:
        region.close()
        region.unlink()


def test_heap_memory_is_not_registered():
    calls, messages = [], []
    pinner = SharedMemoryPinner(lambda start, size: calls.append(start), log=messages.append)
    heap = np.random.default_rng(7).integers(0, 256, 1 << 20, np.uint8)
    assert not pinner.pinned(heap.ctypes.data, heap.nbytes)
    assert calls == [] and "not shared memory" in messages[0]


def test_a_mapping_that_failed_is_not_tried_again():
    region = shared_memory.SharedMemory(create=True, size=1 << 20)
    try:
        view = np.ndarray((1 << 20,), np.uint8, buffer=region.buf)
        calls = []
        pinner = SharedMemoryPinner(lambda start, size: calls.append(start) or "CUDA_ERROR_NOT_PERMITTED")
        assert not pinner.pinned(view.ctypes.data, 10)
        assert not pinner.pinned(view.ctypes.data, 10)
        assert len(calls) == 1
        del view
    finally:
        region.close()
        region.unlink()
