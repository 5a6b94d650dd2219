"""Soak (opt-in, bounded in time): mixed-size real photos with a share of bad requests, for a set duration.

Usage:
  python -m pixelserve.perf.soak --seconds 60                 # starts its own local server (CI-sized run)
  python -m pixelserve.perf.soak --seconds 600 --url 127.0.0.1:8001   # 10 minutes against a running server

Reports requests sent and failed (valid requests must all succeed; bad ones must all get errors), p99
latency per window, the RSS of tritonserver and its stubs at start (after --warmup seconds of the same
load, which fills the memory pools) and end (local server only), and
/dev/shm usage before and after. Exit status 1 when a valid request failed, a bad one was answered, or
RSS grew by more than --max-rss-growth-mb.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pixelserve.triton_local.server import SHM_DIR

from .make_inputs import resized_photo

SIZES = [(224, 224), (480, 640), (720, 1280), (300, 451), (1080, 1920), (231, 1000)]
PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]
BAD = [np.zeros((1, 8, 8, 4), np.uint8), np.zeros((1, 0, 16, 3), np.uint8), np.zeros((1, 8193, 1, 3), np.uint8)]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 if gone)."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def tree_rss_mb(pid: int) -> dict[str, float]:
    """RSS of the server and each of its child processes (the stubs), by name."""
    found = {"tritonserver": rss_mb(pid)}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                args = (proc / "cmdline").read_bytes().split(b"\0")
                found[args[8].decode() if len(args) > 8 else proc.name] = rss_mb(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def shm_mb() -> float:
    return sum(f.stat().st_size for f in SHM_DIR.iterdir() if f.is_file()) / 2**20


def drive(url: str, seconds: float, concurrency: int, bad_share: float, window: float) -> dict:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    images = [resized_photo(PHOTOS[i % len(PHOTOS)], h, w)[None] for i, (h, w) in enumerate(SIZES)]
    counts = {"valid_sent": 0, "valid_failed": 0, "bad_sent": 0, "bad_answered": 0}
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = time.monotonic()

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        client = grpcclient.InferenceServerClient(url)
        while time.monotonic() - start < seconds:
            bad = rng.random() < bad_share
            image = BAD[rng.integers(len(BAD))] if bad else images[rng.integers(len(images))]
            inp = grpcclient.InferInput("images", list(image.shape), "UINT8")
            inp.set_data_from_numpy(image)
            sent = time.monotonic()
            try:
                client.infer("image_classifier", [inp])
                ok, message = True, ""
            except InferenceServerException as exc:
                ok, message = False, str(exc)
            with lock:
                if bad:
                    counts["bad_sent"] += 1
                    counts["bad_answered"] += ok
                else:
                    counts["valid_sent"] += 1
                    counts["valid_failed"] += not ok
                    latencies.append((sent - start, time.monotonic() - sent))
                    if not ok and len(failures) < 5:
                        failures.append(message)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    windows = {}
    for at, latency in latencies:
        windows.setdefault(int(at // window), []).append(latency)
    p99 = {f"{k * window:.0f}s": round(float(np.percentile(v, 99)) * 1000, 1) for k, v in sorted(windows.items())}
    return {**counts, "p99_ms_per_window": p99, "first_failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--url", help="gRPC host:port of a running server (default: start a local one)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of bad requests (default 0.1)")
    parser.add_argument("--window", type=float, default=10, help="seconds per p99 window")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of the same load before RSS 'at start'")
    parser.add_argument("--max-rss-growth-mb", type=float, default=256, help="bound on server+stub RSS growth")
    args = parser.parse_args(argv)
    shm_before = shm_mb()
    with contextlib.ExitStack() as stack:
        server = None
        if not args.url:
            from pixelserve.triton_local import LocalTritonServer

            server = stack.enter_context(LocalTritonServer([Path(__file__).resolve().parent.parent / "model_repository"]))
        url = args.url or server.grpc_url
        drive(url, args.warmup, args.concurrency, args.bad_share, args.window)  # pools and shm pages reach their size
        rss_start = tree_rss_mb(server._process.pid) if server else {}
        report = drive(url, args.seconds, args.concurrency, args.bad_share, args.window)
        rss_end = tree_rss_mb(server._process.pid) if server else {}
        shm_during = shm_mb()
    growth = sum(rss_end.values()) - sum(rss_start.values())
    print(f"soak {args.seconds:.0f} s on {url}, concurrency {args.concurrency}, bad share {args.bad_share}")
    for key, value in report.items():
        print(f"  {key}: {value}")
    print(f"  RSS MiB at start: {({k: round(v) for k, v in rss_start.items()})}")
    print(f"  RSS MiB at end:   {({k: round(v) for k, v in rss_end.items()})}  growth {growth:.0f} (bound {args.max_rss_growth_mb:.0f})")
    print(f"  /dev/shm MiB: before {shm_before:.0f}, while serving {shm_during:.0f}, after {shm_mb():.0f}")
    ok = report["valid_failed"] == 0 and report["bad_answered"] == 0 and growth <= args.max_rss_growth_mb
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
