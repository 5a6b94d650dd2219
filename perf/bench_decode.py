"""Decode + preprocess benchmark: JPEG files of real photos -> 3x224x224 float32, several ways, in one run.

For JPEG q90 files (OpenCV encoder, as perf/make_inputs.py writes them) of the skimage photos at 480p, 1080p
and 4K, a batch of N distinct files each, prints images/s and us per image side by side:
  ours        nvImageCodec on the GPU (hardware JPEG engines, default backends for the rest;
              pixelserve.model_runtime.gpu_decoding), then our numba.cuda preprocessing, pixels never leave the GPU
  ours-sw     the same with nvImageCodec's default backends only (no hardware engines)
  ours-decode the decode of `ours` alone (no preprocessing): what decoding costs inside preprocess
  pil         PIL (our CPU decode path, pixelserve.model_runtime.decoding) on a thread per core, then our kernels
              (the host images are copied to the GPU by the preprocessing, as in the served CPU-decode path)
  opencv      cv2.imdecode on a thread per core (+ BGR->RGB), then our kernels
  torchvision torchvision.io.decode_jpeg(device="cuda") on the batch, then F.interpolate (bilinear,
              antialias) + centre crop + normalise in torch (what users write)
Times are wall clock per batch (host work included: header parsing, Huffman decoding on the CPU for some
backends), the GPU synchronised before the clock stops; median of --repeat batches after a warm-up.
Without a GPU the GPU columns are skipped (saying why) and the CPU decoders feed the njit kernels.
Run: python -m pixelserve.perf.bench_decode [--json OUT.json] [--batch 64] [--sizes 480x640,1080x1920,2160x3840]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from pixelserve.build.classifier_config import preprocess_spec
from pixelserve.kernels_numba import PreprocessSpec
from pixelserve.model_runtime.decoding import decode_image

from .make_inputs import PHOTOS, jpeg_bytes, parse_size, resized_photo

DEFAULT_SIZES = "480x640,1080x1920,2160x3840"
MAX_SIDE = 8192
COLUMNS = ("ours", "ours-sw", "ours-decode", "pil", "opencv", "torchvision")


def jpeg_batch(height: int, width: int, count: int) -> list[bytes]:
    """``count`` distinct JPEG q90 files of the photos at height x width (shifted so that no two are equal)."""
    files = []
    for i in range(count):
        image = resized_photo(PHOTOS[i % len(PHOTOS)], height, width)
        files.append(jpeg_bytes(np.ascontiguousarray(np.roll(image, 7 * i, axis=1))))
    return files


def median_seconds(run: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """Median wall time of run() (which returns only when its GPU work is complete)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cuda_available() -> str:
    """Empty when a CUDA GPU is usable through torch, else why not."""
    try:
        import torch
    except ImportError as exc:
        return f"torch missing: {exc}"
    return "" if torch.cuda.is_available() else "no CUDA GPU visible to torch"


class Runners:
    """Every column's decode+preprocess of one batch of files; each returns the [N, 3, H, W] output."""

    def __init__(self, spec: PreprocessSpec, batch: int, threads: int, options: str = "") -> None:
        self.spec = spec
        self.options = options
        self.pool = ThreadPoolExecutor(threads)
        self.skipped: dict[str, str] = {}
        self.gpu_reason = cuda_available()
        if self.gpu_reason:
            from pixelserve.kernels_numba.serving import CpuRunner

            self.kernels = CpuRunner(spec)
            for column in ("ours", "ours-sw", "ours-decode", "torchvision"):
                self.skipped[column] = self.gpu_reason
        else:
            from pixelserve.kernels_numba.serving import CudaRunner

            self.kernels = CudaRunner(spec, 0, batch)
            self._gpu_decoders()
            self._torchvision()
        self.kernels.warm_up()

    def _gpu_decoders(self) -> None:
        try:
            from pixelserve.model_runtime.gpu_decoding import GpuBatchDecoder

            threads = os.cpu_count() or 1
            self.decoder = GpuBatchDecoder(0, MAX_SIDE, cpu_threads=threads, options=self.options)
            self.decoder_sw = GpuBatchDecoder(0, MAX_SIDE, cpu_threads=threads, options=self.options, hardware=False)
        except ImportError as exc:
            self.skipped["ours"] = self.skipped["ours-sw"] = self.skipped["ours-decode"] = str(exc)
            return
        print(f"ours: {self.decoder.backends}; ours-sw: {self.decoder_sw.backends}")
        if self.decoder.hardware is None:
            self.skipped["ours"] = f"no hardware JPEG decoder here ({self.decoder.hardware_error}): see ours-sw"
            self.skipped["ours-decode"] = self.skipped["ours"]

    def _torchvision(self) -> None:
        try:
            import torchvision.io  # noqa: F401
        except ImportError as exc:
            self.skipped["torchvision"] = f"torchvision missing: {exc}"

    def run(self, column: str, files: list[bytes]) -> object:
        """Decode and preprocess ``files`` the way ``column`` does; complete on return."""
        if column in ("ours", "ours-sw", "ours-decode"):
            decoder = self.decoder_sw if column == "ours-sw" else self.decoder
            images = decoder.decode(files)  # complete on return
            bad = [str(image) for image in images if isinstance(image, Exception)]
            if bad:
                raise RuntimeError(f"{column}: {len(bad)} files not decoded, first: {bad[0]}")
            return images if column == "ours-decode" else self.kernels.run(images)
        if column == "pil":
            return self.kernels.run(list(self.pool.map(lambda data: decode_image(data, MAX_SIDE), files)))
        if column == "opencv":
            return self.kernels.run(list(self.pool.map(_opencv_decode, files)))
        if column == "torchvision":
            return self._torch_pipeline(files)
        raise ValueError(f"unknown column {column!r}")

    def _torch_pipeline(self, files: list[bytes]) -> object:
        """torchvision GPU decode, then resize shorter side (bilinear, antialias), centre crop, normalise."""
        import torch
        import torchvision.io

        spec = self.spec
        data = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
        images = torchvision.io.decode_jpeg(data, device="cuda", mode=torchvision.io.ImageReadMode.RGB)
        outputs = []
        for group in _same_size_groups(images):  # one interpolate per image size (a batch here is one size)
            batch = torch.stack(group).float()
            height, width = batch.shape[-2:]
            short = int(round(spec.out_height / spec.crop_fraction))
            size = (short, int(round(short * width / height))) if height <= width else (int(round(short * height / width)), short)
            resized = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
            top, left = (size[0] - spec.out_height) // 2, (size[1] - spec.out_width) // 2
            crop = resized[:, :, top:top + spec.out_height, left:left + spec.out_width]
            mean = torch.tensor(spec.mean, device="cuda").view(1, 3, 1, 1)
            std = torch.tensor(spec.std, device="cuda").view(1, 3, 1, 1)
            outputs.append((crop / 255.0 - mean) / std)
        out = torch.cat(outputs)
        torch.cuda.synchronize()
        return out


def _opencv_decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _same_size_groups(images: list) -> list[list]:
    groups: dict[tuple, list] = {}
    for image in images:
        groups.setdefault(tuple(image.shape), []).append(image)
    return list(groups.values())


def _host(output: object) -> np.ndarray:
    """A host copy of a numpy, CuPy (the GPU runner's choice where installed) or torch batch."""
    if isinstance(output, np.ndarray):
        return output
    if hasattr(output, "get"):  # CuPy
        return output.get()  # type: ignore[no-any-return]
    return output.cpu().numpy()  # type: ignore[attr-defined, no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--batch", type=int, default=64, help="files per batch (default 64)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma list of HxW (default {DEFAULT_SIZES})")
    parser.add_argument("--repeat", type=int, default=5, help="timed batches per cell (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU decode threads (default: all cores)")
    parser.add_argument("--options", default="", help='nvImageCodec decoder options, e.g. ":fancy_upsampling=1"')
    parser.add_argument("--columns", default=",".join(COLUMNS), help=f"comma list of {', '.join(COLUMNS)}")
    args = parser.parse_args(argv)
    sizes = [parse_size(size) for size in args.sizes.split(",") if size]
    columns = [c for c in args.columns.split(",") if c]
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        parser.error(f"unknown columns {unknown}; choose from {', '.join(COLUMNS)}")
    spec = preprocess_spec()
    runners = Runners(spec, args.batch, args.threads, args.options)
    device = "CPU only" if runners.gpu_reason else _gpu_name()
    print(f"device: {device}; CPU threads: {args.threads}; batch {args.batch}; nvImageCodec options {args.options!r}; "
          f"spec: {spec}")
    for column in columns:
        if column in runners.skipped:
            print(f"{column}: skipped ({runners.skipped[column]})")
    rows = []
    for height, width in sizes:
        files = jpeg_batch(height, width, args.batch)
        mean_kb = sum(map(len, files)) / len(files) / 1e3
        reference = None
        for column in columns:
            if column in runners.skipped:
                continue
            seconds = median_seconds(lambda: runners.run(column, files), args.repeat)
            row = {"size": f"{height}x{width}", "file_kb": round(mean_kb, 1), "batch": args.batch, "column": column,
                   "images_per_s": args.batch / seconds, "us_per_image": seconds / args.batch * 1e6}
            if column != "ours-decode":
                output = _host(runners.run(column, files))
                reference = output if reference is None else reference
                # how far this column's model input is from the first column's (decoder and resize differences)
                row["max_abs_diff_vs_first"] = float(np.abs(output - reference).max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    _print_table(rows, columns, runners.skipped)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "threads": args.threads, "batch": args.batch, "options": args.options,
                                         "skipped": runners.skipped, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def _print_table(rows: list[dict], columns: list[str], skipped: dict[str, str]) -> None:
    shown = [c for c in columns if c not in skipped]
    print(f"\n{'size':<11}{'kB':>6}" + "".join(f"{c:>22}" for c in shown) + "   (images/s | us per image)")
    for size in dict.fromkeys(row["size"] for row in rows):
        cells = {row["column"]: row for row in rows if row["size"] == size}
        first = next(iter(cells.values()))
        line = f"{size:<11}{first['file_kb']:>6.0f}"
        for column in shown:
            row = cells.get(column)
            line += f"{row['images_per_s']:>13.0f} | {row['us_per_image']:>6.0f}" if row else f"{'-':>22}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
