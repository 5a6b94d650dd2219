"""Real photographs and an independent ImageNet preprocessing reference.

The reference is deliberately plain (PIL + numpy in float64) so it can judge
both the exported classifier and the project's own preprocessing kernels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_SHORTER = 256
CROP = 224

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


def reference_preprocess(image: np.ndarray) -> np.ndarray:
    """Map an HxWx3 uint8 RGB image to a 3x224x224 float32 ImageNet tensor.

    Shorter side resized to 256 (PIL bilinear), centre crop 224, then
    (x/255 - mean) / std computed in float64.
    """
    pil = Image.fromarray(image)
    width, height = pil.size
    scale = RESIZE_SHORTER / min(width, height)
    size = (max(CROP, round(width * scale)), max(CROP, round(height * scale)))
    pil = pil.resize(size, Image.BILINEAR)
    left = (size[0] - CROP) // 2
    top = (size[1] - CROP) // 2
    pil = pil.crop((left, top, left + CROP, top + CROP))

    pixels = np.asarray(pil, dtype=np.float64) / 255.0
    pixels = (pixels - np.asarray(IMAGENET_MEAN)) / np.asarray(IMAGENET_STD)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def reference_batch(names=PHOTO_NAMES) -> np.ndarray:
    """Return the named photographs preprocessed and stacked as Nx3x224x224."""
    return np.stack([reference_preprocess(load_photo(name)) for name in names])
