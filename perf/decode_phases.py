"""Where the GPU decoder's time goes: GpuBatchDecoder.decode on a batch of real-photo JPEGs, phase by phase,
beside nvImageCodec's own batched decode of the same files.

Rows (milliseconds per batch, median of --repeat after a warm-up, GPU synchronised where a phase ends):
  headers       read_header for every file (CodeStream + size and truncation checks)
  hw-decode     the hardware decoder's decode() call on the CodeStreams
  to-tensor     DLPack import + C-contiguous copy of every decoded image
  sync          waiting for the stream
  hw-alloc      hw-decode without the release of its images (allocation of new ones included)
  release       dropping the decoded images of one hw-decode (nvImageCodec frees their device memory)
  hw-reuse      hw-decode into the Images of an earlier decode (``images=``: no allocation, no release)
  hw-returned   hw-alloc until decode() returns, before the wait for the stream (how much of it the host is held)
  ours          GpuBatchDecoder.decode end to end
  nvimgcodec    nvImageCodec alone: Decoder(HW_GPU_ONLY).decode(list of bytes) + sync, same params
Run on a GPU host with nvImageCodec: python -m pixelserve.perf.decode_phases [--batch 32] [--sizes 1080x1920,480x640]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

from .bench_decode import MAX_SIDE, jpeg_batch, median_seconds
from .make_inputs import parse_size


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    return 1e3 * median_seconds(run, repeat, warmup=1)


def phases(files: list[bytes], repeat: int) -> dict[str, float]:
    """Milliseconds per batch for each row of the module docstring."""
    import torch

    from pixelserve.runtime import gpu_decoding

    decoder = gpu_decoding.GpuBatchDecoder(0, MAX_SIDE, cpu_threads=4)
    nvimgcodec = decoder.nvimgcodec
    stream = torch.cuda.current_stream()
    headers = [gpu_decoding.read_header(nvimgcodec, data, MAX_SIDE) for data in files]
    streams = [header.stream for header in headers]
    decoded = decoder.hardware.decode(streams, params=decoder.params, cuda_stream=stream.cuda_stream)
    stream.synchronize()
    padded = sum(not torch.utils.dlpack.from_dlpack(image).is_contiguous() for image in decoded)
    print(f"{len(files)} files: {padded} decoded images with padded rows or other non-contiguous layout")
    hardware_only = nvimgcodec.Decoder(device_id=0, max_num_cpu_threads=4,
                                       backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.HW_GPU_ONLY)])

    def alone() -> None:
        hardware_only.decode(files, params=decoder.params, cuda_stream=stream.cuda_stream)
        stream.synchronize()

    def hw_decode() -> None:
        decoder.hardware.decode(streams, params=decoder.params, cuda_stream=stream.cuda_stream)
        stream.synchronize()

    def to_tensor() -> None:
        for image in decoded:
            gpu_decoding._rgb_tensor(image)
        stream.synchronize()

    def split(reuse: bool) -> tuple[float, float, float]:
        """Median ms of the decode (to complete), of the release of its images and until decode() returned."""
        pool = decoder.hardware.decode(streams, params=decoder.params, cuda_stream=stream.cuda_stream)
        stream.synchronize()
        decode_times, release_times, returned_times = [], [], []
        for _ in range(repeat + 1):
            start = time.perf_counter()
            images = decoder.hardware.decode(streams, params=decoder.params, cuda_stream=stream.cuda_stream,
                                             images=pool if reuse else None)
            returned_times.append(time.perf_counter() - start)
            stream.synchronize()
            decoded_at = time.perf_counter()
            del images
            released_at = time.perf_counter()
            decode_times.append(decoded_at - start)
            release_times.append(released_at - decoded_at)
        return tuple(1e3 * statistics.median(times[1:]) for times in (decode_times, release_times, returned_times))

    hw_alloc, release, returned = split(reuse=False)
    hw_reuse, _, _ = split(reuse=True)
    return {
        "hw-alloc": hw_alloc,
        "release": release,
        "hw-reuse": hw_reuse,
        "hw-returned": returned,
        "headers": _median_ms(lambda: [gpu_decoding.read_header(nvimgcodec, data, MAX_SIDE) for data in files], repeat),
        "hw-decode": _median_ms(hw_decode, repeat),
        "to-tensor": _median_ms(to_tensor, repeat),
        "sync": _median_ms(stream.synchronize, repeat),
        "ours": _median_ms(lambda: decoder.decode(files), repeat),
        "nvimgcodec": _median_ms(alone, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one table: a row per phase, a column per image size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", default="1080x1920,480x640")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    sizes = [size.strip() for size in args.sizes.split(",")]
    results = {size: phases(jpeg_batch(*parse_size(size), args.batch), args.repeat) for size in sizes}
    print(f"\nms per batch of {args.batch} JPEG q90 files (median of {args.repeat})\n")
    print("| phase | " + " | ".join(sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for row in next(iter(results.values())):
        print(f"| {row} | " + " | ".join(f"{results[size][row]:.2f}" for size in sizes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
