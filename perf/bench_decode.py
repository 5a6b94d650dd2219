"""Decode + preprocess benchmark: JPEG files of real photos -> 3x224x224, several ways, in one run.

For JPEG q90 files (OpenCV encoder, as perf/make_inputs.py writes them) of the skimage photos at 480p, 1080p
and 4K, a batch of N distinct files each (the size `mix`: the served six-size mix, 480x640 to 1920x1080, in one batch), prints images/s and us per image side by side:
  ours        nvImageCodec on the GPU as shipped (preprocess's gpu_hardware_load: that fraction of the batch's JPEGs
              to the hardware JPEG engines, the rest to the CUDA decoders; pixelserve.model_runtime.gpu_decoding),
              then our numba.cuda preprocessing; pixels never leave the GPU
  ours@L      the same with gpu_hardware_load L (ours@1: engines first; ours@0: the CUDA decoders only);
  ours@L:P    ... and gpu_hardware_min_pixels P (JPEGs under P pixels to the CUDA decoders, the rest as ours@L)
  ours-decode the decode of `ours` alone (no preprocessing): what decoding costs inside preprocess
  dali@L      NVIDIA DALI: fn.decoders.image(device="mixed", hw_decoder_load=L), fn.resize(resize_shorter, antialias)
              and fn.crop_mirror_normalize to CHW in the spec's dtype: the same pipeline, DALI's way
  pil         PIL (our CPU decode path, pixelserve.model_runtime.decoding) on a thread per core, then our kernels
              (the host images are copied to the GPU by the preprocessing, as in the served CPU-decode path)
  opencv      cv2.imdecode on a thread per core (+ BGR->RGB), then our kernels
  torchvision torchvision.io.decode_jpeg(device="cuda") on the batch, then F.interpolate (bilinear,
              antialias) + centre crop + normalise in torch (what users write)
Times are wall clock per batch (host work included: header parsing, Huffman decoding on the CPU for some
backends), the GPU synchronised before the clock stops; median of --repeat batches after 5 warm-up batches.
With --processes N, N processes (each its own CUDA context, as N served instances have) run each cell at once,
started together, and the cell's images/s is all their images over the slowest one's time: what the GPU's
decoders give a server of N instances (us per image is then per process).
Without a GPU the GPU columns are skipped (saying why) and the CPU decoders feed the njit kernels. DALI needs
nvidia-dali-cuda130 and, for its mixed decoder, libnvimgcodec.so on LD_LIBRARY_PATH (the nvImageCodec wheel's
nvidia/nvimgcodec folder).
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
from typing import Any, Callable

import cv2
import numpy as np

from pixelserve.build.classifier_config import preprocess_parameters, preprocess_spec
from pixelserve.kernels_numba import PreprocessSpec
from pixelserve.model_runtime.decoding import decode_image
from pixelserve.model_runtime.encoded_images import (checked_hardware_load, checked_min_pixels, hardware_load_parameter,
                                                     hardware_min_pixels_parameter)

from .dali_pipeline import decode_resize_normalise, run_batch
from .make_inputs import MIXED_SIZES, PHOTOS, jpeg_bytes, parse_size, resized_photo

DEFAULT_SIZES = "480x640,1080x1920,2160x3840"
MAX_SIDE = 8192
COLUMNS = ("ours", "ours@1", "ours@0.8", "ours@0.65", "ours@0.5", "ours@0", "ours-decode", "dali@0.65", "dali@0.9",
           "pil", "opencv", "torchvision")
FIXED_COLUMNS = ("ours", "ours-decode", "pil", "opencv", "torchvision")
GPU_COLUMN_PREFIXES = ("ours", "dali@", "torchvision")


MIX = "mix"


def jpeg_batch(sizes: list[tuple[int, int]], count: int) -> list[bytes]:
    """``count`` distinct JPEG q90 files of the photos, the sizes (height, width) in turn (shifted so that no two
    are equal)."""
    files = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        image = resized_photo(PHOTOS[i % len(PHOTOS)], height, width)
        files.append(jpeg_bytes(np.ascontiguousarray(np.roll(image, 7 * i, axis=1))))
    return files


def mean_kb(files: list[bytes]) -> float:
    """The files' mean size in kB, to 0.1."""
    return round(sum(map(len, files)) / len(files) / 1e3, 1)


WARMUP_BATCHES = 5  # the hardware decoders' and the CPU pools' first batches after a column's set-up are slower


def median_seconds(run: Callable[[], object], repeat: int, warmup: int = WARMUP_BATCHES) -> float:
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


def column_load(column: str) -> float | None:
    """The hardware decoder load a column names (``ours@0.65``, ``ours@1:500000``, ``dali@0.9``), None for the
    others."""
    if "@" not in column:
        return None
    return checked_hardware_load(float(column.split("@", 1)[1].split(":")[0]), column)


def column_min_pixels(column: str) -> int | None:
    """The hardware decoder's pixel threshold a column names (``ours@1:500000``), None where it names none."""
    if ":" not in column:
        return None
    return checked_min_pixels(int(column.split(":", 1)[1]), column)


def check_columns(columns: list[str]) -> list[str]:
    """The columns that are neither fixed nor ``ours@L`` / ``dali@L`` with L from 0 to 1."""
    bad = []
    for column in columns:
        try:
            ok = column in FIXED_COLUMNS or (column.split("@")[0] in ("ours", "dali") and column_load(column) is not None)
            ok = ok and (column_min_pixels(column) is None or column.startswith("ours@"))
        except ValueError:
            ok = False
        if not ok:
            bad.append(column)
    return bad


class Runners:
    """Every column's decode+preprocess of one batch of files; each returns the [N, 3, H, W] output."""

    def __init__(self, spec: PreprocessSpec, batch: int, threads: int, columns: list[str], options: str = "") -> None:
        self.spec = spec
        self.batch = batch
        self.threads = threads
        self.options = options
        self.pool = ThreadPoolExecutor(threads)
        self.skipped: dict[str, str] = {}
        self.decoders: dict[str, object] = {}
        self.dali: dict[str, object] = {}
        self.gpu_reason = cuda_available()
        if self.gpu_reason:
            from pixelserve.kernels_numba.serving import CpuRunner

            self.kernels = CpuRunner(spec)
            for column in columns:
                if column.startswith(GPU_COLUMN_PREFIXES):
                    self.skipped[column] = self.gpu_reason
        else:
            from pixelserve.kernels_numba.serving import CudaRunner

            self.kernels = CudaRunner(spec, 0, batch)
            for column in columns:
                if column.startswith("ours"):
                    self._gpu_decoder(column)
                elif column.startswith("dali@"):
                    self._dali_pipeline(column)
            if "torchvision" in columns:
                self._torchvision()
        self.kernels.warm_up()

    @property
    def device(self) -> str:
        """The GPU the columns run on, or "CPU only"."""
        return "CPU only" if self.gpu_reason else _gpu_name()

    def _gpu_decoder(self, column: str) -> None:
        load, min_pixels = column_load(column), column_min_pixels(column)
        if load is None:  # ours, ours-decode: as shipped
            load = hardware_load_parameter(preprocess_parameters())
        if min_pixels is None:
            min_pixels = 0 if "@" in column else hardware_min_pixels_parameter(preprocess_parameters())
        try:
            from pixelserve.model_runtime.gpu_decoding import GpuBatchDecoder

            decoder = GpuBatchDecoder(0, MAX_SIDE, cpu_threads=os.cpu_count() or 1, options=self.options,
                                      hardware_load=load, hardware_min_pixels=min_pixels)
        except ImportError as exc:
            self.skipped[column] = str(exc)
            return
        if load > 0 and decoder.hardware is None:
            self.skipped[column] = f"no hardware JPEG decoder here ({decoder.hardware_error}): see ours@0"
            return
        print(f"{column}: {decoder.backends}")
        self.decoders[column] = decoder

    def _dali_pipeline(self, column: str) -> None:
        """A DALI pipeline for ``column``'s hardware decoder load: decode, resize the shorter side, crop, normalise."""
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as exc:
            self.skipped[column] = f"DALI missing (pip install nvidia-dali-cuda130): {exc}"
            return
        try:  # every dali@L column names its load L
            pipe = decode_resize_normalise(self.spec, self.batch, self.threads, 0, column_load(column) or 0.0)
        except Exception as exc:  # a DALI without its mixed decoder (libnvimgcodec.so not found), a build error
            self.skipped[column] = f"DALI pipeline failed to build: {exc}"
            return
        self.dali[column] = pipe

    def _torchvision(self) -> None:
        try:
            import torchvision.io  # noqa: F401
        except ImportError as exc:
            self.skipped["torchvision"] = f"torchvision missing: {exc}"

    def run(self, column: str, files: list[bytes]) -> object:
        """Decode and preprocess ``files`` the way ``column`` does; complete on return."""
        if column.startswith("ours"):
            decoder = self.decoders[column]  # ours-decode has its own, built as shipped
            images = decoder.decode(files)  # type: ignore[attr-defined]  # complete on return
            bad = [str(image) for image in images if isinstance(image, Exception)]
            if bad:
                raise RuntimeError(f"{column}: {len(bad)} files not decoded, first: {bad[0]}")
            return images if column == "ours-decode" else self.kernels.run(images)
        if column.startswith("dali@"):
            return self._dali_run(column, files)
        if column == "pil":
            return self.kernels.run(list(self.pool.map(lambda data: decode_image(data, MAX_SIDE), files)))
        if column == "opencv":
            return self.kernels.run(list(self.pool.map(_opencv_decode, files)))
        if column == "torchvision":
            return self._torch_pipeline(files)
        raise ValueError(f"unknown column {column!r}")

    def _dali_run(self, column: str, files: list[bytes]) -> object:
        """One batch through the column's DALI pipeline; its [N, C, H, W] output (a DALI TensorListGPU), complete."""
        import torch

        output = run_batch(self.dali[column], files)
        torch.cuda.synchronize()  # every stream of the device, DALI's too
        return output

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
    """A host copy of a numpy, CuPy (the GPU runner's choice where installed), torch or DALI batch."""
    if isinstance(output, np.ndarray):
        return output
    if hasattr(output, "as_cpu"):  # a DALI TensorList
        return np.array(output.as_cpu().as_tensor())  # type: ignore[attr-defined]
    if hasattr(output, "get"):  # CuPy
        return output.get()  # type: ignore[no-any-return]
    return output.cpu().numpy()  # type: ignore[attr-defined, no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--batch", type=int, default=64, help="files per batch (default 64)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"comma list of HxW or {MIX} (the six-size mix in one batch; default {DEFAULT_SIZES})")
    # 5 batches (a few ms at 480p) gave the engines' 480p figure a wide spread between runs (docs/performance.md R26)
    parser.add_argument("--repeat", type=int, default=20, help="timed batches per cell (median; default 20)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU decode threads (default: all cores)")
    parser.add_argument("--options", default="", help='nvImageCodec decoder options, e.g. ":fancy_upsampling=1"')
    parser.add_argument("--processes", type=int, default=1,
                        help="run each cell in this many processes at once and add their images up (default 1)")
    parser.add_argument("--columns", default=",".join(COLUMNS),
                        help=f"comma list of {', '.join(FIXED_COLUMNS)}, ours@L, ours@L:P, dali@L "
                             f"(default {','.join(COLUMNS)})")
    args = parser.parse_args(argv)
    sizes = {size: list(MIXED_SIZES) if size == MIX else [parse_size(size)] for size in args.sizes.split(",") if size}
    columns = [c for c in args.columns.split(",") if c]
    unknown = check_columns(columns)
    if unknown:
        parser.error(f"unknown columns {unknown}; choose from {', '.join(FIXED_COLUMNS)}, ours@L, ours@L:P or dali@L "
                     f"(L from 0 to 1, P a pixel count)")
    spec = preprocess_spec()
    if args.processes > 1:
        rows, skipped, device = _run_processes(args, spec, sizes, columns)
    else:
        rows, skipped, device = _run_cells(args, spec, sizes, columns)
    _print_table(rows, columns, skipped)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "threads": args.threads, "batch": args.batch, "options": args.options,
                                         "processes": args.processes, "skipped": skipped, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


def _run_cells(args: argparse.Namespace, spec: PreprocessSpec, sizes: dict[str, list[tuple[int, int]]],
               columns: list[str]) -> tuple[list[dict], dict[str, str], str]:
    """Every (size, column) cell in this process: the rows, the skipped columns and the device."""
    runners = Runners(spec, args.batch, args.threads, columns, args.options)
    device = runners.device
    print(f"device: {device}; CPU threads: {args.threads}; batch {args.batch}; nvImageCodec options {args.options!r}; "
          f"spec: {spec}")
    for column in columns:
        if column in runners.skipped:
            print(f"{column}: skipped ({runners.skipped[column]})")
    rows = []
    for size, shapes in sizes.items():
        files = jpeg_batch(shapes, args.batch)
        reference = None
        for column in columns:
            if column in runners.skipped:
                continue
            seconds = median_seconds(lambda: runners.run(column, files), args.repeat)
            row = {"size": size, "file_kb": mean_kb(files), "batch": args.batch, "column": column,
                   "images_per_s": args.batch / seconds, "us_per_image": seconds / args.batch * 1e6}
            if column != "ours-decode":
                output = _host(runners.run(column, files))
                reference = output if reference is None else reference
                # how far this column's model input is from the first column's (decoder and resize differences)
                row["max_abs_diff_vs_first"] = float(np.abs(output - reference).max())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows, runners.skipped, device


def _run_processes(args: argparse.Namespace, spec: PreprocessSpec, sizes: dict[str, list[tuple[int, int]]],
                   columns: list[str]) -> tuple[list[dict], dict[str, str], str]:
    """Every cell in ``args.processes`` processes at once: images/s is their images over the slowest one's time."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a CUDA context of its own in each
    start = context.Barrier(args.processes)
    results = context.Queue()
    workers = [context.Process(target=_worker, args=(args, spec, sizes, columns, start, results))
               for _ in range(args.processes)]
    for worker in workers:
        worker.start()
    done: dict[tuple[str, str], list[tuple[int, float, float]]] = {}
    skipped: dict[str, str] = {}
    device = ""
    while any(worker.is_alive() for worker in workers) or not results.empty():
        try:
            message = results.get(timeout=1.0)
        except Exception:  # queue.Empty
            continue
        if message[0] == "setup":
            skipped, device = message[1], message[2]
            continue
        _, size, column, images, seconds, kb = message
        done.setdefault((size, column), []).append((images, seconds, kb))
    for worker in workers:
        worker.join()
    print(f"device: {device}; {args.processes} processes at once; batch {args.batch} each; "
          f"nvImageCodec options {args.options!r}; spec: {spec}")
    rows = []
    for (size, column), cells in done.items():
        if len(cells) != args.processes:
            raise RuntimeError(f"{size} {column}: {len(cells)} of {args.processes} processes reported")
        images, slowest = sum(cell[0] for cell in cells), max(cell[1] for cell in cells)
        row = {"size": size, "file_kb": cells[0][2], "batch": args.batch, "column": column, "processes": args.processes,
               "images_per_s": images / slowest, "us_per_image": slowest / (images / args.processes) * 1e6}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows, skipped, device


def _worker(args: argparse.Namespace, spec: PreprocessSpec, sizes: dict[str, list[tuple[int, int]]],
            columns: list[str], start: Any, results: Any) -> None:
    """One of --processes: set up, then time each cell's --repeat batches from a start shared with the others."""
    runners = Runners(spec, args.batch, args.threads, columns, args.options)
    results.put(("setup", runners.skipped, runners.device))
    for size, shapes in sizes.items():
        files = jpeg_batch(shapes, args.batch)
        kb = mean_kb(files)
        for column in columns:
            if column in runners.skipped:
                continue
            for _ in range(WARMUP_BATCHES):
                runners.run(column, files)
            start.wait(timeout=600)  # a process that failed breaks the barrier for the others
            began = time.perf_counter()
            for _ in range(args.repeat):
                runners.run(column, files)
            results.put(("cell", size, column, args.batch * args.repeat, time.perf_counter() - began, kb))


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
