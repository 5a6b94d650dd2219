"""A health check that tells the truth: one tiny real inference through ``image_classifier``.

Triton's ``/v2/health/ready`` stays 200 while a model's Python-backend stub is dead and every inference
fails ("Stub process 'preprocess_0_0' is not healthy"). This probe sends an 8x8 image of fresh random
pixels over HTTP and accepts only 1000 finite scores back. The pixels are new on every probe because the
ensemble has Triton's response cache on: a repeated probe would be answered from the cache, without
running a single model, long after a stub has died. Standard library only, so that the container's healthcheck
(``python3 -m pixelserve.triton_local.health``) and the Kubernetes-style probes need nothing else.

Exit status of the command: 0 healthy, 1 not.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.error
import urllib.request

PROBE_MODEL = "image_classifier"
PROBE_SIDE = 8
CLASS_COUNT = 1000


# How Triton 2.51 answers every request to a model whose Python-backend stub has died.
DEAD_STUB_ERROR = "not healthy"


class Unhealthy(RuntimeError):
    """The probe inference failed; the message says how (connection, HTTP status and Triton's error, or bad output).

    ``dead``: the server or one of its stubs is gone, so waiting will not bring it back (restart at once).
    """

    def __init__(self, message: str, dead: bool = False) -> None:
        super().__init__(message)
        self.dead = dead


def probe(http_url: str, model: str = PROBE_MODEL, timeout: float = 5.0) -> None:
    """Run one tiny inference on ``http_url`` (host:port); raise Unhealthy unless it returns CLASS_COUNT finite scores."""
    body = json.dumps({
        "inputs": [{"name": "images", "shape": [1, PROBE_SIDE, PROBE_SIDE, 3], "datatype": "UINT8",
                    "data": list(os.urandom(PROBE_SIDE * PROBE_SIDE * 3))}],  # never a cache hit
        "outputs": [{"name": "predictions"}],
    }).encode()
    request = urllib.request.Request(f"http://{http_url}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        error = exc.read(500).decode(errors="replace")
        raise Unhealthy(f"HTTP {exc.code}: {error}", dead=DEAD_STUB_ERROR in error) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unhealthy(f"{type(exc).__name__}: {exc}") from None
    scores = next((o.get("data") for o in answer.get("outputs", []) if o.get("name") == "predictions"), None)
    if not scores or len(scores) != CLASS_COUNT or not all(math.isfinite(float(s)) for s in scores):
        raise Unhealthy(f"bad probe output: {str(answer)[:200]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="127.0.0.1:8000", help="HTTP host:port")
    parser.add_argument("--model", default=PROBE_MODEL)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        probe(args.url, args.model, args.timeout)
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
