"""Whether a PNG file holds all the image data its header declares.

PIL decodes a PNG whose compressed data ends early (a complete zlib stream of fewer rows than the header
declares, followed by IEND) without an error and fills the missing rows with zeros, so a 105-byte file
declaring 8192x8192 was classified. libpng (OpenCV) refuses such a file ("PNG input buffer is incomplete").
Both decoders (pixelserve.model_runtime.decoding, pixelserve.model_runtime.gpu_decoding) ask this module first.
"""
from __future__ import annotations

import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
# Adam7 passes: (x start, y start, x step, y step).
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
INFLATE_STEP = 1 << 20  # bytes inflated at a time: the count needs no buffer of the image's size


def expected_data_size(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """Bytes of filtered image data (a filter byte per row, then the row) that a PNG of this header inflates to."""
    bits_per_pixel = CHANNELS.get(colour_type, 4) * bit_depth
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            total += rows * (1 + (columns * bits_per_pixel + 7) // 8)
    return total


def missing_data(data: bytes) -> str | None:
    """Why a PNG file holds less image data than its header declares (None when it holds all of it, or when
    its structure is not one this check reads: the decoder then judges the file)."""
    if not data.startswith(SIGNATURE):
        return None
    position, expected, inflated = len(SIGNATURE), None, 0
    inflater = zlib.decompressobj()
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR" and len(body) >= 13:
            width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
            expected = expected_data_size(width, height, body[8], body[9], body[12] == 1)
        elif kind == b"IDAT" and expected is not None:
            try:
                while body and inflated < expected and not inflater.eof:
                    inflated += len(inflater.decompress(body, INFLATE_STEP))
                    body = inflater.unconsumed_tail
            except zlib.error as exc:
                return f"corrupt image data ({exc})"
            if inflated >= expected:
                return None
        elif kind == b"IEND":
            break
    if expected is None:
        return None
    return f"image data ends after {inflated} of the {expected} bytes its header declares (truncated file)"
