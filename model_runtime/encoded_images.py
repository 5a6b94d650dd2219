"""Encoded requests for `preprocess`: one JPEG/PNG file per request, decoded where the instance runs.

A GPU instance decodes the encoded requests of a batch in one call with nvImageCodec
(pixelserve.model_runtime.gpu_decoding) and keeps the pixels on the GPU for the kernels; a CPU instance, or a
GPU instance without nvImageCodec, decodes with PIL (pixelserve.model_runtime.decoding) on a few threads.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import numpy.typing as npt

from .decoding import DecodeError, decode_image


# A request's encoded input: a batch of one file, [1, 1] (the config's dims are [1]).
ENCODED_SHAPE = (1, 1)


def one_encoded_image(encoded: npt.NDArray[Any]) -> bytes:
    """The one encoded file of a request's [1, 1] BYTES tensor (DecodeError for any other shape).

    The shape is checked, not only the count: Triton 2.51 keeps a request's batch size in 32 bits, so a
    request to this model declaring [2^32, 1] reaches it as shape [1], and answered, went back without its
    batch dimension (triton-inference-server/core#434 fixed the 32 bits upstream in April 2025).
    """
    if encoded.shape != ENCODED_SHAPE:
        if encoded.ndim == len(ENCODED_SHAPE) and encoded.size != 1:
            raise DecodeError(f"send one encoded image per request, got {encoded.size}")
        raise DecodeError(f"send one encoded image per request as a {list(ENCODED_SHAPE)} BYTES tensor "
                          f"([batch, 1] with batch 1), got shape {list(encoded.shape)}")
    return bytes(encoded.reshape(-1)[0])


HARDWARE_LOAD_PARAMETER = "gpu_hardware_load"
HARDWARE_MIN_PIXELS_PARAMETER = "gpu_hardware_min_pixels"
Number = TypeVar("Number", int, float)


def checked_hardware_load(load: float, what: str) -> float:
    """``load`` if it is a fraction from 0 to 1 (the hardware engines' share of a batch), else ValueError naming
    ``what``."""
    if not 0.0 <= load <= 1.0:  # NaN too
        raise ValueError(f"{what}: expected a fraction from 0 to 1")
    return load


def checked_min_pixels(pixels: int, what: str) -> int:
    """``pixels`` if it is a pixel count (0 or more), else ValueError naming ``what``."""
    if pixels < 0:
        raise ValueError(f"{what}: expected a pixel count, 0 or more")
    return pixels


def hardware_load_parameter(parameters: Mapping[str, str]) -> float:
    """The fraction of a batch's JPEGs for the hardware JPEG engines (ValueError unless from 0 to 1)."""
    return _checked_parameter(parameters, HARDWARE_LOAD_PARAMETER, float, checked_hardware_load)


def hardware_min_pixels_parameter(parameters: Mapping[str, str]) -> int:
    """The pixel count below which JPEGs skip the hardware JPEG engines (ValueError unless a count, 0 or more)."""
    return _checked_parameter(parameters, HARDWARE_MIN_PIXELS_PARAMETER, int, checked_min_pixels)


def _checked_parameter(parameters: Mapping[str, str], name: str, parse: Callable[[str], Number],
                       check: Callable[[Number, str], Number]) -> Number:
    text = parameters[name]
    try:
        value = parse(text)
    except ValueError:
        value = parse("-1")  # refused by every check, with the text in the message
    return check(value, f"parameter {name}={text!r}")


class ImageDecoder:
    """Decodes a batch of encoded images; each gets its HWC uint8 RGB pixels (a CUDA tensor on a GPU
    instance with nvImageCodec, else a numpy array) or its own DecodeError.

    ``parameters`` are the model config's: ``max_image_side``, ``decode_threads``, ``gpu_hardware_load``,
    ``gpu_hardware_min_pixels`` and ``gpu_decoder_options`` (model_repository/preprocess/config.pbtxt documents them).
    """

    def __init__(self, parameters: Mapping[str, str], device_id: int | None = None,
                 warn: Callable[[str], None] = print) -> None:  # fmt: skip
        self.max_side = int(parameters["max_image_side"])
        threads = int(parameters["decode_threads"])
        hardware_load = hardware_load_parameter(parameters)
        hardware_min_pixels = hardware_min_pixels_parameter(parameters)
        self._gpu: Any = None
        self._pool: ThreadPoolExecutor | None = None
        if device_id is not None:
            try:
                from .gpu_decoding import GpuBatchDecoder

                self._gpu = GpuBatchDecoder(device_id, self.max_side, cpu_threads=threads,
                                            options=parameters["gpu_decoder_options"],
                                            hardware_load=hardware_load, hardware_min_pixels=hardware_min_pixels)
            except ImportError as exc:  # a GPU host without nvImageCodec or torch (the Triton container image)
                warn(f"GPU instance without GPU decoding ({exc}); decoding with PIL")
        if self._gpu is None:
            self._pool = ThreadPoolExecutor(max_workers=threads)
        self.description = self._gpu.backends if self._gpu is not None else f"PIL on {threads} threads"

    def decode(self, batch: Sequence[bytes], cuda_stream: int | None = None) -> list[Any]:
        """Pixels or a DecodeError for each encoded image, in order. A GPU decoder given ``cuda_stream`` (a raw
        CUDA stream) returns them queued on that stream, not yet complete (GpuBatchDecoder.decode)."""
        if self._gpu is not None:
            return self._gpu.decode(batch, cuda_stream)  # type: ignore[no-any-return]
        assert self._pool is not None
        return list(self._pool.map(self._decode_on_cpu, batch))

    def decode_each(self, batch: Sequence[bytes], on_failure: Callable[[Exception], None],
                    cuda_stream: int | None = None) -> list[Any]:
        """As ``decode``; where the decoder itself fails (not one file), every image of the batch gets a
        DecodeError and ``on_failure`` is told why."""
        try:
            return self.decode(batch, cuda_stream)
        except Exception as exc:
            on_failure(exc)
            return [DecodeError(f"decoding failed: {exc}")] * len(batch)

    def warm_up(self, batch: int = 1, size: tuple[int, int] | None = None) -> None:
        """Decode a baseline JPEG (the hardware engines) and a PNG (the default decoders) now: nvImageCodec
        sets its decoders up on their first call, which took about 1 s per instance on the H100. With
        ``size``, a GPU decoder also decodes ``batch`` JPEGs of that (height, width), so that it holds the
        memory for such a batch before the first request."""
        batches = [_warm_up_files()]
        if size is not None and self._gpu is not None:
            # A batch of one and a full batch each: on the H100 the hardware decoder's first call at a new batch
            # size took 330-470 ms (2.9 s with 8 instances at once), even after a bigger batch.
            big = _jpeg_file(size)
            batches += [[big], [big] * batch]
        for files in batches:
            for result in self.decode(files):
                if isinstance(result, DecodeError):
                    raise RuntimeError(f"decoder warm-up failed: {result}")

    def _decode_on_cpu(self, data: bytes) -> npt.NDArray[np.uint8] | DecodeError:
        try:
            return decode_image(data, self.max_side)
        except DecodeError as exc:
            return exc

    def close(self) -> None:
        """Stop the decoding threads and let go of the GPU decoder."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._gpu = None


def _jpeg_file(size: tuple[int, int]) -> bytes:
    """A baseline JPEG of smooth pixels of the given (height, width), made by PIL."""
    from PIL import Image

    height, width = size
    ramp = (np.arange(height)[:, None] + np.arange(width)[None, :]) % 256
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _warm_up_files() -> list[bytes]:
    """A baseline JPEG and a PNG of random pixels, made by PIL."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8)
    files = []
    for image_format in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, image_format)
        files.append(buffer.getvalue())
    return files
