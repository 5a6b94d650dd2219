"""What the preprocess model was given, as Prometheus counters beside Triton's own (custom metrics API).

- ``pixelserve_preprocess_images_total{outcome,reason}``: images preprocessed (``ok``/``none``), requests
  rejected for bad input (``rejected``/dtype|rank|channels|empty|oversized|undecodable|both_inputs|missing,
  one per request; ``undecodable``: an encoded file that could not become an image), and images
  of a batch that failed as a whole (``failed``/``error``).
- ``pixelserve_preprocess_images_by_size_total{size}`` and ``pixelserve_preprocess_input_pixels_total``:
  accepted images by input size bucket (height x width, at most the named frame's pixel count) and the
  pixels they carried.
- ``pixelserve_stage_seconds_total{model="preprocess",stage}``: time in copy_in / decode / kernel / hand_off
  (``PREPROCESS_STAGES`` groups the PhaseTimer phases).
"""
from __future__ import annotations

from typing import Any, Iterable

from .counters import CounterFamily

IMAGES_NAME = "pixelserve_preprocess_images_total"
SIZE_NAME = "pixelserve_preprocess_images_by_size_total"
PIXELS_NAME = "pixelserve_preprocess_input_pixels_total"

# Size buckets: (label, most pixels). Camera/video frame sizes, so a dashboard reads "mostly 1080p".
SIZE_BUCKETS = (("vga", 640 * 480), ("720p", 1280 * 720), ("1080p", 1920 * 1080), ("4k", 3840 * 2160))
LARGER = "larger"

# The preprocess model's phases (PhaseTimer names in model.py and pixelserve.kernels_numba.serving/gpu) by stage:
# copy-in = reading the request tensors and staging them to the device, decode = decoding encoded files,
# kernel = launch parameters, the kernel and waiting for it, hand-off = the batch's copy to page-locked host
# memory (to_host) and building the output tensors.
PREPROCESS_STAGES = {"read_inputs": "copy_in", "stage_h2d": "copy_in", "decode": "decode", "params": "kernel",
                     "kernel": "kernel", "sync": "kernel", "to_host": "hand_off",
                     "outputs": "hand_off"}  # fmt: skip


def size_bucket(height: int, width: int) -> str:
    """The label of the smallest bucket holding height x width pixels."""
    pixels = height * width
    return next((label for label, most in SIZE_BUCKETS if pixels <= most), LARGER)


class ImageMetrics:
    """Counts images by outcome and size in one ``execute``; ``flush`` sends them to Triton."""

    def __init__(self, metric_family: Any = None) -> None:
        self._images = CounterFamily(metric_family, IMAGES_NAME, "Images given to preprocess, by outcome and reason",
                                     ("outcome", "reason"))
        self._sizes = CounterFamily(metric_family, SIZE_NAME, "Accepted images by input size bucket", ("size",))
        self._pixels = CounterFamily(metric_family, PIXELS_NAME, "Input pixels (height x width) of accepted images", ())

    def accepted(self, shapes: Iterable[tuple[int, ...]]) -> None:
        """Images preprocessed successfully, by their HWC shapes."""
        for height, width, *_ in shapes:
            self._images.add(1, "ok", "none")
            self._sizes.add(1, size_bucket(height, width))
            self._pixels.add(height * width)

    def rejected(self, reason: str) -> None:
        """A request answered with a bad-input error."""
        self._images.add(1, "rejected", reason)

    def failed(self, images: int) -> None:
        """Images of a batch that failed as a whole (a server-side error)."""
        self._images.add(images, "failed", "error")

    def pending(self) -> dict[str, dict[tuple[str, ...], float]]:
        """What was counted since the last flush, per metric name."""
        return {family.name: family.pending() for family in (self._images, self._sizes, self._pixels)}

    def flush(self) -> None:
        """Send what was counted to Triton and start again from zero."""
        for family in (self._images, self._sizes, self._pixels):
            family.flush()
