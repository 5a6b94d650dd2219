"""Reload a model on a running server with another instance count (config override, nothing on disk changes).

Usage: python -m pixelserve.perf.set_instances MODEL COUNT [--url 127.0.0.1:8001]
"""
from __future__ import annotations

import argparse
import json

import tritonclient.grpc as grpcclient


def main() -> None:
    """Reload MODEL with COUNT instances of its current kind, keeping the rest of its config."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("count", type=int)
    parser.add_argument("--url", default="127.0.0.1:8001")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    config = client.get_model_config(args.model, as_json=True)["config"]
    for group in config["instance_group"]:
        group["count"] = args.count
    client.load_model(args.model, config=json.dumps(config))
    groups = client.get_model_config(args.model, as_json=True)["config"]["instance_group"]
    print(f"{args.model}: instance_group {groups}")


if __name__ == "__main__":
    main()
