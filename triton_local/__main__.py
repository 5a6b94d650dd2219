"""``python -m pixelserve.triton_local`` (or ``pixelserve-server``): serve a model repository on a local tritonserver until interrupted.

Loopback only unless ``--address`` says otherwise. The model-repository, shared-memory, logging and trace
APIs need the header ``pixelserve-admin-key: $PIXELSERVE_ADMIN_KEY`` (set the variable before starting;
unset, the key is random and those APIs are closed to everyone). A watchdog restarts the server when it
dies or stops answering a real inference through ``image_classifier`` (``--no-supervise`` to turn off,
``--health-model`` for another repository). It serves what ``pixelserve-build`` built into the repository: the
per-host configs and server arguments its manifest names, under MPS where the build asks for it.

The HTTP port is served by the HTTP guard (``http_guard.py``), which refuses the requests that crash Triton 2.51's
HTTP front end (huge claimed JSON shapes, deep JSON nesting, bodies in very many chunks) and forwards the rest to
Triton's own HTTP on a loopback port; ``--no-http-guard`` exposes Triton's HTTP directly (for HTTP throughput runs
on a trusted network; not recommended).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time

from .access import ADMIN_HEADER, KEY_ENV
from .build_manifest import Manifest, repository_manifest
from .health import PROBE_MODEL
from .inference_checks import MAX_BODY_BYTES
from .mps import CONTROL
from .server import LocalTritonServer


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``pixelserve-server``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-repository", action="append", default=None, help="repeatable; default: model_repository")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--address", default="127.0.0.1", help="listen address (0.0.0.0 to serve other hosts)")
    parser.add_argument("--no-supervise", dest="supervise", action="store_false",
                        help="do not restart the server when it dies or fails the health probe")
    parser.add_argument("--health-model", default=PROBE_MODEL, help="model the health probe runs (8x8 uint8 image in)")
    parser.add_argument("--response-cache", action=argparse.BooleanOptionalAction, default=False,
                        help="answer a repeated encoded file from Triton's response cache (off by default: only for "
                             "clients that trust each other; docs/serving.md, 'The response cache')")
    parser.add_argument("--mps", action=argparse.BooleanOptionalAction, default=None,
                        help="run the server under a CUDA MPS daemon of its own, so that its GPU instances share the "
                             "GPU side by side (default: as pixelserve-build chose for the repository, where "
                             "nvidia-cuda-mps-control is installed)")
    parser.add_argument("--no-http-guard", dest="http_guard", action="store_false",
                        help="serve Triton's own HTTP on --http-port, without the HTTP guard in front of it (for HTTP "
                             "throughput runs on a trusted network; not recommended: docs/operations.md, 'The HTTP guard')")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                        help="the HTTP guard's largest request body (413 above; default: %(default)s)")
    parser.add_argument("extra", nargs="*", help="extra tritonserver arguments (after --)")
    return parser


def mps_choice(asked: bool | None, manifest: Manifest | None) -> tuple[bool, str]:
    """(MPS on?, why): as asked with --mps/--no-mps, else as the build chose where this host can run MPS."""
    if asked is not None:
        return asked, "--mps" if asked else "--no-mps"
    if manifest is None:
        return False, "no pixelserve-build manifest in the repository: run pixelserve-build"
    if not manifest.mps:
        return False, f"the {manifest.target} build: {manifest.mps_reason}"
    if shutil.which(CONTROL) is None:
        return False, f"the build asks for it ({manifest.mps_reason}), but {CONTROL} is not on PATH"
    return True, f"the {manifest.target} build: {manifest.mps_reason}; --no-mps turns it off"


def main(argv: list[str] | None = None) -> int:
    """Serve the given repositories in the foreground; Ctrl-C stops the server."""
    args = argument_parser().parse_args(argv)
    repositories = args.model_repository or ["model_repository"]
    mps, why = mps_choice(args.mps, repository_manifest(repositories))
    print(f"MPS: {'on' if mps else 'off'} ({why})", flush=True)
    server = LocalTritonServer(
        repositories, args.http_port, args.grpc_port, args.metrics_port, args.extra,
        address=args.address, supervise=args.supervise, health_model=args.health_model, response_cache=args.response_cache,
        mps=mps, http_guard=args.http_guard, max_body_bytes=args.max_body_bytes,
    )
    server.start()
    print(f"tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics {server.metrics_url}")
    if server.guard is not None:
        print(f"HTTP guard on {server.http_url} in front of Triton's HTTP on {server.triton_http_url} "
              f"(log: {server.guard_log_path}; --no-http-guard turns it off)")
    else:
        print("HTTP guard: off (--no-http-guard): Triton 2.51's HTTP front end is exposed as it is")
    keyed = "$" + KEY_ENV if os.environ.get(KEY_ENV) else "a random key (set $" + KEY_ENV + " to use them)"
    print(f"model-repository, shared-memory, logging and trace APIs: header {ADMIN_HEADER} = {keyed}")
    if server.mps is not None:
        print(f"MPS daemon: {server.mps.pipe_dir}")
    print(f"log: {server.log_path}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while server.is_running() or (args.supervise and server.supervising()):
            time.sleep(1)
        print(server.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
