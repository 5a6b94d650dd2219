"""The GPU batch decoder (pixelserve.model_runtime.gpu_decoding, nvImageCodec) against PIL, and its per-image errors.

Device machine only: skipped without a CUDA GPU or without nvImageCodec (requirements-gpu-decode.txt).

Tolerance against PIL (the CPU path and the training reference), JPEG q90 of the real photos: nvJPEG and
PIL's libjpeg-turbo differ in IDCT and in 4:2:0 chroma upsampling (libjpeg-turbo's "fancy" triangular
filter by default), so pixels differ by a level or two almost everywhere and by more along sharp colour
edges. How much, measured on a CPU with libjpeg-turbo itself (simplejpeg 1.9, these photos at native
size, 480p, 1080p and 4K): simple chroma upsampling alone gives mean 0.2-0.8 levels, p99 2-10, max 57;
with the fast integer IDCT as well, mean 1.0-1.5, p99 4-10. Required here: mean absolute difference
<= 1.5 levels and p99 <= 12 levels (the measured worst plus a little for a third IDCT). Lossless PNG
must be exact; 16-bit PNG within 1 level (scaling to 8 bits by rounding or by dropping the low byte
differ by at most 1). Each comparison prints its numbers.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from encoded_requests import require_gpu_decoding
from images import encode, photo, photo_at, png_header_only

pytestmark = pytest.mark.gpu
MAX_SIDE = 8192
MEAN_LEVELS, P99_LEVELS = 1.5, 12


@pytest.fixture(scope="module", params=[(1.0, 0), (0.5, 0), (1.0, 500_000), (0.0, 0)],
                ids=["engines-first", "engines-half", "small-to-cuda", "cuda-only"])
def decoder(request):
    """Every JPEG to the hardware engines first; half of each batch to them and half to the CUDA decoders; JPEGs
    under 0.5 megapixels to the CUDA decoders and the rest to the engines; or the CUDA decoders alone."""
    require_gpu_decoding()
    import torch

    from pixelserve.model_runtime.gpu_decoding import GpuBatchDecoder

    # Poison the CUDA caching allocator: a copy that wrote nothing would return this pattern, not pixels.
    poison = torch.full((256 << 20,), 0xA5, dtype=torch.uint8, device="cuda:0")
    del poison
    load, min_pixels = request.param
    return GpuBatchDecoder(0, MAX_SIDE, hardware_load=load, hardware_min_pixels=min_pixels)


def _pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _host(tensor) -> np.ndarray:
    assert tensor.is_cuda and tensor.is_contiguous() and str(tensor.dtype) == "torch.uint8", tensor
    return tensor.cpu().numpy()


def _assert_close_to_pil(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.shape == expected.shape, what
    diff = np.abs(got.astype(int) - expected.astype(int))
    mean, p99 = diff.mean(), np.percentile(diff, 99)
    print(f"{what}: mean abs diff {mean:.3f}, p99 {p99:.0f}, max {diff.max()}")
    assert mean <= MEAN_LEVELS and p99 <= P99_LEVELS, f"{what}: mean {mean:.3f}, p99 {p99}, max {diff.max()}"


def test_real_photos_in_one_batch_match_pil(decoder):
    images = [photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    images += [photo_at("coffee", 1080, 1920), photo_at("rocket", 2160, 3840), photo_at("chelsea", 480, 640)]
    files = [encode(image, "JPEG", quality=90) for image in images]
    decoded = decoder.decode(files)
    for number, (data, tensor) in enumerate(zip(files, decoded)):
        _assert_close_to_pil(_host(tensor), _pil(data), f"photo {number} {images[number].shape}")


def test_decoding_queued_on_the_callers_stream_gives_the_same_pixels(decoder):
    """decode(cuda_stream=...) returns before the GPU is done; work queued after it on that stream (here a copy
    into a poisoned buffer, the kernels' staging in serving) must read the finished pixels: JPEGs on the hardware
    engines, a progressive JPEG and a grey PNG (converted on the GPU) on the default decoders."""
    import torch

    images = [photo_at("coffee", 1080, 1920), photo_at("rocket", 2160, 3840), photo("chelsea")]
    grey = photo("astronaut")[..., 0]
    files = [encode(image, "JPEG", quality=90) for image in images]
    files += [encode(images[2], "JPEG", quality=90, progressive=True), encode(grey, "PNG")]
    expected = [_host(tensor) for tensor in decoder.decode(files)]
    stream = torch.cuda.Stream()
    for _ in range(3):
        decoded = decoder.decode(files, cuda_stream=stream.cuda_stream)
        copies = []
        with torch.cuda.stream(stream):
            for tensor in decoded:
                target = torch.full(tensor.shape, 0xA5, dtype=torch.uint8, device=tensor.device)
                target.copy_(tensor, non_blocking=True)
                copies.append(target)
        stream.synchronize()
        for number, (got, want) in enumerate(zip(copies, expected)):
            np.testing.assert_array_equal(got.cpu().numpy(), want, err_msg=f"file {number}")


def test_hardware_decoder_is_used_where_the_gpu_has_jpeg_engines(decoder):
    import torch

    name = torch.cuda.get_device_name(0)
    if not any(model in name for model in ("A100", "H100", "H200", "B200", "GB200")):
        pytest.skip(f"{name}: no hardware JPEG engines")
    if decoder.hardware_load == 0:  # the CUDA-only decoder: asked for no engines, it must build none
        assert decoder.hardware is None and decoder.cuda is not None, decoder.backends
    else:
        assert decoder.hardware is not None, decoder.backends


def test_progressive_jpeg_and_png_go_to_the_default_decoders(decoder):
    image = photo("rocket")
    progressive = encode(image, "JPEG", quality=90, progressive=True)
    png = encode(image, "PNG")
    got_progressive, got_png = decoder.decode([progressive, png])
    _assert_close_to_pil(_host(got_progressive), _pil(progressive), "progressive JPEG")
    np.testing.assert_array_equal(_host(got_png), image)


def test_exif_orientation_is_applied(decoder):
    image = photo("chelsea")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", quality=95, exif=exif)
    got = _host(decoder.decode([data])[0])
    assert got.shape == (image.shape[1], image.shape[0], 3)
    _assert_close_to_pil(got, np.rot90(_pil(data), k=-1), "EXIF orientation 6")


def test_grey_and_cmyk_jpegs_become_rgb(decoder):
    grey = photo("coffee").mean(axis=2).astype(np.uint8)
    grey_jpeg = encode(grey, "JPEG", quality=90)
    cmyk_jpeg = encode(Image.fromarray(photo("astronaut")).convert("CMYK"), "JPEG", quality=95)
    got_grey, got_cmyk = (_host(t) for t in decoder.decode([grey_jpeg, cmyk_jpeg]))
    assert (got_grey[..., 0] == got_grey[..., 1]).all() and (got_grey[..., 1] == got_grey[..., 2]).all()
    _assert_close_to_pil(got_grey, _pil(grey_jpeg), "grey JPEG")
    _assert_close_to_pil(got_cmyk, _pil(cmyk_jpeg), "CMYK JPEG")


def test_png_alpha_is_dropped_and_16_bit_is_scaled_to_8(decoder):
    rng = np.random.default_rng(11)
    rgb = photo("chelsea")
    rgba = np.concatenate([rgb, rng.integers(0, 256, (*rgb.shape[:2], 1), np.uint8)], axis=2)
    grey16 = rng.integers(0, 65536, (37, 53), np.uint16)
    got_rgba, got_grey16 = (_host(t) for t in decoder.decode([encode(rgba, "PNG"), encode(grey16, "PNG")]))
    np.testing.assert_array_equal(got_rgba, rgb)
    expected = np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    assert got_grey16.shape == expected.shape
    assert np.abs(got_grey16.astype(int) - expected).max() <= 1


def test_oversized_header_is_refused_before_decoding(decoder):
    from pixelserve.model_runtime.decoding import DecodeError

    good = encode(photo("coffee"), "JPEG", quality=90)
    start = time.perf_counter()
    results = decoder.decode([good, png_header_only(9000, 9000), png_header_only(100_000, 100_000), good])
    assert time.perf_counter() - start < 1.0  # 30 GB of pixels if the last header were decoded
    for result, (height, width) in zip(results[1:3], ((9000, 9000), (100_000, 100_000))):
        assert isinstance(result, DecodeError)
        assert f"declares {height}x{width}, above the maximum side of 8192 pixels (refused before decoding)" in str(result)
    assert _host(results[0]).shape == _host(results[3]).shape == photo("coffee").shape


def test_bad_files_fail_alone_while_the_rest_of_the_batch_decodes(decoder):
    from pixelserve.model_runtime.decoding import DecodeError

    good = encode(photo("coffee"), "JPEG", quality=90)
    png = encode(photo("coffee"), "PNG")
    bad = {
        "empty": (b"", "encoded image is empty"),
        "text": (b"definitely not an image", "not a JPEG or PNG image"),
        "zeros": (b"\x00" * 100, "not a JPEG or PNG image"),
        "gif": (b"GIF89a not an image we take", "not a JPEG or PNG image"),
        "truncated JPEG": (good[: len(good) // 2], "undecodable JPEG image"),
        "corrupt PNG": (png[:100] + bytes(b ^ 0xFF for b in png[100:400]) + png[400:], "undecodable PNG image"),
    }
    batch = [good] + [data for data, _ in bad.values()] + [good]
    results = decoder.decode(batch)
    for (name, (_, message)), result in zip(bad.items(), results[1:-1]):
        assert isinstance(result, DecodeError), name
        assert message in str(result), (name, str(result))
    first, last = _host(results[0]), _host(results[-1])
    np.testing.assert_array_equal(first, last)
    _assert_close_to_pil(first, _pil(good), "good neighbour of bad files")
