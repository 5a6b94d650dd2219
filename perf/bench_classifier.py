"""GPU time of the torch classifier flavour per batch bucket, NHWC (channels_last) vs NCHW, side by side.

Usage (GPU host, model_repository/classifier/1/model.pt built): python perf/bench_classifier.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pixelserve.runtime.torch_classifier import TorchCudaClassifier

WEIGHTS = Path(__file__).resolve().parent.parent / "model_repository" / "classifier" / "1" / "model.pt"


def main(argv: list[str] | None = None) -> int:
    """Print a table of median replay times (CUDA events) and images/s for each layout and bucket."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--max-batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print("| layout | batch | ms per replay | images/s |\n|---|---|---|---|")
    for channels_last in (True, False):
        engine = TorchCudaClassifier(str(args.weights), 0, args.max_batch_size, channels_last=channels_last)
        for batch in engine.buckets:
            seconds = engine.replay_seconds(batch)
            layout = "NHWC" if channels_last else "NCHW"
            print(f"| {layout} | {batch} | {seconds * 1e3:.3f} | {batch / seconds:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
