"""Encoded images (JPEG, PNG) in, HWC uint8 RGB out, on the CPU with PIL.

PIL is the decoder because it reads the header before any pixel memory is allocated (so an oversized
image is refused first), applies EXIF orientation, converts CMYK JPEGs (Adobe-inverted included) and
palette/grey/16-bit PNGs, and is the reference the preprocessing is trained against; its decoders
release the GIL, so `preprocess` decodes the files of a request batch on several threads.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from .png_data import missing_data

FORMATS = ("JPEG", "PNG")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


class DecodeError(ValueError):
    """Bytes that cannot become an image; the message says why."""


# The errors both decoders (this one and pixelserve.model_runtime.gpu_decoding) raise, worded once.
def empty_error() -> DecodeError:
    """The error for a request that sent no bytes."""
    return DecodeError("encoded image is empty (0 bytes)")


def not_an_image_error(data: bytes) -> DecodeError:
    """The error for bytes that are not a JPEG or PNG file."""
    return DecodeError(f"not a JPEG or PNG image ({len(data)} bytes, starting {data[:8].hex()})")


def check_header_size(width: int, height: int, max_side: int) -> None:
    """Raise DecodeError when a header declares an empty image or a side above ``max_side``."""
    if width < 1 or height < 1:
        raise DecodeError(f"image header declares an empty image ({width}x{height})")
    if max(width, height) > max_side:
        raise DecodeError(
            f"image header declares {height}x{width}, above the maximum side of {max_side} pixels "
            "(refused before decoding)"
        )


def undecodable_error(image_format: str, reason: object) -> DecodeError:
    """The error for a file whose header is fine but whose data cannot be decoded (truncated, corrupt)."""
    return DecodeError(f"undecodable {image_format} image: {reason}")


def _open(data: bytes, max_side: int) -> Image.Image:
    if len(data) == 0:
        raise empty_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise not_an_image_error(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"image refused before decoding: {exc}") from None
    check_header_size(*image.size, max_side)
    return image


def _rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    """HWC uint8 RGB of a loaded image of any supported mode (alpha dropped, 16 bits scaled to 8)."""
    if image.mode in SIXTEEN_BIT_MODES:
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)  # 16-bit grey: keep the high byte
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
    pixels = np.asarray(image)
    return np.ascontiguousarray(pixels[..., :3])


def decode_image(data: bytes, max_side: int) -> npt.NDArray[np.uint8]:
    """Decode JPEG or PNG bytes into an HWC uint8 RGB array, EXIF orientation applied.

    Raises DecodeError naming the problem for empty, non-image, truncated, corrupt or oversized input.
    """
    data = bytes(data)
    image = _open(data, max_side)
    if image.format == "PNG":
        reason = missing_data(data)  # PIL would fill what is missing with zeros
        if reason is not None:
            raise undecodable_error("PNG", reason)
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # not exif_transpose(image): that copies every image, turned or not
        return _rgb(image)
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's decoders report corrupt data with these
        raise undecodable_error(str(image.format), exc) from None
