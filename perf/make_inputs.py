"""Write perf_analyzer input data (JSON) made of real photographs from scikit-image, resized to given sizes.

Usage: python -m pixelserve.perf.make_inputs -o inputs.json [--size 1080x1920 ...] [--photos chelsea,coffee] [--count N]

Each entry of ``data`` is one request of batch 1: ``{"images": {"content": ..., "shape": [H, W, 3]}}``.
The shape excludes the batch dimension (perf_analyzer adds it from ``-b``); ``content`` is either the flat
row-major list of uint8 values or ``{"b64": ...}`` of the raw bytes (4x smaller files for large images).
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

# Photographs bundled inside the scikit-image package (no download needed).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
DEFAULT_SIZE = (1080, 1920)
# A spread of camera-like sizes, portrait and landscape, for a ragged-batch workload.
MIXED_SIZES = ((480, 640), (720, 1280), (1080, 1920), (1920, 1080), (600, 800), (1080, 1080))
ENCODINGS = ("flat", "b64", "jpeg")
JPEG_QUALITY = 90


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1080x1920 (height x width), got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def photo(name: str) -> np.ndarray:
    """A real RGB photograph from ``skimage.data`` as contiguous HWC uint8."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def resized_photo(name: str, height: int, width: int, crop: int = 0) -> np.ndarray:
    """A photograph rescaled to height x width (area filter to shrink, cubic to enlarge); ``crop`` > 0 first cuts
    that many pixels off its top and left edges, so that each crop is another image of the same scene."""
    image = photo(name)
    image = image[crop % (image.shape[0] // 4):, crop % (image.shape[1] // 4):]
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def make_images(sizes: list[tuple[int, int]], photos: list[str], count: int | None = None) -> list[np.ndarray]:
    """``count`` images (default: max(len(sizes), len(photos))), cycling through photos and sizes together; past
    the first cycle each image is a crop of its photo, so that every entry is a distinct image (and file)."""
    count = count or max(len(sizes), len(photos))
    cycle = len(photos) * len(sizes) // math.gcd(len(photos), len(sizes))
    return [resized_photo(photos[i % len(photos)], *sizes[i % len(sizes)], crop=3 * (i // cycle)) for i in range(count)]


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """The image as a JPEG file's bytes, as a camera or a client would hold it."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as JPEG")
    return encoded.tobytes()


def tensor_entry(image: np.ndarray, encoding: str = "flat") -> dict:
    """One tensor of perf_analyzer input data: content plus the shape without the batch dimension.

    ``jpeg`` is for the encoded ensemble: a one-element BYTES tensor holding the JPEG file."""
    if encoding == "jpeg":
        data = jpeg_bytes(image)  # perf_analyzer sends b64 content as the serialized BYTES tensor: length + bytes
        return {"content": {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode("ascii")}, "shape": [1]}
    if encoding == "flat":
        content: object = image.ravel().tolist()
    elif encoding == "b64":
        content = {"b64": base64.b64encode(image.tobytes()).decode("ascii")}
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return {"content": content, "shape": list(image.shape)}


def write_input_data(path: str | Path, images: list[np.ndarray], input_name: str = "images", encoding: str = "flat") -> Path:
    """Write ``{"data": [{input_name: {...}}, ...]}`` (one entry per image, used round-robin) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"data": [{input_name: tensor_entry(image, encoding)} for image in images]}
    with open(path, "w") as handle:
        json.dump(document, handle, separators=(",", ":"))
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--size", type=parse_size, action="append", help="HxW, repeatable (default 1080x1920)")
    parser.add_argument("--mixed", action="store_true", help=f"use the mixed sizes {MIXED_SIZES}")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated skimage.data photo names")
    parser.add_argument("--count", type=int, help="number of entries (default: max(#sizes, #photos))")
    parser.add_argument("--input-name", default="images")
    parser.add_argument("--encoding", choices=ENCODINGS, default="flat", help="flat list of values, base64 bytes, or JPEG files (for image_classifier_encoded)")
    args = parser.parse_args(argv)
    sizes = list(MIXED_SIZES) if args.mixed else (args.size or [DEFAULT_SIZE])
    images = make_images(sizes, [p for p in args.photos.split(",") if p], args.count)
    path = write_input_data(args.output, images, args.input_name, args.encoding)
    shapes = sorted({image.shape for image in images})
    print(f"wrote {path}: {len(images)} entries, shapes {shapes}, {path.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
