"""Reload a model on a running server with another instance count (config override, nothing on disk changes).

Usage: python -m pixelserve.perf.set_instances MODEL (COUNT | --like OTHER) [--parameter KEY=VALUE ...] [--queue-delay-us US]
       [--url 127.0.0.1:8001]

``--like OTHER`` gives MODEL the instance count OTHER is served with (a benchmark peer matched to the product's
placement, which build/placement.yaml sets).

Loading a model is a restricted API: the server must run with --model-control-mode=explicit and this
script sends the admin key from $PIXELSERVE_ADMIN_KEY (pixelserve.triton_local.access).
"""
from __future__ import annotations

import argparse
import json

import tritonclient.grpc as grpcclient

from pixelserve.triton_local.access import admin_headers


def main() -> None:
    """Reload MODEL with COUNT instances (or as many as model --like serves) of its current kind, and the given
    parameters, keeping the rest."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("count", type=int, nargs="?")
    parser.add_argument("--like", metavar="OTHER", help="the instance count of OTHER as served (its first group's)")
    parser.add_argument("--parameter", action="append", default=[], help="KEY=VALUE: also set a config parameter")
    parser.add_argument("--queue-delay-us", type=int, help="also set dynamic_batching max_queue_delay_microseconds")
    parser.add_argument("--url", default="127.0.0.1:8001")
    args = parser.parse_args()
    if (args.count is None) == (args.like is None):
        parser.error("give either COUNT or --like OTHER")
    client = grpcclient.InferenceServerClient(args.url)
    count = args.count
    if args.like is not None:
        count = int(client.get_model_config(args.like, as_json=True)["config"]["instance_group"][0]["count"])
    config = client.get_model_config(args.model, as_json=True)["config"]
    for group in config["instance_group"]:
        group["count"] = count
    if args.queue_delay_us is not None:
        config.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = args.queue_delay_us
    for item in args.parameter:
        key, value = item.split("=", 1)
        config.setdefault("parameters", {})[key] = {"string_value": value}
    client.load_model(args.model, config=json.dumps(config), headers=admin_headers())
    groups = client.get_model_config(args.model, as_json=True)["config"]["instance_group"]
    print(f"{args.model}: instance_group {groups}")


if __name__ == "__main__":
    main()
