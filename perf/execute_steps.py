"""Where a GPU preprocess execute() spends its time outside Triton: the steps of preprocess's execute() for encoded
files (decode, output allocation, the kernels' phases, sync, copy to the host, the release of every buffer), run in
one process without a server, median and p90 microseconds per step.

Beside a served profile (perf/profile_ensemble.py) it separates the model's own code from the Python backend's
handling around execute(). Run on a GPU host with nvImageCodec:
    python -m pixelserve.perf.execute_steps [--batch 1] [--size 1080x1920] [--repeat 300]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pixelserve.kernels.serving import CudaRunner
from pixelserve.runtime.encoded_images import ImageDecoder, _jpeg_file
from pixelserve.runtime.image_metrics import PREPROCESS_STAGES, ImageMetrics
from pixelserve.runtime.phases import PhaseTimer
from pixelserve.runtime.slow_log import SlowLog

from .make_inputs import parse_size
from .shipped_settings import preprocess_settings


def main(argv: list[str] | None = None) -> int:
    """Print a table: median and p90 microseconds of each step of the replica of execute()."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", default="1080x1920")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args(argv)
    parameters, spec, max_batch = preprocess_settings()
    size = parse_size(args.size)
    runner = CudaRunner(spec, 0, max_batch, reserve_size=size)
    runner.warm_up(max_batch)
    decoder = ImageDecoder(parameters, 0)
    decoder.warm_up(max_batch, size)
    timer = PhaseTimer("preprocess", None, stages=PREPROCESS_STAGES, slow_log=SlowLog("preprocess", 0.1, print))
    metrics = ImageMetrics(None)
    files = [_jpeg_file(size)] * args.batch
    rows: dict[str, list[float]] = {}

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        rows.setdefault(name, []).append(now - since)
        return now

    for _ in range(args.repeat + 50):  # the first 50: warm-up, left out
        start = time.perf_counter()
        with timer.execute(args.batch):
            t = time.perf_counter()
            with timer.phase("decode"):
                decoded = decoder.decode(files)
            t = mark("decode", t)
            out = runner._empty(args.batch)
            t = mark("allocate the output", t)
            runner._preprocessor.run(decoded, out, timer)
            t = mark("params + stage_h2d + kernel", t)
            with timer.phase("sync"):
                runner.synchronize()
            t = mark("sync", t)
            with timer.phase("to_host"):
                host = runner.to_host(out)
            t = mark("to_host", t)
            slices = [np.ascontiguousarray(host[j:j + 1]) for j in range(args.batch)]
            t = mark("one slice per request", t)
            metrics.accepted(image.shape for image in decoded)
            t = mark("image counters", t)
            del decoded
            t = mark("release the decoded images", t)
            del out, host, slices
            t = mark("release the output buffers", t)
        mark("the whole execute()", start)
    print(f"| step | median us (batch {args.batch}, {args.size}) | p90 us |\n|---|---|---|")
    for name, times in rows.items():
        kept = sorted(times[50:])
        print(f"| {name} | {statistics.median(kept) * 1e6:.0f} | {kept[int(len(kept) * 0.9)] * 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
