"""Requests for the two ensembles in tests: JPEG bytes of an image, gRPC inputs for encoded and raw images,
and the skip for hosts without GPU decoding."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import HAS_GPU


def jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """``image`` as JPEG bytes (PIL, the given quality)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def encoded_input(grpcclient, data: bytes):
    """The ``images`` input of image_classifier_encoded: one file's bytes as a [1, 1] BYTES tensor."""
    tensor = grpcclient.InferInput("images", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=object))
    return tensor


def raw_input(grpcclient, image: np.ndarray):
    """The ``images`` input of image_classifier: one HWC uint8 image as [1, H, W, 3]."""
    tensor = grpcclient.InferInput("images", [1, *image.shape], "UINT8")
    tensor.set_data_from_numpy(image[None])
    return tensor


def require_gpu_decoding() -> None:
    """Skip the calling test or fixture unless this host has a CUDA GPU and nvImageCodec."""
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    try:
        from pixelserve.runtime.gpu_decoding import nvimgcodec_module

        nvimgcodec_module()
    except ImportError as exc:
        pytest.skip(f"needs nvImageCodec: {exc}")
