"""Raw CUDA streams owned by another library (the kernels' numba stream) as torch streams."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@functools.lru_cache(maxsize=None)
def external_stream(handle: int, device_index: int) -> torch.cuda.ExternalStream:
    """torch's view of the raw CUDA stream ``handle`` (a CUstream) on GPU ``device_index``, made once per stream."""
    import torch

    return torch.cuda.ExternalStream(handle, device=device_index)  # type: ignore[no-untyped-call]
