"""Which models a client's requests reached: per-model counters from the server's statistics extension."""
from __future__ import annotations

import time

import tritonclient.grpc as grpcclient


SETTLE_S = 0.3


def settled(read, timeout: float = 10.0):
    """``read()`` once two readings ``SETTLE_S`` apart agree: Triton counts a request after it has sent the
    response, so a reading taken right after the last answer can lag by one (or see an earlier cancelled
    request finish)."""
    deadline = time.monotonic() + timeout
    last = read()
    while True:
        time.sleep(SETTLE_S)
        current = read()
        if current == last or time.monotonic() > deadline:
            return current
        last = current


def request_counts(server, *models: str) -> dict[str, dict[str, int]]:
    """For each model, once the counters have settled: requests answered (``success``, cache hits included),
    requests failed (``fail``) and requests its own code ran on (``inferences``: cache hits never reach it)."""
    return settled(lambda: _read_counts(server, models))


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
