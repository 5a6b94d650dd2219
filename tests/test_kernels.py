"""The preprocessing kernels (CPU njit and numba.cuda) against independent torch / OpenCV / numpy references.

Tolerance: float32 outputs within 1e-4 absolute of the float64 reference (normalised units, about
0.006 of one 8-bit level); float16 outputs within 2e-3 + 1e-3 relative (half precision rounding).
Outputs are poisoned with NaN before each run, so an unwritten element fails the check.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import HAS_GPU
from images import PHOTO_NAMES, photo, random_image

from pixelserve.kernels_numba import PreprocessSpec, preprocess_cpu
from references import cv2_resize, numpy_crop_resize, reference_preprocess, torch_resize

# These compare plain bilinear (antialias=False) with torch/OpenCV; tests/test_antialias.py covers PIL parity.
ODD_SIZES = [(1, 1), (1, 4000), (4000, 1), (3, 5), (1080, 1920), (2160, 3840)]
SIM_SIZES = [(1, 1), (1, 40), (40, 1), (3, 5), (17, 23)]  # the CUDA simulator runs one Python call per thread
SPECS = {
    "stretch": PreprocessSpec(antialias=False, resize_mode="stretch"),
    "crop": PreprocessSpec(antialias=False, resize_mode="shorter_side_crop"),
    "crop-bgr": PreprocessSpec(antialias=False, resize_mode="shorter_side_crop", input_order="BGR", crop_fraction=0.95),
    "letterbox": PreprocessSpec(antialias=False, resize_mode="letterbox", pad_value=114),
    "letterbox-wide": PreprocessSpec(antialias=False, resize_mode="letterbox", out_height=160, out_width=320),
}


def tolerance(spec: PreprocessSpec) -> dict:
    return {"atol": 1e-4, "rtol": 0} if spec.output_dtype == "float32" else {"atol": 2e-3, "rtol": 1e-3}


def poisoned(n: int, spec: PreprocessSpec) -> np.ndarray:
    return np.full((n, 3, spec.out_height, spec.out_width), np.nan, spec.numpy_dtype)


def check_batch(out: np.ndarray, images, spec: PreprocessSpec) -> None:
    assert not np.isnan(out.astype(np.float32)).any(), "some output elements were never written"
    for i, img in enumerate(images):
        np.testing.assert_allclose(out[i].astype(np.float64), reference_preprocess(img, spec), **tolerance(spec))


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_cpu_matches_torch_on_odd_random_sizes(spec_name, rng):
    spec = SPECS[spec_name]
    images = [random_image(rng, h, w) for h, w in ODD_SIZES]
    out = preprocess_cpu(images, spec, out=poisoned(len(images), spec))
    check_batch(out, images, spec)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_cpu_matches_torch_on_real_photos(spec_name):
    spec = SPECS[spec_name]
    images = [photo(name) for name in PHOTO_NAMES]
    check_batch(preprocess_cpu(images, spec, out=poisoned(len(images), spec)), images, spec)


def test_cpu_float16_output(rng):
    spec = PreprocessSpec(antialias=False, output_dtype="float16")
    images = [random_image(rng, 480, 640), photo("coffee")]
    out = preprocess_cpu(images, spec, out=poisoned(2, spec))
    assert out.dtype == np.float16
    check_batch(out, images, spec)


def test_opencv_and_torch_references_agree(rng):
    """The two resize references compute the same function (OpenCV's float32 tap positions aside)."""
    for h, w, oh, ow in [(37, 53, 224, 224), (1080, 1920, 224, 224), (5, 3, 17, 9), (1, 4000, 224, 224)]:
        img = random_image(rng, h, w)
        np.testing.assert_allclose(cv2_resize(img, oh, ow), torch_resize(img, oh, ow), atol=0.1)


def test_numpy_crop_reference_agrees_with_full_resize_and_crop(rng):
    """The in-crop numpy reference used for extreme aspect ratios equals a full torch resize + crop."""
    spec = SPECS["crop"]
    for h, w in [(300, 451), (50, 700), (701, 33)]:
        img = random_image(rng, h, w)
        full = reference_preprocess(img, spec)
        partial = (numpy_crop_resize(img, spec) / 255.0 - np.array(spec.mean)) / np.array(spec.std)
        np.testing.assert_allclose(partial.transpose(2, 0, 1), full, atol=1e-9)


def test_batch_of_mixed_sizes_equals_one_by_one(rng):
    spec = SPECS["crop"]
    images = [random_image(rng, h, w) for h, w in [(480, 640), (31, 7), (720, 1280)]]
    batch = preprocess_cpu(images, spec)
    for i, img in enumerate(images):
        np.testing.assert_array_equal(batch[i], preprocess_cpu([img], spec)[0])


# ---- numba.cuda kernel: on a real GPU with the full sizes, else under the CUDA simulator on small ones ----

def _cuda_run(images, spec):
    from numba import cuda

    from pixelserve.kernels_numba import preprocess_cuda

    out = cuda.to_device(poisoned(len(images), spec))
    preprocess_cuda(images, spec, out=out)
    return out.copy_to_host()


SMALL_SPECS = {
    "stretch": PreprocessSpec(antialias=False, resize_mode="stretch", out_height=12, out_width=10),
    "crop": PreprocessSpec(antialias=False, resize_mode="shorter_side_crop", out_height=8, out_width=8),
    "letterbox-bgr": PreprocessSpec(antialias=False, resize_mode="letterbox", out_height=9, out_width=14, pad_value=7, input_order="BGR"),
    "fp16": PreprocessSpec(antialias=False, resize_mode="stretch", out_height=6, out_width=5, output_dtype="float16"),
}


@pytest.mark.parametrize("spec_name", list(SMALL_SPECS))
def test_cuda_kernel_small_images_match_torch(spec_name, rng):
    """Runs on the GPU when there is one, under NUMBA_ENABLE_CUDASIM=1 otherwise (CI)."""
    spec = SMALL_SPECS[spec_name]
    images = [random_image(rng, h, w) for h, w in SIM_SIZES]
    check_batch(_cuda_run(images, spec), images, spec)


@pytest.mark.gpu
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_cuda_kernel_matches_torch_on_odd_sizes_and_photos(spec_name, rng):
    spec = SPECS[spec_name]
    images = [random_image(rng, h, w) for h, w in ODD_SIZES] + [photo(n) for n in PHOTO_NAMES]
    check_batch(_cuda_run(images, spec), images, spec)


@pytest.mark.gpu
def test_cuda_and_cpu_paths_agree(rng):
    spec = SPECS["crop"]
    images = [random_image(rng, 1080, 1920) for _ in range(4)] + [photo("chelsea")]
    np.testing.assert_allclose(_cuda_run(images, spec), preprocess_cpu(images, spec), atol=1e-5, rtol=0)


def test_cuda_kernels_run_here_on_the_gpu_or_the_simulator():
    """Guards CI: the CUDA tests above must run (on the simulator without a GPU), not be skipped or silently
    pass: numba.cuda is available, is the simulator exactly when there is no GPU, and runs the kernel."""
    from numba import cuda

    assert cuda.is_available()
    on_simulator = type(cuda.to_device(np.zeros(1))).__module__.startswith("numba.cuda.simulator")
    assert on_simulator is not HAS_GPU
    spec = SMALL_SPECS["stretch"]
    image = np.full((3, 4, 3), 200, np.uint8)
    check_batch(_cuda_run([image], spec), [image], spec)


@pytest.mark.gpu
def test_serving_runner_writes_into_the_buffer_it_is_given(rng):
    """CudaRunner.run(out=...): the one-step model hands it the classifier's graph input. Host and device images,
    mixed sizes, the shipped antialiased FP16 spec; the buffer is poisoned and must come back whole, against the
    CPU path (same math)."""
    import torch

    from pixelserve.kernels_numba.serving import CudaRunner

    spec = PreprocessSpec(output_dtype="float16")
    runner = CudaRunner(spec, 0, max_batch_size=8)
    images = [random_image(rng, 1080, 1920), photo("chelsea"), random_image(rng, 37, 53)]
    inputs = [images[0], torch.from_numpy(images[1]).cuda(), images[2]]
    buffer = torch.full((8, 3, spec.out_height, spec.out_width), float("nan"), dtype=torch.float16, device="cuda")
    returned = runner.run(inputs, out=buffer[:3])
    assert returned.data_ptr() == buffer.data_ptr()
    got = buffer.cpu().numpy()
    assert np.isnan(got[3:].astype(np.float32)).all(), "rows past the batch were written"
    np.testing.assert_allclose(got[:3].astype(np.float32), preprocess_cpu(images, spec).astype(np.float32),
                               atol=2e-3, rtol=1e-3)
