"""GPU time of the torch classifier flavour per batch bucket, side by side: BatchNorm folded (served) or not,
NHWC (channels_last, served) or NCHW.

Two numbers per row: the median GPU time of one graph replay (CUDA events), and the median wall time of a
whole ``run()`` from FP16 host pixels (what the served ``infer`` phase measures: gather, copy in, replay,
copy of the logits, synchronise).

Usage (GPU host, model_repository/classifier/1/model.pt built): python -m pixelserve.perf.bench_classifier
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pixelserve.build.classifier_config import pixels_dims
from pixelserve.model_runtime.torch_classifier import TorchCudaClassifier

from .bench_decode import median_seconds

WEIGHTS = Path(__file__).resolve().parent.parent / "model_repository" / "classifier" / "1" / "model.pt"
VARIANTS = (("NHWC", True, True), ("NHWC", True, False), ("NCHW", False, True), ("NCHW", False, False))


def run_seconds(engine: TorchCudaClassifier, batch: int, repeats: int = 50) -> float:
    """Median wall seconds of ``engine.run`` (complete on return) on one FP16 host batch of ``batch`` images."""
    pixels = np.random.default_rng(0).normal(size=(batch, *pixels_dims())).astype(np.float16)
    return median_seconds(lambda: engine.run([pixels]), repeats, warmup=1)


def main(argv: list[str] | None = None) -> int:
    """Print a table of median replay and run() times and images/s for each variant and bucket."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print("| layout | BatchNorm | batch | ms per replay | images/s (replay) | ms per run() |\n|---|---|---|---|---|---|")
    for layout, channels_last, fold in VARIANTS:
        engine = TorchCudaClassifier(str(args.weights), 0, args.max_batch_size, pixels_dims(), channels_last=channels_last,
                                     input_dtype="float16", fold=fold)
        for batch in engine.buckets:
            replay = engine.replay_seconds(batch)
            run = run_seconds(engine, batch)
            print(f"| {layout} | {'folded' if fold else 'separate'} | {batch} | {replay * 1e3:.3f} | "
                  f"{batch / replay:,.0f} | {run * 1e3:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
