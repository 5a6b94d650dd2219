"""Type names for the arrays the kernels take, for readers and mypy (numba ignores annotations).

The per-pixel functions run on numpy arrays in the CPU kernels and on CUDA device arrays of the same
dtypes in the CUDA kernels; their annotations name the numpy form. numba.cuda, CuPy and cuda.bindings
have no type information, so their objects are ``Any`` under a name that says what they are.
"""
from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Pixels: TypeAlias = npt.NDArray[np.uint8]  # HWC uint8 images, one image or several packed back to back
Params: TypeAlias = npt.NDArray[np.float64]  # per-image parameter rows [N, PARAM_COLUMNS], or one row (pixel_math)
Norm: TypeAlias = npt.NDArray[np.float32]  # [3, 3] normalisation table (PreprocessSpec.normalisation)
Rows: TypeAlias = npt.NDArray[np.float32]  # horizontally filtered rows of the antialiased path
Output: TypeAlias = npt.NDArray[np.floating[Any]]  # [N, 3, H, W] float32 or float16 batch

CudaArray: TypeAlias = Any  # a C-contiguous CUDA array: numba device array, CuPy array or torch tensor
CudaStream: TypeAlias = Any  # a numba.cuda stream
Image: TypeAlias = Any  # one HWC uint8 image: host numpy array (Pixels) or CudaArray
