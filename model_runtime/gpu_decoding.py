"""Encoded images (JPEG, PNG) in, HWC uint8 RGB on the GPU out: a whole request batch per call, with nvImageCodec.

Each file's header is read first (nvimgcodec.CodeStream parses it without decoding), so that empty,
non-image and oversized inputs are refused before any pixel memory is allocated, with the same errors
as the CPU decoder (pixelserve.model_runtime.decoding). The accepted JPEGs go to the GPU's hardware JPEG
engines in one batched call (baseline JPEG only), or a set fraction of them does while the CUDA decoders take
the rest; JPEGs below a set pixel count go to the CUDA decoders in a call of their own. What those calls refuse
(progressive JPEG, CMYK, PNG, ...) goes, in one more call, to nvImageCodec's default decoders (CUDA nvJPEG, and
CPU codecs for PNG).
Both apply EXIF orientation and convert grey, CMYK, alpha and 16-bit images to 8-bit RGB.

The decoded images are C-contiguous torch CUDA tensors: complete when returned, or, where the caller
names a CUDA stream (its preprocessing kernels' own), queued on that stream, so that the host stages the
batch while the GPU still decodes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .cuda_streams import external_stream
from .decoding import DecodeError, check_header_size, empty_error, not_an_image_error, undecodable_error
from .encoded_images import checked_hardware_load, checked_min_pixels
from .png_data import missing_data

# nvImageCodec's codec names -> the format names the CPU decoder's errors use.
FORMATS = {"jpeg": "JPEG", "png": "PNG"}
JPEG_END = b"\xff\xd9"
JPEG_START_OF_SCAN = 0xDA
JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG's end-of-image marker follows its first scan (False: the file was cut short).

    Checked before decoding because the GPU decoders are not relied on to notice a cut file (a decoder
    that fills the missing rows would return an image where PIL, the CPU path, refuses it). The marker
    segments before the scan are skipped by their lengths, so that an EXIF thumbnail's own end marker
    does not count; data after the end marker (phones append a motion-photo video there) is allowed.
    """
    position = 2  # after the start-of-image marker
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return True  # not the marker structure expected here: the decoders will judge the file
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == JPEG_START_OF_SCAN:  # entropy-coded data follows, where 0xFFD9 only ends the image
            # Searched from the end, where the marker is: the same answer as find(), and 0.5 us instead of
            # 300 us for a 240 kB file (CPython's forward search of this 2-byte needle; a profile of the decoder's phases
            # measured the header phase at 4 ms of a 10 ms batch of 32 1080p files on the H100).
            return data.rfind(JPEG_END, position) != -1
        elif marker in JPEG_STANDALONE_MARKERS:
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return False  # the file ends before its first scan


def nvimgcodec_module() -> Any:
    """The nvidia.nvimgcodec module (ImportError names the wheels when it is missing)."""
    try:
        from nvidia import nvimgcodec
    except ImportError as exc:
        raise ImportError(
            f"GPU decoding needs nvImageCodec: pip install -r requirements-gpu-decode.txt "
            f"(nvidia-nvimgcodec-cu13, nvidia-nvjpeg): {exc}") from exc
    return nvimgcodec


@dataclass(frozen=True)
class Header:
    """What a file's header says, read before decoding."""

    image_format: str
    width: int
    height: int
    stream: Any  # nvimgcodec.CodeStream


def read_header(nvimgcodec: Any, data: bytes, max_side: int) -> Header:
    """The header of one encoded image, or DecodeError (empty, not JPEG/PNG, empty or oversized image)."""
    if len(data) == 0:
        raise empty_error()
    try:
        stream = nvimgcodec.CodeStream(data)
        image_format = FORMATS.get(stream.codec_name)
        width, height = int(stream.width), int(stream.height)
    except (RuntimeError, ValueError):  # nvImageCodec: "Failed to get image info"
        raise not_an_image_error(data) from None
    if image_format is None:  # a format nvImageCodec reads but the CPU path does not take (BMP, TIFF, ...)
        raise not_an_image_error(data)
    check_header_size(width, height, max_side)
    if image_format == "JPEG" and not jpeg_is_complete(data):
        raise undecodable_error(image_format, "no end-of-image marker after the scan data (truncated file)")
    if image_format == "PNG":
        reason = missing_data(data)
        if reason is not None:
            raise undecodable_error(image_format, reason)
    return Header(image_format, width, height, stream)


class GpuBatchDecoder:
    """Decodes a batch of encoded images on one GPU; each image gets its pixels or its own DecodeError."""

    def __init__(self, device_id: int, max_side: int, cpu_threads: int = 0, options: str = "",
                 hardware_load: float = 1.0, hardware_min_pixels: int = 0) -> None:  # fmt: skip
        checked_hardware_load(hardware_load, f"hardware_load={hardware_load}")
        checked_min_pixels(hardware_min_pixels, f"hardware_min_pixels={hardware_min_pixels}")
        self.nvimgcodec = nvimgcodec_module()
        self.hardware_load = hardware_load
        self.hardware_min_pixels = hardware_min_pixels
        self.device = torch.device("cuda", device_id)
        self.max_side = max_side
        self.params = self.nvimgcodec.DecodeParams(
            apply_exif_orientation=True, color_spec=self.nvimgcodec.ColorSpec.SRGB, allow_any_depth=False,
            sample_format=self.nvimgcodec.SampleFormat.I_RGB)
        self.hardware_error = ""
        self.hardware = self._hardware_decoder(device_id, cpu_threads, options) if hardware_load > 0 else None
        kinds = self.nvimgcodec.BackendKind
        # The CUDA decoders alone, for the JPEGs the engines are not given (a load of 0, files below the pixel
        # threshold, GPUs without engines): nvImageCodec's default backends would put the engines first again.
        # Not made where the engines take every JPEG (the shipped setting): each decoder holds its own memory.
        self.cuda = None
        if self.hardware is None or hardware_min_pixels > 0:
            self.cuda = self.nvimgcodec.Decoder(device_id=device_id, max_num_cpu_threads=cpu_threads, options=options,
                                                backends=[self.nvimgcodec.Backend(kinds.GPU_ONLY),
                                                          self.nvimgcodec.Backend(kinds.HYBRID_CPU_GPU)])
        self.fallback = self.nvimgcodec.Decoder(device_id=device_id, max_num_cpu_threads=cpu_threads, options=options)

    def _hardware_decoder(self, device_id: int, cpu_threads: int, options: str) -> Any:
        """The JPEG decoder that uses the hardware JPEG engines, or None (reason in ``hardware_error``) on GPUs without
        them. Below a load of 1 it hands that fraction of a batch to the engines and the rest, at the same time,
        to the CUDA decoders (nvImageCodec's load hint, DALI's ``hw_decoder_load``)."""
        kinds = self.nvimgcodec.BackendKind
        backends = [self.nvimgcodec.Backend(kinds.HW_GPU_ONLY, load_hint=self.hardware_load)]
        if self.hardware_load < 1.0:
            backends += [self.nvimgcodec.Backend(kinds.GPU_ONLY), self.nvimgcodec.Backend(kinds.HYBRID_CPU_GPU)]
        try:
            return self.nvimgcodec.Decoder(device_id=device_id, max_num_cpu_threads=cpu_threads, backends=backends,
                                           options=options)
        except (RuntimeError, ValueError) as exc:
            self.hardware_error = str(exc)
            return None

    @property
    def backends(self) -> str:
        """Which decoders run, for the log."""
        if self.hardware is None:
            reason = f" ({self.hardware_error})" if self.hardware_error else ""
            return f"nvImageCodec CUDA decoders, no hardware JPEG decoder{reason}; default backends for what they refuse"
        small = (f"JPEGs under {self.hardware_min_pixels} pixels to the CUDA decoders; "
                 if self.hardware_min_pixels else "")
        if self.hardware_load < 1.0:
            return (f"nvImageCodec: {small}{self.hardware_load:g} of each batch's other JPEGs to the hardware JPEG "
                    f"decoder, the rest to the CUDA decoders; default backends for what they refuse")
        return f"nvImageCodec: {small}hardware JPEG decoder for the JPEGs, default backends for the rest"

    def decode(self, batch: Sequence[bytes], cuda_stream: int | None = None) -> list[torch.Tensor | DecodeError]:
        """One HWC uint8 RGB CUDA tensor (C-contiguous) or one DecodeError per encoded image. The tensors are
        complete on return, or, with ``cuda_stream`` (a raw CUDA stream), for work queued after them on that stream:
        decode() then returns once the decoding is queued (on the H100 0.2 of 1.2 ms for a 1080p JPEG)."""
        results: list[torch.Tensor | DecodeError] = [DecodeError("not decoded")] * len(batch)
        headers: dict[int, Header] = {}
        for index, data in enumerate(batch):
            try:
                headers[index] = read_header(self.nvimgcodec, bytes(data), self.max_side)
            except DecodeError as exc:
                results[index] = exc
        with torch.cuda.device(self.device):
            stream = self._stream(cuda_stream)
            with torch.cuda.stream(stream):  # DLPack imports and the tensors' conversions are queued there too
                self._decode_all(headers, results, stream)
            if cuda_stream is None:
                stream.synchronize()  # the preprocessing copies them on another stream as soon as we return
        return results

    def _stream(self, handle: int | None) -> torch.cuda.Stream:
        """torch's current stream on the decoder's GPU, or the caller's raw stream (wrapped once)."""
        if handle is None:
            return torch.cuda.current_stream(self.device)
        return external_stream(handle, self.device.index)

    def _decode_all(self, headers: dict[int, Header], results: list[torch.Tensor | DecodeError],
                    stream: torch.cuda.Stream) -> None:
        """Decode the files whose headers were read into ``results``: the JPEGs on the hardware engines and the
        CUDA decoders (the engines' work queued first, so that they run while the CUDA decoders' host part does),
        then what those refuse on the default backends."""
        jpegs = [index for index in headers if headers[index].image_format == "JPEG"]
        refused = [index for index in headers if headers[index].image_format != "JPEG"]
        to_hardware: list[int] = []
        if self.hardware is not None:
            to_hardware = [i for i in jpegs if headers[i].width * headers[i].height >= self.hardware_min_pixels]
        on_hardware = set(to_hardware)
        to_cuda = [i for i in jpegs if i not in on_hardware]
        for decoder, indices in ((self.hardware, to_hardware), (self.cuda, to_cuda)):
            for index, image in zip(indices, self._decode(decoder, [headers[i] for i in indices], stream)):
                if image is None:
                    refused.append(index)  # not baseline JPEG (or corrupt): the default decoders try it
                else:
                    results[index] = image
        for index, image in zip(refused, self._decode(self.fallback, [headers[i] for i in refused], stream)):
            image_format = headers[index].image_format
            results[index] = image if image is not None else undecodable_error(
                image_format, "nvImageCodec could not decode it (corrupt or unsupported data)")

    def _decode(self, decoder: Any, headers: list[Header], stream: torch.cuda.Stream) -> list[torch.Tensor | None]:
        """Decode in one call; None where the decoder could not decode an image."""
        if not headers:
            return []
        streams = [header.stream for header in headers]
        try:
            images = decoder.decode(streams, params=self.params, cuda_stream=stream.cuda_stream)
        except RuntimeError:  # one bad file must not fail its neighbours: decode one by one to find it
            images = [self._decode_one(decoder, code_stream, stream) for code_stream in streams]
        return [None if image is None else _rgb_tensor(image) for image in images]

    def _decode_one(self, decoder: Any, code_stream: Any, stream: torch.cuda.Stream) -> Any:
        try:
            return decoder.decode(code_stream, params=self.params, cuda_stream=stream.cuda_stream)
        except RuntimeError:
            return None


def _rgb_tensor(image: Any) -> torch.Tensor:
    """A C-contiguous HWC uint8 RGB tensor of a decoded nvimgcodec.Image (a view where no conversion was needed)."""
    try:
        tensor = torch.utils.dlpack.from_dlpack(image)
    except (TypeError, BufferError):  # a DLPack exchange torch and nvImageCodec disagree on: the CUDA array interface
        tensor = torch.as_tensor(image, device=f"cuda:{image.device_id}")
    if tensor.dtype != torch.uint8:  # allow_any_depth=False should give 8 bits already; keep the high byte
        tensor = (tensor.to(torch.int32) >> (8 * tensor.element_size() - 8)).to(torch.uint8)
    channels = tensor.shape[2]
    if channels == 1:
        tensor = tensor.expand(-1, -1, 3)
    elif channels == 4:
        tensor = tensor[..., :3]
    # The kernels' staging copies an image as one flat block: padded rows, a grey image's expanded channel
    # or a dropped alpha channel are made contiguous first (a device-to-device copy); the tensor keeps the
    # nvImageCodec Image it views alive.
    return tensor.contiguous()
