"""``pixelserve-tritonserver``: run the ``tritonserver`` on PATH with the project's Python-backend settings.

The Triton container's entry point (docker/Dockerfile), so that the container and the local server
(``LocalTritonServer``) size the Python backend's shared memory from the one DEFAULT_BACKEND_CONFIG and the response
cache from RESPONSE_CACHE_CONFIG (off unless ``PIXELSERVE_RESPONSE_CACHE=1``), and put the same APIs behind the admin key (access.py: ``$PIXELSERVE_ADMIN_KEY``, random when unset).

It removes stale Python-backend shared-memory regions, starts tritonserver as its child and probes it
with a real inference (health.py) every ``PIXELSERVE_PROBE_INTERVAL`` seconds (default 2) once it has
answered once. When the server exits, a stub is dead or ``PIXELSERVE_PROBE_FAILURES`` probes in a row
fail (default 3), it kills the server and exits non-zero, and the container's ``restart:`` policy starts
a fresh one. ``PIXELSERVE_SUPERVISE=0`` execs tritonserver instead (no probes, no restarts).
``PIXELSERVE_MPS=1`` starts a CUDA MPS daemon (mps.py) in ``PIXELSERVE_MPS_DIR`` (default /tmp/pixelserve-mps)
first and makes the server its client; unset, it follows the build (pixelserve-build's manifest asks for MPS on GPU
builds), and ``PIXELSERVE_MPS=0`` turns it off. The build's per-host configs and server arguments are added to the
command line (build_manifest.py).

The HTTP port (``--http-address``/``--http-port``, Triton's defaults 0.0.0.0:8000) is served by the HTTP guard
(http_guard.py), started first as a child process and started again if it dies; tritonserver's HTTP listens on a
free loopback port behind it, and the probe goes there. The guard refuses the requests that crash Triton 2.51's HTTP
front end and answers 503 while tritonserver is down. ``PIXELSERVE_HTTP_GUARD=0`` turns it off (Triton's HTTP on the
port itself: HTTP throughput runs on a trusted network; not recommended).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import access
from .health import Unhealthy, probe
from .build_manifest import MANIFEST_NAME, Manifest, repository_manifest, served_args
from .http_guard import GuardProcess
from .malloc_tuning import tuned_environment
from .mps import MpsDaemon, MpsUnavailable
from .server import DEFAULT_BACKEND_CONFIG, METRICS_CONFIG, RESPONSE_CACHE_CONFIG, clean_stale_shm_regions, free_port
from .stubs import STUB_POLL_S, StubWatch, models_are_static


def repositories(args: Sequence[str]) -> list[str]:
    """The model repositories that tritonserver ``args`` name."""
    found, pending = [], False
    for arg in args:
        if pending:
            found.append(arg)
        elif arg.startswith("--model-repository=") or arg.startswith("--model-store="):
            found.append(arg.split("=", 1)[1])
        pending = arg in ("--model-repository", "--model-store")
    return found


PLACED_COPY = "/tmp/pixelserve-models"  # where a read-only repository is copied to be placed for this host's GPUs


def writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (a read-only mount refuses even root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def placed_for_this_host(args: list[str], manifest: Manifest | None, seen: int) -> list[str]:
    """``args``, with the repository placed again for the ``seen`` GPUs where a GPU build was made for another
    count (in place, or in a copy at PLACED_COPY when the repository is read-only)."""
    if manifest is None or manifest.config_name is None or seen in (0, manifest.gpus):
        return args
    from pixelserve.build.build_repository import replace_for_gpus
    from pixelserve.build.place_instances import copy_repository

    source = Path(repositories(args)[0])
    target = source
    if not writable(source):
        target = Path(PLACED_COPY)
        shutil.rmtree(target, ignore_errors=True)
        copy_repository(source, target)
        shutil.copy2(source / MANIFEST_NAME, target / MANIFEST_NAME)
    replace_for_gpus(target, seen)
    print(f"pixelserve-tritonserver: the repository was built for {manifest.gpus} GPU(s), this host shows {seen}: "
          f"placed again in {target}", file=sys.stderr, flush=True)
    return [arg.replace(str(source), str(target)) if arg.endswith(str(source)) else arg for arg in args]


def command(args: Sequence[str], admin_key: str | None = None) -> list[str]:
    """The tritonserver command line: the project's backend settings, the restricted APIs, what pixelserve-build
    wrote for the repository (build_manifest.py), then ``args``."""
    settings = [f"--backend-config={setting}" for setting in DEFAULT_BACKEND_CONFIG]
    settings += [f"--metrics-config={setting}" for setting in METRICS_CONFIG]
    if os.environ.get("PIXELSERVE_RESPONSE_CACHE", "0") == "1":  # opt in: clients that trust each other (docs/serving.md)
        settings.append(f"--cache-config={RESPONSE_CACHE_CONFIG}")
    built = served_args(repository_manifest(repositories(args)), args)
    return ["tritonserver", *settings, *access.restricted_api_args(access.admin_key(admin_key)), *built, *args]


def visible_gpus() -> int:
    """How many GPUs this host (container) shows: nvidia-smi's list, 0 without a driver."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


GUARD_ENV = "PIXELSERVE_HTTP_GUARD"  # 0: no HTTP guard in front of Triton's HTTP
HTTP_LISTEN_OPTIONS = ("--http-address", "--http-port")


def behind_guard(args: Sequence[str]) -> tuple[list[str], GuardProcess | None]:
    """``args`` with Triton's HTTP moved to a free loopback port, and the HTTP guard for the address and port they
    named (Triton's defaults: 0.0.0.0:8000); ``args`` as they are and no guard with PIXELSERVE_HTTP_GUARD=0 or
    ``--allow-http=false``."""
    if os.environ.get(GUARD_ENV, "1") == "0" or "--allow-http=false" in args:
        return list(args), None
    kept, named, pending = [], {"--http-address": "0.0.0.0", "--http-port": "8000"}, None
    for arg in args:
        option, equals, value = arg.partition("=")
        if pending is not None:
            named[pending], pending = arg, None
        elif option in HTTP_LISTEN_OPTIONS and equals:
            named[option] = value
        elif arg in HTTP_LISTEN_OPTIONS:
            pending = arg
        else:
            kept.append(arg)
    internal = free_port()
    kept += ["--http-address=127.0.0.1", f"--http-port={internal}"]
    return kept, GuardProcess((named["--http-address"], int(named["--http-port"])), ("127.0.0.1", internal))


def _http_url(args: Sequence[str]) -> str:
    port = next((a.split("=", 1)[1] for a in args if a.startswith("--http-port=")), "8000")
    return f"127.0.0.1:{port}"


def supervise(process: subprocess.Popen, http_url: str, interval: float, max_failures: int,
              static_models: bool = True, guard: GuardProcess | None = None) -> int:
    """Probe ``process`` until it dies or fails; kill it then and return the exit status for this process.

    Between probes the stubs are looked at every STUB_POLL_S (stubs.py): with ``static_models`` (no model-control
    API) a stub gone is a death at once; otherwise it calls for a probe at once. The HTTP ``guard``, if any, is
    started again when it has died."""
    healthy_once, failures = False, 0
    stubs = StubWatch(static_models)
    next_probe = time.monotonic()  # the first probe at once: a server already up gets its stubs listed now
    while process.poll() is None:
        time.sleep(STUB_POLL_S)
        _keep_guard(guard)
        death, probe_now = stubs.look()
        if death is not None:
            failure = death
        elif not probe_now and time.monotonic() < next_probe:
            continue
        else:
            next_probe = time.monotonic() + interval
            try:
                probe(http_url)
                healthy_once, failures = True, 0
                stubs.refresh(process.pid)
                continue
            except Unhealthy as exc:
                failure = exc
        stubs.forget()
        if not healthy_once or process.poll() is not None:
            continue  # still starting (the first start compiles kernels), or exited: the loop ends
        failures += 1
        if failure.dead or failures >= max_failures:
            print(f"pixelserve-tritonserver: unhealthy, stopping for a restart: {failure}", file=sys.stderr, flush=True)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return 1
    return process.returncode if process.returncode >= 0 else 1


def _keep_guard(guard: GuardProcess | None) -> None:
    """Start the HTTP guard again if it has died."""
    if guard is not None:
        guard.keep_running(lambda message: print(f"pixelserve-tritonserver: {message}", file=sys.stderr, flush=True))


def main(argv: Sequence[str] | None = None) -> None:
    """Run tritonserver under the health probe (or exec it with PIXELSERVE_SUPERVISE=0) and exit with its fate."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = placed_for_this_host(args, repository_manifest(repositories(args)), visible_gpus())
    args, guard = behind_guard(args)
    argv = command(args)
    manifest = repository_manifest(repositories(args))
    if manifest is not None:
        print(f"pixelserve-tritonserver: serving the {manifest.target} build ({manifest.profile} profile, "
              f"{manifest.gpus} GPU(s))", file=sys.stderr, flush=True)
    mps = None
    asked = os.environ.get("PIXELSERVE_MPS") or None  # compose passes an unset variable as ""
    if asked == "1" or (asked is None and manifest is not None and manifest.mps):
        mps = MpsDaemon(os.environ.get("PIXELSERVE_MPS_DIR", "/tmp/pixelserve-mps"))
        try:
            mps.start()
            os.environ.update(mps.env)
        except MpsUnavailable as exc:
            if asked == "1":
                sys.exit(f"pixelserve-tritonserver: PIXELSERVE_MPS=1: {exc}")
            print(f"pixelserve-tritonserver: serving without the MPS the build asks for: {exc}", file=sys.stderr, flush=True)
            mps = None
    if guard is not None:  # first: the HTTP port answers (503) while tritonserver starts
        try:
            guard.start()
        except RuntimeError as exc:
            if mps is not None:
                mps.stop()
            sys.exit(f"pixelserve-tritonserver: {exc}")
        print(f"pixelserve-tritonserver: HTTP guard on {guard.listen[0]}:{guard.listen[1]}, tritonserver's HTTP on "
              f"127.0.0.1:{guard.upstream[1]} ({GUARD_ENV}=0 turns the guard off)", file=sys.stderr, flush=True)
    os.environ.update(tuned_environment(os.environ))  # for tritonserver and its stubs (malloc_tuning.py)
    if os.environ.get("PIXELSERVE_SUPERVISE", "1") == "0":
        os.execvp(argv[0], argv)  # the guard lives on as tritonserver's child, and stops when it ends
    removed = clean_stale_shm_regions()
    if removed:
        print(f"pixelserve-tritonserver: removed {len(removed)} stale /dev/shm regions", file=sys.stderr, flush=True)
    process = subprocess.Popen(argv, start_new_session=True)
    for signum in (signal.SIGTERM, signal.SIGINT):  # PID 1 in the container: hand the stop to the server
        signal.signal(signum, lambda sig, _frame: process.send_signal(sig))
    status = supervise(process, _http_url(args), float(os.environ.get("PIXELSERVE_PROBE_INTERVAL", "2")),
                       int(os.environ.get("PIXELSERVE_PROBE_FAILURES", "3")), models_are_static(args), guard)
    if guard is not None:
        guard.stop()
    if mps is not None:
        mps.stop()
    sys.exit(status)


if __name__ == "__main__":
    main()
