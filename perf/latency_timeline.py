"""Every request's latency against the time it was sent: is the slow tail periodic?

perf_analyzer reports percentiles, not when the slow requests happened. This client sends the same real photo
(JPEG q90 to ``*_encoded`` models, raw pixels otherwise) over gRPC from ``--concurrency`` threads for
``--seconds`` and prints the percentiles, the slowest requests with their send times, and how the slow ones fall
across the phase of ``--period`` seconds (e.g. the models' ``metrics_interval_ms``): a periodic stall in the
server piles them into one or two phase bins, independent stalls spread them evenly.

Usage (against a running server):
  python -m pixelserve.perf.latency_timeline --url 127.0.0.1:8001 --model image_classifier_encoded \\
      --size 1080x1920 --concurrency 1 --seconds 20 --period 1.0 --json /tmp/timeline.json
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from pixelserve.model_runtime.slow_log import wall_clock

from .make_inputs import jpeg_bytes, parse_size, resized_photo

BINS = 10


def request_inputs(model: str, image: np.ndarray):
    """The one input of ``model`` for ``image``: encoded bytes for ``*_encoded`` models, pixels otherwise."""
    import tritonclient.grpc as grpcclient

    if model.endswith("_encoded"):
        data = np.array([[jpeg_bytes(image)]], dtype=np.object_)
        tensor = grpcclient.InferInput("images", [1, 1], "BYTES")
    else:
        data = image[None]
        tensor = grpcclient.InferInput("images", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return [tensor]


def drive(url: str, model: str, image: np.ndarray, concurrency: int, seconds: float) -> tuple[np.ndarray, int, float]:
    """Send requests from ``concurrency`` threads for ``seconds``; (send time, latency) rows in seconds, errors,
    and the wall-clock time (Unix seconds) that send times count from."""
    import tritonclient.grpc as grpcclient

    inputs = request_inputs(model, image)
    rows: list[tuple[float, float]] = []
    errors = [0]
    lock = threading.Lock()
    start, started_unix = time.perf_counter(), time.time()

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        client.infer(model, inputs)  # the channel is warm before timing
        mine: list[tuple[float, float]] = []
        while (sent := time.perf_counter()) - start < seconds:
            try:
                client.infer(model, inputs)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            mine.append((sent - start, time.perf_counter() - sent))
        with lock:
            rows.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.array(sorted(rows)).reshape(-1, 2), errors[0], started_unix


def summarize(rows: np.ndarray, period: float, slow_factor: float) -> dict:
    """Percentiles, the slowest requests, and the phase histogram of the slow ones."""
    latency_ms = rows[:, 1] * 1e3
    p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
    slow = rows[latency_ms > slow_factor * p50]
    phases = np.floor((slow[:, 0] % period) / period * BINS).astype(int) if len(slow) else np.zeros(0, int)
    histogram = np.bincount(phases, minlength=BINS).tolist()
    slowest = rows[np.argsort(rows[:, 1])[-15:][::-1]]
    return {
        "requests": int(len(rows)), "per_second": len(rows) / float(rows[-1, 0] - rows[0, 0]) if len(rows) > 1 else 0.0,
        "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(latency_ms.max()),
        "slow_threshold_ms": float(slow_factor * p50), "slow": int(len(slow)), "period_s": period,
        "slow_by_phase": histogram,
        "slowest": [{"sent_s": round(float(t), 4), "latency_ms": round(float(d) * 1e3, 2)} for t, d in slowest],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC address")
    parser.add_argument("--model", default="image_classifier_encoded")
    parser.add_argument("--size", type=parse_size, default=(1080, 1920), help="HxW of the photo (default 1080x1920)")
    parser.add_argument("--photo", default="chelsea", help="skimage.data photo name")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--period", type=float, default=1.0, help="seconds of the phase histogram (default 1)")
    parser.add_argument("--slow-factor", type=float, default=1.5, help="slow means latency above this times p50")
    parser.add_argument("--title", default="", help="label printed with the summary")
    parser.add_argument("--json", type=Path, help="also write the summary and every (sent, latency) row here")
    args = parser.parse_args(argv)

    image = resized_photo(args.photo, *args.size)
    rows, errors, started_unix = drive(args.url, args.model, image, args.concurrency, args.seconds)
    if len(rows) == 0:
        print(f"{args.title}: no request succeeded ({errors} errors)")
        return 1
    summary = summarize(rows, args.period, args.slow_factor) | {"errors": errors, "title": args.title,
                                                                  "model": args.model, "concurrency": args.concurrency,
                                                                  "started_unix": started_unix}
    print(f"{args.title or args.model} c{args.concurrency}: {summary['per_second']:.0f}/s p50 {summary['p50_ms']:.2f} "
          f"p90 {summary['p90_ms']:.2f} p99 {summary['p99_ms']:.2f} max {summary['max_ms']:.2f} ms, errors {errors}")
    print(f"  {summary['slow']} slow (> {summary['slow_threshold_ms']:.2f} ms) by phase of {args.period:g} s "
          f"in {BINS} bins: {summary['slow_by_phase']}")
    print("  slowest:", ", ".join(f"{s['latency_ms']} ms at {wall_clock(started_unix + s['sent_s'])}"
                                  for s in summary["slowest"][:8]))
    if args.json:
        args.json.write_text(json.dumps(summary | {"rows": rows.round(6).tolist()}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
