"""The GPU decoder's header checks (pixelserve.model_runtime.gpu_decoding.read_header): they run before any decoding,
on the CPU, so they are tested wherever nvImageCodec is installed, GPU or not. Their errors must read like
the CPU decoder's (pixelserve.model_runtime.decoding) for the same bytes."""
from __future__ import annotations

import pytest

from images import encode, photo, png_header_only

from pixelserve.model_runtime.decoding import DecodeError, decode_image

MAX_SIDE = 8192


@pytest.fixture(scope="module")
def nvimgcodec():
    from pixelserve.model_runtime.gpu_decoding import nvimgcodec_module

    try:
        return nvimgcodec_module()
    except ImportError as exc:
        pytest.skip(str(exc))


def test_headers_of_good_files_are_read(nvimgcodec):
    from pixelserve.model_runtime.gpu_decoding import read_header

    image = photo("coffee")
    for fmt, options in (("JPEG", {"quality": 90}), ("JPEG", {"progressive": True}), ("PNG", {})):
        header = read_header(nvimgcodec, encode(image, fmt, **options), MAX_SIDE)
        assert (header.image_format, header.height, header.width) == (fmt, *image.shape[:2])


@pytest.mark.parametrize("name", ["empty", "text", "zeros", "gif", "bmp", "oversized", "huge", "truncated",
                                  "rows_missing"])
def test_bad_headers_get_the_cpu_decoders_error(nvimgcodec, name):
    from pixelserve.model_runtime.gpu_decoding import read_header

    jpeg = encode(photo("coffee"), "JPEG", quality=90)
    data = {
        "empty": b"",
        "text": b"definitely not an image",
        "zeros": b"\x00" * 100,
        "gif": b"GIF89a not an image we take",
        "bmp": encode(photo("coffee")[:16, :16], "BMP"),  # a format nvImageCodec reads, the service does not take
        "oversized": png_header_only(9000, 9000),
        "huge": png_header_only(8193, 20),
        "truncated": jpeg[: len(jpeg) // 2],
        "rows_missing": png_header_only(8192, 8192),  # 64 bytes of rows behind a header declaring 8192x8192
    }[name]
    with pytest.raises(DecodeError) as gpu:
        read_header(nvimgcodec, data, MAX_SIDE)
    with pytest.raises(DecodeError) as cpu:
        decode_image(data, MAX_SIDE)
    if name == "truncated":  # the reason after the colon is each decoder's own
        assert str(gpu.value).split(":")[0] == str(cpu.value).split(":")[0] == "undecodable JPEG image"
    else:
        assert str(gpu.value) == str(cpu.value)


def _with_thumbnail(jpeg: bytes, thumbnail: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding a whole small JPEG (start, scan and end markers), as EXIF
    thumbnails do."""
    body = b"Exif\x00\x00" + thumbnail
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_truncation_is_judged_after_the_scan_starts(nvimgcodec):
    from pixelserve.model_runtime.gpu_decoding import jpeg_is_complete, read_header

    jpeg = encode(photo("coffee"), "JPEG", quality=90)
    thumbnail = encode(photo("coffee")[::8, ::8], "JPEG", quality=70)
    with_thumbnail = _with_thumbnail(jpeg, thumbnail)
    assert jpeg_is_complete(jpeg) and jpeg_is_complete(with_thumbnail)
    assert jpeg_is_complete(jpeg + bytes(100_000))  # data after the end marker (motion photos): accepted, as by PIL
    decode_image(jpeg + bytes(100_000), MAX_SIDE)
    for cut in (len(jpeg) // 2, len(jpeg) - 2, 40):  # mid-scan, just before the end marker, inside the headers
        assert not jpeg_is_complete(jpeg[:cut]), cut
    cut_with_thumbnail = with_thumbnail[: len(with_thumbnail) // 2]  # the thumbnail's end marker is still there
    assert thumbnail[-2:] == b"\xff\xd9" and b"\xff\xd9" in cut_with_thumbnail
    with pytest.raises(DecodeError, match="undecodable JPEG image: no end-of-image marker"):
        read_header(nvimgcodec, cut_with_thumbnail, MAX_SIDE)
