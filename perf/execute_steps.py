"""Where a GPU preprocess execute() spends its time outside Triton: the steps of preprocess's execute() for encoded
files (decode, output allocation, the kernels' phases, sync, copy to the host, the release of every buffer), run in
one process without a server, median and p90 microseconds per step.

With ``--classify WEIGHTS`` (the torch classifier's model.pt) it replicates the one-step
image_classifier_encoded instead: the kernels write into the classifier's graph input and
TorchCudaClassifier.classify_staged returns the logits on the host; a second table splits the classifier's
run() (the two-step classifier's path) into its steps beside the GPU time of one replay.

Beside a served profile (perf/profile_ensemble.py) it separates the model's own code from the Python backend's
handling around execute(). Run on a GPU host with nvImageCodec:
    python -m pixelserve.perf.execute_steps [--batch 1] [--size 1080x1920] [--repeat 300] [--gap-ms 2] [--classify model.pt]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

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
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="idle time between executions, as a concurrency-1 client leaves the GPU and CPU between requests")
    parser.add_argument("--classify", metavar="WEIGHTS", help="the torch classifier's weights: replicate the one-step model")
    args = parser.parse_args(argv)
    parameters, spec, max_batch = preprocess_settings()
    size = parse_size(args.size)
    runner = CudaRunner(spec, 0, max_batch, reserve_size=size)
    runner.warm_up(max_batch)
    decoder = ImageDecoder(parameters, 0)
    decoder.warm_up(max_batch, size)
    timer = PhaseTimer("preprocess", None, stages=PREPROCESS_STAGES, slow_log=SlowLog("preprocess", 0.1, print))
    metrics = ImageMetrics(None)
    classifier = None
    if args.classify:
        from pixelserve.runtime.torch_classifier import TorchCudaClassifier

        classifier = TorchCudaClassifier(args.classify, 0, max_batch, (3, spec.out_height, spec.out_width),
                                         input_dtype=spec.output_dtype)
    files = [_jpeg_file(size)] * args.batch
    rows: dict[str, list[float]] = {}

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        rows.setdefault(name, []).append(now - since)
        return now

    for _ in range(args.repeat + 50):  # the first 50: warm-up, left out
        if args.gap_ms:
            time.sleep(args.gap_ms / 1e3)
        start = time.perf_counter()
        with timer.execute(args.batch):
            t = time.perf_counter()
            with timer.phase("decode"):  # queued on the kernels' stream, as both models do
                decoded = decoder.decode(files, cuda_stream=runner.stream_handle)
            t = mark("decode (queued)", t)
            if classifier is None:
                out = runner._empty(args.batch)
                t = mark("allocate the output", t)
                runner._preprocessor.run(decoded, out, timer)
                t = mark("params + stage_h2d + kernel", t)
                with timer.phase("sync"):
                    runner.synchronize()
                t = mark("sync (the rest of the decode, the kernels)", t)
                with timer.phase("to_host"):
                    host = runner.to_host(out)
                t = mark("to_host", t)
            else:
                out = classifier.staged_input(args.batch)
                runner.run(decoded, timer, out=out, wait=False)
                t = mark("params + stage_h2d + kernel into the graph input", t)
                with timer.phase("infer"):
                    host = classifier.classify_staged(args.batch, after_stream=runner.stream_handle)
                t = mark("classify_staged (waits for decode, kernels, replay, logits)", t)
            slices = [np.ascontiguousarray(host[j:j + 1]) for j in range(args.batch)]
            t = mark("one slice per request", t)
            metrics.accepted(image.shape for image in decoded)
            t = mark("image counters", t)
            del decoded
            t = mark("release the decoded images", t)
            del out, host, slices
            t = mark("release the output buffers", t)
        mark("the whole execute()", start)
    gap = f", {args.gap_ms:g} ms idle between executions" if args.gap_ms else ""
    print(f"| step | median us (batch {args.batch}, {args.size}{gap}) | p90 us |\n|---|---|---|")
    for name, times in rows.items():
        kept = sorted(times[50:])
        print(f"| {name} | {statistics.median(kept) * 1e6:.0f} | {kept[int(len(kept) * 0.9)] * 1e6:.0f} |")
    if classifier is not None:
        print()
        _classifier_steps(classifier, runner.run(decoder.decode(files)), args.repeat)
    return 0


def _classifier_steps(classifier: Any, batch: Any, repeat: int) -> None:
    """Print the steps of TorchCudaClassifier.run on one device batch, host microseconds, and one replay's GPU time."""
    torch = classifier.torch
    n = int(batch.shape[0])
    graph, out = classifier._graphs[classifier._bucket(n)]
    rows: dict[str, list[float]] = {}
    with torch.no_grad(), torch.cuda.stream(classifier.stream):
        for i in range(repeat + 50):
            t0 = time.perf_counter()
            tensor = torch.as_tensor(batch)
            t1 = time.perf_counter()
            classifier.static_in[:n].copy_(tensor, non_blocking=True)
            t2 = time.perf_counter()
            graph.replay()
            t3 = time.perf_counter()
            result = out[:n].clone()
            t4 = time.perf_counter()
            classifier.stream.synchronize()
            t5 = time.perf_counter()
            del result
            if i >= 50:
                for name, seconds in (("as_tensor", t1 - t0), ("copy into the graph's input (queue)", t2 - t1),
                                      ("replay (queue)", t3 - t2), ("clone the output (queue)", t4 - t3),
                                      ("wait for the GPU", t5 - t4), ("the whole run()", t5 - t0)):
                    rows.setdefault(name, []).append(seconds)
    print(f"| classifier run() step, batch {n} | median us | p90 us |\n|---|---|---|")
    for name, times in rows.items():
        kept = sorted(times)
        print(f"| {name} | {statistics.median(kept) * 1e6:.0f} | {kept[int(len(kept) * 0.9)] * 1e6:.0f} |")
    print(f"| one replay, GPU time (CUDA events) | {classifier.replay_seconds(classifier._bucket(n)) * 1e6:.0f} | |")


if __name__ == "__main__":
    raise SystemExit(main())
