"""What one request carries: a file's encoded bytes (for ``image_classifier_encoded``, decoded by the server)
or raw RGB pixels (for ``image_classifier``), and which of the two kinds an item is."""
from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from .errors import ImageReadError, file_access_error
from .images import as_request_batch, image_format, load_image

RAW_MODEL = "image_classifier"
ENCODED_MODEL = "image_classifier_encoded"
SEND_MODES = ("encoded", "raw")
MODELS = {"encoded": ENCODED_MODEL, "raw": RAW_MODEL}
SERVER_FORMATS = ("JPEG", "PNG")  # what image_classifier_encoded decodes; the server says "not a JPEG or PNG image"

# bytes (a JPEG/PNG file's contents) and paths go encoded; arrays (HxWx3 uint8 RGB) go raw.
ImageInput = Union[bytes, bytearray, memoryview, str, os.PathLike[str], npt.NDArray[Any]]


def is_encoded(item: object) -> bool:
    """Whether ``item`` is sent as encoded bytes (bytes or a path) rather than as raw pixels (an array)."""
    return isinstance(item, (bytes, bytearray, memoryview, str, os.PathLike))


def read_encoded(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image file, as stored (not decoded here)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            return stream.read()
    except OSError as exc:
        raise (file_access_error(name, exc) or ImageReadError(name, f"cannot read: {exc.strerror or exc}")) from None


def as_encoded_batch(data: bytes | bytearray | memoryview) -> npt.NDArray[np.object_]:
    """One encoded image as the encoded ensemble's input, a [1, 1] BYTES tensor."""
    batch = np.empty((1, 1), dtype=np.object_)
    batch[0, 0] = bytes(data)
    return batch


def as_request_tensor(item: ImageInput) -> tuple[str, npt.NDArray[Any]]:
    """The send mode ("encoded" or "raw") of ``item`` and its request tensor; paths are read as bytes."""
    if isinstance(item, (str, os.PathLike)):
        return "encoded", as_encoded_batch(read_encoded(item))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "encoded", as_encoded_batch(item)
    return "raw", as_request_batch(item)


def load_file(path: str | os.PathLike[str], send: str) -> npt.NDArray[Any]:
    """The request tensor for an image file: its bytes (``send="encoded"``) or its pixels decoded here
    (``send="raw"``, EXIF orientation applied)."""
    if send == "encoded":
        return as_encoded_batch(read_encoded(path))
    if send == "raw":
        return as_request_batch(load_image(path))
    raise ValueError(f"send must be one of {', '.join(SEND_MODES)}, got {send!r}")


def raw_hint(path: str | os.PathLike[str], server_error: str) -> str:
    """For a file the server refused as not JPEG or PNG: what it is and to send it as pixels, where Pillow can
    read it (e.g. "it is a GIF image: the server decodes only JPEG and PNG; send it as pixels: --send raw");
    else ""."""
    if "not a JPEG or PNG image" not in server_error:
        return ""
    found = image_format(path)
    if found is None or found in SERVER_FORMATS:
        return ""
    return f"it is a {found} image: the server decodes only JPEG and PNG; send it as pixels: --send raw"
