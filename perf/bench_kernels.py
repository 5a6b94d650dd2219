"""Kernel benchmark on the GPU: our fused preprocessing vs the memory floor and vs torch / OpenCV peers.

For 1080x1920 uint8 frames -> 3x224x224 float32 (stretch and shorter-side+crop, antialias off and on)
at batch 1, 8 and 64, prints per-image times side by side, all measured in this one run:
  ours      fused numba.cuda kernel, CUDA events, median of warm repeats, inputs already on the GPU
  floor     (input bytes + output bytes) / device-to-device copy bandwidth measured here
  torch     F.interpolate (+antialias when on) + normalise, on the GPU (what users write)
  tv2       torchvision.transforms.v2.functional.resize(antialias=True) + normalise, on the GPU
  opencv    cv2.resize + normalise on the CPU, one thread per image over all cores
and the host-inclusive time of one batch-1 call (launch + wait), direct launch vs numba's dispatcher.
Run: python -m pixelserve.perf.bench_kernels [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from numba import cuda

from pixelserve.kernels_numba import PreprocessSpec
from pixelserve.kernels_numba.gpu import CudaPreprocessor

H, W = 1080, 1920
BATCHES = (1, 8, 64)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def median_ms(fn, warmup: int = 5, repeat: int = 30) -> float:
    """Median device time of fn() in milliseconds (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth, bytes read + written per second (GB/s)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeat=20)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def real_frames(n: int) -> list[np.ndarray]:
    """n distinct 1080p frames made from the skimage photographs (real content, not zeros)."""
    import skimage.data

    names = ["chelsea", "coffee", "astronaut", "rocket"]
    frames = []
    for i in range(n):
        img = getattr(skimage.data, names[i % 4])()[..., :3]
        frame = cv2.resize(img, (W, H), interpolation=cv2.INTER_CUBIC)
        frames.append(np.roll(frame, 17 * i, axis=1))  # distinct frames defeat caching across images
    return frames


def torch_peer(frames_nhwc: torch.Tensor, spec: PreprocessSpec, antialias: bool, use_tv2: bool) -> torch.Tensor:
    """What a user writes with torch on the GPU: resize (+crop) then normalise."""
    x = frames_nhwc.permute(0, 3, 1, 2)
    if spec.resize_mode == "stretch":
        size = [spec.out_height, spec.out_width]
    else:
        short = int(round(spec.out_height / spec.crop_fraction))
        size = [short, int(short * W / H)]
    if use_tv2:
        from torchvision.transforms.v2 import functional as F2

        x = F2.resize(x, size, antialias=True).float()
    else:
        x = torch.nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)
    if spec.resize_mode != "stretch":
        top, left = (size[0] - spec.out_height) // 2, (size[1] - spec.out_width) // 2
        x = x[:, :, top:top + spec.out_height, left:left + spec.out_width]
    return (x / 255.0 - MEAN.cuda()) / STD.cuda()


def opencv_peer(frames: list[np.ndarray], spec: PreprocessSpec, antialias: bool, pool: ThreadPoolExecutor) -> float:
    """Seconds for OpenCV on the CPU to preprocess the frames, one task per frame over all cores."""
    interp = cv2.INTER_AREA if antialias else cv2.INTER_LINEAR
    mean, std = np.array(spec.mean, np.float32), np.array(spec.std, np.float32)

    def one(img):
        if spec.resize_mode == "stretch":
            r = cv2.resize(img, (spec.out_width, spec.out_height), interpolation=interp)
        else:
            short = int(round(spec.out_height / spec.crop_fraction))
            r = cv2.resize(img, (int(short * W / H), short), interpolation=interp)
            top, left = (short - spec.out_height) // 2, (r.shape[1] - spec.out_width) // 2
            r = r[top:top + spec.out_height, left:left + spec.out_width]
        return ((r.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1).copy()

    list(pool.map(one, frames))  # warm
    times = []
    for _ in range(5):
        t = time.perf_counter()
        list(pool.map(one, frames))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_launch(pre: CudaPreprocessor, n: int, out) -> None:
    """The same kernels launched through numba's dispatcher, without our graph (as a user would call them)."""
    pre.launch(n, out, graph=False)


def host_call_us(pre: CudaPreprocessor, out, graph: bool, repeat: int = 2000) -> float:
    """Median wall time (us) of one batch-1 call (input on the GPU) including launch and wait for completion:
    our CUDA-graph launch, or numba's dispatcher as a user would call the kernel."""
    def call():
        if graph:
            pre.launch(1, out)
        else:
            plain_launch(pre, 1, out)
        pre.synchronize()

    for _ in range(100):
        call()
    times = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1e3


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()

    bandwidth = copy_bandwidth_gbs()
    frames = real_frames(max(BATCHES))
    frames_gpu = torch.from_numpy(np.stack(frames)).cuda()
    pool = ThreadPoolExecutor(os.cpu_count())
    # One stream for everything: the events, the torch peers and our kernels (graphs need a non-default stream).
    stream = torch.cuda.Stream()
    torch.cuda.set_stream(stream)
    numba_stream = cuda.external_stream(stream.cuda_stream)
    cv2.setNumThreads(1)
    print(f"GPU: {torch.cuda.get_device_name()}  D2D copy bandwidth: {bandwidth:.0f} GB/s  CPU threads: {os.cpu_count()}")
    rows = []
    for mode in ("stretch", "shorter_side_crop"):
        for antialias in (False, True):
            spec = PreprocessSpec(resize_mode=mode, antialias=antialias)
            pre = CudaPreprocessor(spec, stream=numba_stream, max_images=max(BATCHES), input_bytes=frames_gpu.numel())
            for n in BATCHES:
                out = torch.empty((n, 3, 224, 224), device="cuda")
                pre.run([frames_gpu[i] for i in range(n)], out)
                pre.synchronize()
                reference = torch.empty_like(out)
                plain_launch(pre, n, reference)
                pre.synchronize()
                assert torch.equal(out, reference), "graph launch and plain launch disagree"
                ours = median_ms(lambda: pre.launch(n, out)) / n * 1e3
                floor = (H * W * 3 + 3 * 224 * 224 * 4) / (bandwidth * 1e9) * 1e6
                peer = median_ms(lambda: torch_peer(frames_gpu[:n], spec, antialias, False)) / n * 1e3
                tv2 = median_ms(lambda: torch_peer(frames_gpu[:n], spec, True, True)) / n * 1e3 if antialias else float("nan")
                cpu = opencv_peer(frames[:n], spec, antialias, pool) / n * 1e6
                row = dict(mode=mode, antialias=antialias, batch=n, ours_us=ours, floor_us=floor,
                           torch_us=peer, tv2_us=tv2, opencv_us=cpu)
                if n == 1:
                    row["call_graph_us"] = host_call_us(pre, out, graph=True)
                    row["call_dispatcher_us"] = host_call_us(pre, out, graph=False)
                rows.append(row)
                print(json.dumps(row), flush=True)
    # Pinned host-to-device copy of one frame: what a host-resident request costs before any kernel.
    pinned = cuda.pinned_array(H * W * 3, np.uint8)
    dev = cuda.device_array(H * W * 3, np.uint8)
    h2d_ms = median_ms(lambda: dev.copy_to_device(pinned, stream=numba_stream))
    print(f"\npinned H2D copy of one 1080p frame: {h2d_ms * 1e3:.1f} us ({H * W * 3 / h2d_ms / 1e6:.1f} GB/s)")
    print(f"\n{'mode':<18}{'aa':<4}{'batch':>6}{'ours':>9}{'floor':>9}{'x floor':>8}{'torch':>9}{'tv2':>9}"
          f"{'opencv':>9}{'vs torch':>9}  (us per image)")
    for r in rows:
        print(f"{r['mode']:<18}{'on' if r['antialias'] else 'off':<4}{r['batch']:>6}{r['ours_us']:>9.2f}"
              f"{r['floor_us']:>9.2f}{r['ours_us'] / r['floor_us']:>8.2f}{r['torch_us']:>9.1f}{r['tv2_us']:>9.1f}"
              f"{r['opencv_us']:>9.0f}{r['torch_us'] / r['ours_us']:>8.1f}x")
    for r in rows:
        if r["batch"] == 1:
            print(f"batch-1 call incl. host ({r['mode']}, aa {r['antialias']}): CUDA graph {r['call_graph_us']:.1f} us,"
                  f" numba dispatcher {r['call_dispatcher_us']:.1f} us")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(), "copy_gbs": bandwidth, "h2d_frame_us": h2d_ms * 1e3,
                       "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
