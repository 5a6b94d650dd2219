"""``pixelserve-tritonserver``: run the ``tritonserver`` on PATH with the project's Python-backend settings.

The Triton container's entry point (docker/Dockerfile), so that the container and the local server
(``LocalTritonServer``) size the Python backend's shared memory from the one DEFAULT_BACKEND_CONFIG and the response
cache from RESPONSE_CACHE_CONFIG (``PIXELSERVE_RESPONSE_CACHE=0``: no cache), and put the same APIs behind the admin key (access.py: ``$PIXELSERVE_ADMIN_KEY``, random when unset).

It removes stale Python-backend shared-memory regions, starts tritonserver as its child and probes it
with a real inference (health.py) every ``PIXELSERVE_PROBE_INTERVAL`` seconds (default 2) once it has
answered once. When the server exits, a stub is dead or ``PIXELSERVE_PROBE_FAILURES`` probes in a row
fail (default 3), it kills the server and exits non-zero, and the container's ``restart:`` policy starts
a fresh one. ``PIXELSERVE_SUPERVISE=0`` execs tritonserver instead (no probes, no restarts).
``PIXELSERVE_MPS=1`` starts a CUDA MPS daemon (mps.py) in ``PIXELSERVE_MPS_DIR`` (default /tmp/pixelserve-mps)
first and makes the server its client.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from . import access
from .health import Unhealthy, probe
from .mps import MpsDaemon, MpsUnavailable
from .server import DEFAULT_BACKEND_CONFIG, METRICS_CONFIG, RESPONSE_CACHE_CONFIG, clean_stale_shm_regions


def command(args: Sequence[str], admin_key: str | None = None) -> list[str]:
    """The tritonserver command line: the project's backend settings, the restricted APIs, then ``args``."""
    settings = [f"--backend-config={setting}" for setting in DEFAULT_BACKEND_CONFIG]
    settings += [f"--metrics-config={setting}" for setting in METRICS_CONFIG]
    if os.environ.get("PIXELSERVE_RESPONSE_CACHE", "1") != "0":  # 0: clients that do not trust each other (README)
        settings.append(f"--cache-config={RESPONSE_CACHE_CONFIG}")
    return ["tritonserver", *settings, *access.restricted_api_args(access.admin_key(admin_key)), *args]


def _http_url(args: Sequence[str]) -> str:
    port = next((a.split("=", 1)[1] for a in args if a.startswith("--http-port=")), "8000")
    return f"127.0.0.1:{port}"


def supervise(process: subprocess.Popen, http_url: str, interval: float, max_failures: int) -> int:
    """Probe ``process`` until it dies or fails; kill it then and return the exit status for this process."""
    healthy_once, failures = False, 0
    while process.poll() is None:
        time.sleep(interval)
        try:
            probe(http_url)
            healthy_once, failures = True, 0
            continue
        except Unhealthy as exc:
            failure = exc
        if not healthy_once or process.poll() is not None:
            continue  # still starting (the first start compiles kernels), or exited: the loop ends
        failures += 1
        if failure.dead or failures >= max_failures:
            print(f"pixelserve-tritonserver: unhealthy, stopping for a restart: {failure}", file=sys.stderr, flush=True)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return 1
    return process.returncode if process.returncode >= 0 else 1


def main(argv: Sequence[str] | None = None) -> None:
    """Run tritonserver under the health probe (or exec it with PIXELSERVE_SUPERVISE=0) and exit with its fate."""
    args = list(sys.argv[1:] if argv is None else argv)
    argv = command(args)
    mps = None
    if os.environ.get("PIXELSERVE_MPS", "0") == "1":
        mps = MpsDaemon(os.environ.get("PIXELSERVE_MPS_DIR", "/tmp/pixelserve-mps"))
        try:
            mps.start()
        except MpsUnavailable as exc:
            sys.exit(f"pixelserve-tritonserver: PIXELSERVE_MPS=1: {exc}")
        os.environ.update(mps.env)
    if os.environ.get("PIXELSERVE_SUPERVISE", "1") == "0":
        os.execvp(argv[0], argv)
    removed = clean_stale_shm_regions()
    if removed:
        print(f"pixelserve-tritonserver: removed {len(removed)} stale /dev/shm regions", file=sys.stderr, flush=True)
    process = subprocess.Popen(argv, start_new_session=True)
    for signum in (signal.SIGTERM, signal.SIGINT):  # PID 1 in the container: hand the stop to the server
        signal.signal(signum, lambda sig, _frame: process.send_signal(sig))
    status = supervise(process, _http_url(args), float(os.environ.get("PIXELSERVE_PROBE_INTERVAL", "2")),
                       int(os.environ.get("PIXELSERVE_PROBE_FAILURES", "3")))
    if mps is not None:
        mps.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
