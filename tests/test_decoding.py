"""Decoding encoded images (pixelserve.runtime.decoding) against PIL and numpy references, and its errors.

Tolerance: the CPU decoder is PIL itself, so baseline JPEG and PNG pixels must be identical to PIL's
(0 levels); a progressive JPEG of the same photo is compared with its baseline twin within 2 levels
on 99% of values (different encoders' quantisation, not the decoder).
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from images import encode, photo, png_header_only
from pixelserve.runtime.decoding import DecodeError, decode_image
from pixelserve.runtime.encoded_images import ImageDecoder, one_encoded_image

MAX_SIDE = 8192
CPU_DECODER_PARAMETERS = {"max_image_side": str(MAX_SIDE), "decode_threads": "2", "gpu_hardware_decoder": "true",
                          "gpu_decoder_options": ""}  # fmt: skip


def _pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_jpeg_and_png_of_real_photos_equal_pil(name):
    image = photo(name)
    jpeg = encode(image, "JPEG", quality=90)
    np.testing.assert_array_equal(decode_image(jpeg, MAX_SIDE), _pil(jpeg))
    np.testing.assert_array_equal(decode_image(encode(image, "PNG"), MAX_SIDE), image)  # lossless


def test_exif_orientation_is_applied():
    image = photo("chelsea")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95, exif=exif)
    decoded = decode_image(buffer.getvalue(), MAX_SIDE)
    upright = np.rot90(_pil(buffer.getvalue()), k=-1)  # what the viewer shows
    assert decoded.shape == (image.shape[1], image.shape[0], 3)
    np.testing.assert_array_equal(decoded, upright)


def test_grayscale_jpeg_becomes_three_equal_channels():
    grey = photo("coffee").mean(axis=2).astype(np.uint8)
    decoded = decode_image(encode(grey, "JPEG", quality=90), MAX_SIDE)
    assert decoded.shape == (*grey.shape, 3)
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()


def test_cmyk_jpeg_is_converted_like_pil():
    cmyk = Image.fromarray(photo("astronaut")).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=95)
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), MAX_SIDE), _pil(buffer.getvalue()))


def test_progressive_jpeg_decodes_like_its_baseline_twin():
    image = photo("rocket")
    baseline = decode_image(encode(image, "JPEG", quality=90), MAX_SIDE).astype(int)
    progressive = decode_image(encode(image, "JPEG", quality=90, progressive=True), MAX_SIDE).astype(int)
    assert progressive.shape == baseline.shape
    assert np.mean(np.abs(progressive - baseline) <= 2) >= 0.99


def test_png_alpha_is_dropped_and_16_bit_is_scaled_to_8():
    rng = np.random.default_rng(11)
    rgba = np.concatenate([photo("chelsea"), rng.integers(0, 256, (*photo("chelsea").shape[:2], 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_image(encode(rgba, "PNG"), MAX_SIDE), rgba[..., :3])
    grey16 = rng.integers(0, 65536, (37, 53), np.uint16)
    decoded = decode_image(encode(grey16, "PNG"), MAX_SIDE)
    np.testing.assert_array_equal(decoded, np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, axis=2))


def test_oversized_header_is_refused_before_decoding():
    start = time.perf_counter()
    with pytest.raises(DecodeError, match=r"declares 9000x9000, above the maximum side of 8192 pixels \(refused before"):
        decode_image(png_header_only(9000, 9000), MAX_SIDE)
    with pytest.raises(DecodeError, match="refused before decoding"):  # PIL's own bomb check comes first here
        decode_image(png_header_only(100_000, 100_000), MAX_SIDE)  # 30 GB of pixels if it were decoded
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"GIF89a not an image we take", "not a JPEG or PNG"),
    (b"\x00" * 100, "not a JPEG or PNG"),
])
def test_bad_bytes_get_a_clear_error(data, message):
    with pytest.raises(DecodeError, match=message):
        decode_image(data, MAX_SIDE)


def test_truncated_and_corrupt_files_get_a_clear_error():
    jpeg = encode(photo("coffee"), "JPEG", quality=90)
    with pytest.raises(DecodeError, match="undecodable JPEG image"):
        decode_image(jpeg[: len(jpeg) // 2], MAX_SIDE)
    png = encode(photo("coffee"), "PNG")
    corrupt = png[:100] + bytes(b ^ 0xFF for b in png[100:400]) + png[400:]
    with pytest.raises(DecodeError, match="undecodable PNG image"):
        decode_image(corrupt, MAX_SIDE)


def test_cpu_batch_decoder_answers_each_file_in_order():
    """preprocess's decoder on a CPU instance: PIL's pixels for good files, a DecodeError for each bad one."""
    good = [encode(photo(name), "JPEG", quality=90) for name in ("chelsea", "coffee")]
    decoder = ImageDecoder(CPU_DECODER_PARAMETERS)
    try:
        decoder.warm_up()
        results = decoder.decode([good[0], b"", good[1], b"not an image"])
    finally:
        decoder.close()
    assert decoder.description == "PIL on 2 threads"
    np.testing.assert_array_equal(results[0], _pil(good[0]))
    np.testing.assert_array_equal(results[2], _pil(good[1]))
    assert isinstance(results[1], DecodeError) and "empty" in str(results[1])
    assert isinstance(results[3], DecodeError) and "not a JPEG or PNG" in str(results[3])


def test_a_request_sends_exactly_one_file():
    assert one_encoded_image(np.array([[b"abc"]], dtype=object)) == b"abc"
    for tensor in (np.array([[b"a"], [b"b"]], dtype=object), np.empty((0, 1), dtype=object)):
        with pytest.raises(DecodeError, match="one encoded image per request"):
            one_encoded_image(tensor)
