"""Which models a client's requests reached: per-model counters from the server's statistics extension."""
from __future__ import annotations

import tritonclient.grpc as grpcclient


def request_counts(server, *models: str) -> dict[str, dict[str, int]]:
    """For each model: requests answered (``success``, cache hits included), requests failed (``fail``) and
    requests its own code ran on (``inferences``: cache hits never reach it)."""
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
