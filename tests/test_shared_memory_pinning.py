"""Host images in the Python backend's shared memory go to the GPU by DMA in place (kernels_numba.shared_memory_pinning).

The GPU test puts random and real images in a /dev/shm file named like the Python backend's region, as the stub
maps it, and checks that the kernels' output (poisoned first) is the one of the staged copy path and within the
kernels' stated tolerance of the float64 reference (tests/test_kernels.py), and that the images took the direct
path; images on the heap still take the staged path.
"""
from __future__ import annotations

import mmap
import os
import uuid

import numpy as np
import pytest

from images import photo, random_image

from pixelserve.kernels_numba import PreprocessSpec
from pixelserve.kernels_numba.phase_timing import NullTimer
from pixelserve.kernels_numba.shared_memory_pinning import PYTHON_BACKEND_REGION_PREFIX, mapping_of
from test_kernels import check_batch, poisoned


@pytest.fixture
def backend_region():
    """A 64 MiB /dev/shm file named like a Python-backend region, mapped read-write (as the stub maps its own)."""
    path = f"{PYTHON_BACKEND_REGION_PREFIX}_test_{uuid.uuid4().hex}"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 64 << 20)
        region = mmap.mmap(fd, 64 << 20)
    finally:
        os.close(fd)
    yield path, region
    # The CUDA registration (if any) is dropped with the process; the file goes now.
    os.unlink(path)


def images_in(region: mmap.mmap, images: list[np.ndarray]) -> list[np.ndarray]:
    """Copies of ``images`` placed back to back in ``region`` (numpy views into it, as pb_utils' as_numpy gives)."""
    views, offset = [], 4096  # not at the mapping's first byte, as a tensor inside the stub's region is not
    for image in images:
        view = np.frombuffer(region, np.uint8, image.size, offset).reshape(image.shape)
        view[...] = image
        views.append(view)
        offset += -(-image.size // 256) * 256
    return views


def test_the_mapping_holding_an_address_is_found_with_its_path(backend_region):
    path, region = backend_region
    view = images_in(region, [np.zeros((4, 4, 3), np.uint8)])[0]
    with open("/proc/self/maps") as maps:
        found = mapping_of(view.ctypes.data, maps.read())
    assert found is not None
    start, end, mapped = found
    assert mapped == path and start <= view.ctypes.data < end and end - start == 64 << 20
    heap = np.zeros(16, np.uint8)
    with open("/proc/self/maps") as maps:
        assert mapping_of(heap.ctypes.data, maps.read())[2] != path


class CountingTimer(NullTimer):
    """Records the counts the preprocessor reports (images_from_gpu, images_h2d_direct, images_h2d_staged)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, name: str, calls: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + calls


@pytest.mark.gpu
def test_images_in_backend_shared_memory_are_copied_in_place_with_the_same_output(backend_region, rng):
    from numba import cuda

    from pixelserve.kernels_numba.gpu import CudaPreprocessor

    _, region = backend_region
    spec = PreprocessSpec(output_dtype="float16")
    images = [random_image(rng, 480, 640), photo("coffee"), random_image(rng, 1080, 1920), random_image(rng, 7, 3)]
    in_region = images_in(region, images)
    outputs = {}
    for name, pin, batch in (("direct", True, in_region), ("staged", False, in_region), ("heap", True, images)):
        timer = CountingTimer()
        preprocessor = CudaPreprocessor(spec, max_images=len(images), pin_shared_memory=pin)
        out = cuda.to_device(poisoned(len(images), spec))
        preprocessor.run(batch, out, timer)
        preprocessor.synchronize()
        outputs[name] = out.copy_to_host()
        print(name, timer.counts)
        direct = len(images) if name == "direct" else 0
        assert timer.counts == {"images_from_gpu": 0, "images_h2d_direct": direct,
                                "images_h2d_staged": len(images) - direct}, name
    check_batch(outputs["direct"], images, spec)
    np.testing.assert_array_equal(outputs["direct"], outputs["staged"])
    np.testing.assert_array_equal(outputs["direct"], outputs["heap"])
