"""Real photographs, what the model must answer on them, and the independent PIL ImageNet reference.

The reference is deliberately plain (PIL resize + numpy in float64), written without the kernels'
geometry, so it can judge both the exported classifier and the project's own preprocessing kernels.
The tests and the ONNX export check both use it: there is one PIL reference.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from pixelserve.kernels_numba import PreprocessSpec

# skimage.data photographs used as the fixed check set.
PHOTO_NAMES = ("chelsea", "coffee", "astronaut", "rocket")

# What EfficientNet-Lite0 must answer on two of them: 281-285 are the cat
# classes of ImageNet (285 Egyptian cat), 967 is espresso.
EXPECTED_TOP1 = {"chelsea": range(281, 286), "coffee": range(967, 968)}


def load_photo(name: str) -> np.ndarray:
    """Return the skimage.data photograph `name` as an HxWx3 uint8 RGB array."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def torchvision_resize_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """torchvision ``Resize(shorter)`` output size (long side truncated), written independently here."""
    if width <= height:
        return int(shorter * height / width), shorter
    return shorter, int(shorter * width / height)


def normalise(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """float64 HWC in [0, 255] -> float64 CHW, (x / 255 - mean) / std."""
    out = (rgb / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    return out.transpose(2, 0, 1)


def pil_resized(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 HWC RGB: PIL ``Image.resize(BILINEAR)`` (antialiased) + the spec's crop or letterbox."""
    rgb = image[..., ::-1] if spec.input_order == "BGR" else image
    pil = Image.fromarray(np.ascontiguousarray(rgb))
    h, w = rgb.shape[:2]
    oh, ow = spec.out_height, spec.out_width
    if spec.resize_mode == "stretch":
        return np.asarray(pil.resize((ow, oh), Image.BILINEAR))
    if spec.resize_mode == "shorter_side_crop":
        shorter = int(round(min(oh, ow) / spec.crop_fraction))
        new_h, new_w = torchvision_resize_size(h, w, shorter)
        top, left = int(round((new_h - oh) / 2.0)), int(round((new_w - ow) / 2.0))
        return np.asarray(pil.resize((new_w, new_h), Image.BILINEAR).crop((left, top, left + ow, top + oh)))
    scale = min(oh / h, ow / w)
    new_h = min(oh, max(1, int(round(h * scale))))
    new_w = min(ow, max(1, int(round(w * scale))))
    canvas = Image.new("RGB", (ow, oh), (int(spec.pad_value),) * 3)
    canvas.paste(pil.resize((new_w, new_h), Image.BILINEAR), ((ow - new_w) // 2, (oh - new_h) // 2))
    return np.asarray(canvas)


def pil_preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """float64 [3, H, W]: PIL-resized image normalised like the kernels (the training-time pipeline)."""
    return normalise(pil_resized(image, spec).astype(np.float64), spec)


def reference_batch(names: Sequence[str] = PHOTO_NAMES, spec: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """The named photographs PIL-preprocessed for ImageNet (default spec: 256 shorter side, 224 crop), N x 3 x H x W."""
    return np.stack([pil_preprocess(load_photo(name), spec) for name in names]).astype(np.float32)
