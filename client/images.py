"""Images as the server wants them: RGB uint8 arrays, decoded from files on the client."""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError, InvalidImage, file_access_error

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def load_image(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """Decode an image file to an HxWx3 uint8 RGB array, upright per its EXIF orientation.

    Only the first frame of animations is used; transparent pixels are composited over white.
    """
    name = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns (on stderr) about oversized images and palette transparency; errors still raise.
            warnings.simplefilter("ignore")
            with Image.open(name) as img:
                return to_rgb_array(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image file (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(name, f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated or corrupt data surfaces as any of these, depending on the format plugin.
        opened = file_access_error(name, exc) if isinstance(exc, OSError) else None
        raise (opened or ImageReadError(name, f"cannot decode image: {exc}")) from None


def image_format(path: str | os.PathLike[str]) -> str | None:
    """The format Pillow recognises in the file's header (e.g. "GIF", "WEBP"), without decoding; None if none."""
    try:
        with Image.open(os.fspath(path)) as img:
            return str(img.format) if img.format else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def to_rgb_array(img: Image.Image) -> npt.NDArray[np.uint8]:
    """Convert a PIL image of any mode to an HxWx3 uint8 RGB array."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # convert("RGB") would clip 16-bit values at 255 instead of scaling them
        gray = (np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def as_request_batch(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Check that ``image`` is HxWx3 uint8 and return it as a batch of one, [1, H, W, 3]."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise InvalidImage(f"image must be uint8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise InvalidImage(f"image must be HxWx3 (RGB), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidImage(f"image is empty: shape {array.shape}")
    return np.ascontiguousarray(array)[None]
