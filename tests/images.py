"""Test images: real photographs shipped with scikit-image, and fresh random ones of odd sizes."""
from __future__ import annotations

import io
import itertools
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

from pixelserve.build.reference_images import PHOTO_NAMES, load_photo as photo

__all__ = ["PHOTO_NAMES", "photo", "photo_at", "random_image", "uncached", "uncached_jpeg", "encode", "png_header_only"]

_STAMPS = itertools.count(1)


def photo_at(name: str, height: int, width: int) -> np.ndarray:
    """A real photograph rescaled (area/cubic, like a camera would deliver) to height x width."""
    img = photo(name)
    interp = cv2.INTER_AREA if height * width < img.shape[0] * img.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Fresh uniform random HWC uint8 image."""
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def uncached(image: np.ndarray) -> np.ndarray:
    """A copy of ``image`` whose first pixel holds a running number, so it differs from every other image this
    function returned in the test session: the server's response cache (on the ensemble) has no answer for
    it, and the models really run."""
    stamp = next(_STAMPS)
    copy = image.copy()
    copy[0, 0, :] = (stamp & 255, (stamp >> 8) & 255, 1 + (stamp >> 16))  # the last channel never repeats 0
    return copy


def uncached_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of ``image`` that no other call returned in the test session (a numbered JPEG comment), so the
    encoded ensemble's response cache has no answer for them. ``uncached`` is not enough here: quantisation
    can erase a one-pixel change."""
    return encode(image, "JPEG", quality=quality, comment=f"pixelserve test {next(_STAMPS)}".encode())


def encode(image: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    """``image`` (an array or a PIL image) encoded by PIL as ``fmt`` with PIL's save ``options``."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` RGB, with only a few bytes of pixel data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
