"""Which models a client's requests reached: per-model counters from the server's statistics extension."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import tritonclient.grpc as grpcclient

from waiting import wait_until

T = TypeVar("T")

# How long a reading must stay the same to count as settled, where the caller cannot say what to expect.
SETTLE_S = 0.3


def settled(read: Callable[[], T], until: Callable[[T], bool] | None = None, timeout: float = 10.0) -> T:
    """``read()`` once Triton has counted the requests answered so far. Triton counts a request after it has sent
    the response, so a reading taken right after the last answer can lag by one (or see an earlier cancelled
    request finish). Where the caller knows what the counts must come to, ``until`` says so and the reading is
    the first it takes; otherwise the first that stayed the same for SETTLE_S. AssertionError after ``timeout``."""
    if until is not None:
        return wait_until(read, until, "Triton to count the requests answered", timeout)
    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(SETTLE_S)
        current = read()
        if current == last:
            return current
        assert time.monotonic() < deadline, f"Triton's counts still moved after {timeout:.0f} s: {last} -> {current}"
        last = current


def request_counts(server, *models: str, until: Callable[[dict], bool] | None = None) -> dict[str, dict[str, int]]:
    """For each model, once the counters have settled (``settled``, with ``until``): requests answered
    (``success``, cache hits included), requests failed (``fail``) and requests its own code ran on
    (``inferences``: cache hits never reach it)."""
    return settled(lambda: _read_counts(server, models), until)


def _read_counts(server, models) -> dict[str, dict[str, int]]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    counts = {}
    for model in models:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        inference = stats["inference_stats"]
        counts[model] = {"success": int(inference["success"].get("count", 0)),  # JSON omits zero counts
                         "fail": int(inference["fail"].get("count", 0)),
                         "inferences": int(stats.get("inference_count", 0))}  # fmt: skip
    client.close()
    return counts


def moved(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """How far each counter of ``request_counts`` moved between two readings."""
    return {model: {key: after[model][key] - value for key, value in counts.items()} for model, counts in before.items()}
