"""Independent references for the preprocessing: torch / OpenCV resizes, normalised in float64, and PIL.

torch's float64 bilinear computes tap positions in float64, so it is the default reference; OpenCV
computes them in float32 even for float64 images (about 0.03 of a level off at 4000-pixel widths) and
is used as a cross-check.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from pixelserve.build.reference_images import normalise, pil_preprocess, pil_resized, torchvision_resize_size
from pixelserve.kernels_numba import PreprocessSpec

# The PIL reference (pil_resized, pil_preprocess) is the one in pixelserve.build.reference_images, which the
# ONNX export check uses too; it is re-exported here beside the torch / OpenCV / numpy ones.
__all__ = ["cv2_resize", "denormalise", "normalise", "numpy_crop_resize", "pil_preprocess", "pil_resized",
           "reference_preprocess", "torch_resize", "torchvision_resize_size"]


def cv2_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres, computed in float64 by OpenCV (no antialias)."""
    out = cv2.resize(rgb.astype(np.float64), (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(height, width, rgb.shape[2])  # cv2 drops a channel axis of size 1


def torch_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize by torch ``F.interpolate(align_corners=False, antialias=False)`` in float64."""
    tensor = torch.from_numpy(rgb.astype(np.float64)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def numpy_crop_resize(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Resize(shorter)+CenterCrop computed only inside the crop, in float64 numpy (for extreme aspect ratios
    whose full resize would not fit in memory; cross-checked against OpenCV on moderate shapes)."""
    h, w = rgb.shape[:2]
    shorter = int(round(min(spec.out_height, spec.out_width) / spec.crop_fraction))
    new_h, new_w = torchvision_resize_size(h, w, shorter)
    top = int(round((new_h - spec.out_height) / 2.0))
    left = int(round((new_w - spec.out_width) / 2.0))

    def taps(start: int, count: int, src: int, dst: int):
        pos = (np.arange(start, start + count) + 0.5) * (src / dst) - 0.5
        pos = np.clip(pos, 0, src - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, pos - lo

    y0, y1, fy = taps(top, spec.out_height, h, new_h)
    x0, x1, fx = taps(left, spec.out_width, w, new_w)
    img = rgb.astype(np.float64)
    fx3 = fx[None, :, None]
    top_row = img[y0][:, x0] * (1 - fx3) + img[y0][:, x1] * fx3
    bottom_row = img[y1][:, x0] * (1 - fx3) + img[y1][:, x1] * fx3
    fy3 = fy[:, None, None]
    return top_row * (1 - fy3) + bottom_row * fy3


def reference_preprocess(image: np.ndarray, spec: PreprocessSpec, resize=torch_resize) -> np.ndarray:
    """float64 [3, H, W]: what the kernels must produce for one uint8 HWC image."""
    rgb = image[..., ::-1] if spec.input_order == "BGR" else image
    h, w = rgb.shape[:2]
    oh, ow = spec.out_height, spec.out_width
    if spec.resize_mode == "stretch":
        resized = resize(rgb, oh, ow)
    elif spec.resize_mode == "shorter_side_crop":
        shorter = int(round(min(oh, ow) / spec.crop_fraction))
        new_h, new_w = torchvision_resize_size(h, w, shorter)
        if new_h * new_w > 50_000_000:
            resized = numpy_crop_resize(rgb, spec)
        else:
            full = resize(rgb, new_h, new_w)
            top, left = int(round((new_h - oh) / 2.0)), int(round((new_w - ow) / 2.0))
            resized = full[top:top + oh, left:left + ow]
    else:
        scale = min(oh / h, ow / w)
        new_h = min(oh, max(1, int(round(h * scale))))
        new_w = min(ow, max(1, int(round(w * scale))))
        resized = np.full((oh, ow, 3), spec.pad_value, np.float64)
        top, left = (oh - new_h) // 2, (ow - new_w) // 2
        resized[top:top + new_h, left:left + new_w] = resize(rgb, new_h, new_w)
    return normalise(resized, spec)


def denormalise(chw: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """float64 HWC pixel values (0..255) of a normalised CHW output: undoes (x / 255 - mean) / std."""
    hwc = chw.astype(np.float64).transpose(1, 2, 0)
    return (hwc * np.array(spec.std) + np.array(spec.mean)) * 255.0
