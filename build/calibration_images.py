"""Real photographs shipped with scikit-image, and deterministic random crops/rescalings of them.

They feed INT8 calibration and the INT8-vs-FP32 agreement measurement; no network access needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import numpy.typing as npt

# Colour photographs in skimage.data (stereo_motorcycle gives two views of one scene).
COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
)
# Greyscale photographs, replicated to three channels.
GREY_PHOTOS = ("camera", "coins", "moon", "clock", "grass", "gravel", "brick")
PHOTO_NAMES = COLOUR_PHOTOS + GREY_PHOTOS

Image = npt.NDArray[np.uint8]
Pixels = npt.NDArray[np.float32]

MIN_SIDE = 32  # no view is smaller than this many pixels on its short side


def load_photo(name: str) -> Image:
    """Return the skimage.data photograph `name` as an HxWx3 uint8 RGB array."""
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        image = left if name == "motorcycle_left" else right
    else:
        image = getattr(data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def real_photos(names: Sequence[str] = PHOTO_NAMES) -> dict[str, Image]:
    """The named photographs, in order, as HxWx3 uint8 RGB arrays."""
    return {name: load_photo(name) for name in names}


def random_view(image: Image, rng: np.random.Generator) -> Image:
    """One random crop (10-100 % of the area, aspect 3:4-4:3), rescaled 0.4x-2x, flipped half the time."""
    height, width = image.shape[:2]
    area = rng.uniform(0.1, 1.0) * height * width
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    crop_w = int(np.clip(round(np.sqrt(area * aspect)), MIN_SIDE, width))
    crop_h = int(np.clip(round(np.sqrt(area / aspect)), MIN_SIDE, height))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    view = image[top : top + crop_h, left : left + crop_w]

    scale = float(np.exp(rng.uniform(np.log(0.4), np.log(2.0))))
    scale = max(scale, MIN_SIDE / min(crop_h, crop_w))
    size = (max(MIN_SIDE, round(crop_w * scale)), max(MIN_SIDE, round(crop_h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = np.asarray(cv2.resize(view, size, interpolation=interpolation), dtype=np.uint8)
    if rng.random() < 0.5:
        resized = resized[:, ::-1]
    return np.ascontiguousarray(resized)


def random_views(photos: Sequence[Image], count: int, seed: int) -> list[Image]:
    """`count` random views drawn round-robin from `photos`; the same seed gives the same views."""
    rng = np.random.default_rng(seed)
    return [random_view(photos[i % len(photos)], rng) for i in range(count)]


def load_spec(preprocess_config: Path) -> Any:
    """The served preprocessing recipe (a pixelserve.kernels_numba.PreprocessSpec) read from its config.pbtxt."""
    from .classifier_config import preprocess_spec

    if not Path(preprocess_config).is_file():
        raise FileNotFoundError(f"preprocessing config {preprocess_config} not found: calibration must use the served recipe")
    return preprocess_spec(Path(preprocess_config))


def preprocess(images: Sequence[Image], spec: Any) -> Pixels:
    """Preprocess uint8 RGB images exactly as the served ``preprocess`` model does: float32 [N,3,H,W]."""
    from pixelserve.kernels_numba import preprocess_cpu

    return np.asarray(preprocess_cpu(list(images), spec), dtype=np.float32)


def pixel_step(spec: Any) -> Pixels:
    """float32 [3]: how much one uint8 pixel step moves each normalised channel."""
    return np.asarray(spec.normalisation()[0], dtype=np.float32)
