"""Decoding encoded images (pixelserve.model_runtime.decoding) against PIL and numpy references, and its errors.

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
from pixelserve.model_runtime.decoding import DecodeError, decode_image
from pixelserve.model_runtime.encoded_images import ImageDecoder, one_encoded_image

MAX_SIDE = 8192
CPU_DECODER_PARAMETERS = {"max_image_side": str(MAX_SIDE), "decode_threads": "2", "gpu_hardware_load": "1",
                          "gpu_hardware_min_pixels": "0", "gpu_decoder_options": ""}  # fmt: skip


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



# EXIF orientation -> what a viewer does to the stored pixels to show them upright (numpy, independent of PIL).
UPRIGHT = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
           5: lambda a: np.transpose(a, (1, 0, 2)), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_every_exif_orientation_is_applied(orientation):
    image = photo("astronaut")[:120, :200]  # not square: a wrong turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95, exif=exif)
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), MAX_SIDE), UPRIGHT[orientation](_pil(buffer.getvalue())))

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
    # One file in the wrong rank: what Triton 2.51 hands the model for a request declaring [2^32, 1].
    for tensor in (np.array([b"a"], dtype=object), np.array([[[b"a"]]], dtype=object)):
        with pytest.raises(DecodeError, match=r"as a \[1, 1\] BYTES tensor .*got shape"):
            one_encoded_image(tensor)


def _idat_stream(png: bytes) -> bytes:
    """The concatenated IDAT chunk bodies of a PNG file."""
    position, stream = 8, b""
    while position < len(png):
        length = int.from_bytes(png[position:position + 4], "big")
        if png[position + 4:position + 8] == b"IDAT":
            stream += png[position + 8:position + 8 + length]
        position += 12 + length
    return stream


def _with_image_data(png: bytes, raw: bytes) -> bytes:
    """``png``'s IHDR with ``raw`` (filtered rows) compressed as its one IDAT chunk, then IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return png[:33] + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("mode, shape", [("RGB", (37, 53, 3)), ("RGBA", (20, 31, 4)), ("L", (17, 9)),
                                         ("I;16", (13, 11)), ("P", (19, 23)), ("1", (7, 13))])
def test_png_data_size_of_a_header_matches_real_files(mode, shape):
    """expected_data_size against what zlib inflates from PIL's PNG files of each colour type and bit depth."""
    import zlib

    from pixelserve.model_runtime.png_data import expected_data_size

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256 if mode != "I;16" else 65536, shape).astype(np.uint16 if mode == "I;16" else np.uint8)
    image = Image.fromarray(pixels).convert(mode) if mode in ("P", "1") else Image.fromarray(pixels)
    png = encode(image, "PNG")
    header = png[16:29]
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    inflated = len(zlib.decompress(_idat_stream(png)))
    assert expected_data_size(width, height, header[8], header[9], header[12] == 1) == inflated


def test_png_data_size_of_an_interlaced_header_counts_the_seven_passes():
    """Adam7: each pass's rows and columns counted pixel by pixel (numpy), a filter byte per row of each pass."""
    from pixelserve.model_runtime.png_data import ADAM7, expected_data_size

    for width, height, bits in ((1, 1, 8), (5, 3, 8), (37, 53, 24), (9, 17, 1), (8, 8, 64)):
        ys, xs = np.mgrid[0:height, 0:width]
        total = 0
        for x0, y0, dx, dy in ADAM7:
            member = ((xs - x0) % dx == 0) & (xs >= x0) & ((ys - y0) % dy == 0) & (ys >= y0)
            rows = int(member.any(axis=1).sum())
            columns = int(member.any(axis=0).sum())
            if rows and columns:
                total += rows * (1 + (columns * bits + 7) // 8)
        colour_type, depth = {8: (0, 8), 24: (2, 8), 1: (0, 1), 64: (6, 16)}[bits]
        assert expected_data_size(width, height, depth, colour_type, True) == total


def test_png_with_fewer_rows_than_its_header_is_refused():
    """A complete zlib stream of half the rows, then IEND (PIL fills the rest with zeros), the issue's 105-byte file
    declaring 8192x8192, and a file cut inside its image data: each refused as truncated; the whole file decodes."""
    image = photo("coffee")
    png = encode(image, "PNG")
    raw = __import__("zlib").decompress(_idat_stream(png))
    half_rows = _with_image_data(png, raw[: len(raw) // 2])
    np.testing.assert_array_equal(decode_image(_with_image_data(png, raw), MAX_SIDE), image)  # the control
    for data in (half_rows, png_header_only(8192, 8192), png[: len(png) * 2 // 3]):
        with pytest.raises(DecodeError, match=r"undecodable PNG image: .*(truncated|ends)"):
            decode_image(data, MAX_SIDE)


# The decoder's tuning parameters in preprocess/config.pbtxt: (parameter, its parser's name, what it expects).
DECODER_TUNING = {"gpu_hardware_load": ("hardware_load_parameter", "a fraction from 0 to 1"),
                  "gpu_hardware_min_pixels": ("hardware_min_pixels_parameter", "a pixel count")}  # fmt: skip


def _tuning_parser(name):
    from pixelserve.model_runtime import encoded_images

    return getattr(encoded_images, DECODER_TUNING[name][0])


@pytest.mark.parametrize("name, text, value", [("gpu_hardware_load", "1", 1.0), ("gpu_hardware_load", "0.65", 0.65),
                                               ("gpu_hardware_load", "0", 0.0), ("gpu_hardware_min_pixels", "0", 0),
                                               ("gpu_hardware_min_pixels", "600000", 600000)])  # fmt: skip
def test_the_decoder_tuning_parameters_are_parsed(name, text, value):
    assert _tuning_parser(name)({name: text}) == value


@pytest.mark.parametrize("name, text", [*[("gpu_hardware_load", t) for t in ("1.5", "-0.1", "true", "", "nan")],
                                        *[("gpu_hardware_min_pixels", t) for t in ("-1", "0.5", "1e6", "", "many")]])
def test_a_decoder_tuning_parameter_out_of_range_is_refused_by_name(name, text):
    with pytest.raises(ValueError, match=f"{name}=.*expected {DECODER_TUNING[name][1]}"):
        _tuning_parser(name)({name: text})
