"""Start, wait for and stop a real ``tritonserver`` process on a model repository."""
from __future__ import annotations

import os
import platform
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import access, paths
from .build_manifest import repository_manifest, served_args
from .health import PROBE_MODEL, Unhealthy, probe
from .http_guard import GuardProcess
from .inference_checks import MAX_BODY_BYTES
from .malloc_tuning import tuned_environment
from .mps import MpsDaemon
from .stubs import STUB_POLL_S, StubWatch, live_stubs, models_are_static

# Python-backend shared memory: images are megabytes, the backend's 1 MiB default grows too slowly.
# The one place for these sizes: the container gets them through pixelserve-tritonserver (launch.py).
DEFAULT_BACKEND_CONFIG = (
    "python,shm-default-byte-size=67108864",
    "python,shm-growth-byte-size=16777216",
)
# Triton's response cache, in server memory: the one place for its size. Off unless the server is started
# with it (response_cache=True, `pixelserve-server --response-cache`, PIXELSERVE_RESPONSE_CACHE=1): its key is a
# 64-bit non-cryptographic hash of the input bytes alone (not their shape), so a cache shared by clients that
# do not trust each other can hand one client's answer to another (docs/serving.md, "The response cache"). Models opt
# in with `response_cache { enable: true }` (image_classifier_encoded does: build/classifier_config.py).
# An entry costs about the response (4 KB of FP32 scores) plus the key; 256 MiB holds ~60,000 answers.
RESPONSE_CACHE_CONFIG = "local,size=268435456"
# numba's kernel cache, one folder per import name of the kernels' package: numba stores the module name in its
# cached kernels and fails to load them (ModuleNotFoundError) once the package is renamed, as pixelserve.kernels
# was to pixelserve.kernels_numba; a folder of the new name starts clean.
NUMBA_CACHE_FOLDER = "pixelserve-numba-cache/kernels_numba"
# Latency summaries (nv_inference_queue_summary_us{quantile=...} etc.): the queue-time p99 alert and the
# dashboard's percentiles read them (deploy/prometheus, deploy/grafana).
METRICS_CONFIG = ("summary_latencies=true",)


# The Python backend's per-model shared-memory regions; an abnormal exit leaves them behind (64 MiB each here).
SHM_DIR = Path("/dev/shm")
SHM_REGION_PREFIX = "triton_python_backend_shm_region_"


def _mapped_shm_files() -> set[str]:
    """/dev/shm files some live process (that this user may inspect) has mapped."""
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # gone, or another user's process
            continue
        mapped.update(line.split(None, 5)[5] for line in text.splitlines() if str(SHM_DIR) in line and len(line.split(None, 5)) == 6)
    return mapped


def clean_stale_shm_regions(min_age_s: float = 5.0) -> list[str]:
    """Remove this user's Python-backend regions that no live process maps (left by a dead server); return their names.

    Regions younger than ``min_age_s`` are kept: a starting server creates its region a moment before mapping it.
    """
    mapped = _mapped_shm_files()
    removed = []
    for region in SHM_DIR.glob(SHM_REGION_PREFIX + "*"):
        try:
            info = region.stat()
            if info.st_uid != os.getuid() or str(region) in mapped or time.time() - info.st_mtime < min_age_s:
                continue
            region.unlink()
            removed.append(region.name)
        except OSError:
            continue
    return removed


@dataclass
class Restart:
    """One recovery by the supervisor: why, when the death was seen and when the service answered again."""

    reason: str
    detected: float  # time.monotonic()
    recovered: float | None = None

    @property
    def seconds(self) -> float | None:
        """From the death being seen to the first good probe answer."""
        return None if self.recovered is None else self.recovered - self.detected


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now and that this process has not handed out before.

    The kernel may hand the same free port to two bind(0) calls in a row; a server given it for two of its
    endpoints (gRPC and HTTP, say) then fails to start with "address already in use".
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def make_backend_dir(root: Path) -> Path:
    """Create ``root/python`` with the Python backend and the stub for this interpreter; return ``root``."""
    python_dir = root / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in paths.python_backend_files():
        target = python_dir / source.name
        if not target.exists():
            target.symlink_to(source)
    return root


def make_python_env(root: Path) -> Path:
    """A virtual environment at ``root`` for the Python-backend stub that imports what this interpreter imports.

    The stub runs an isolated interpreter: it ignores PYTHONPATH and takes its prefix (and so its
    site-packages) from the first ``python3`` on PATH. This environment's ``python3`` is the base
    interpreter this one runs on, and its one ``.pth`` file lists this interpreter's import roots in
    order: PYTHONPATH entries as plain lines, site directories through ``site.addsitedir`` so that
    their own ``.pth`` files (the editable install of this project among them) take effect too.
    Put ``root/bin`` first on the server's PATH. Returns ``root``.
    """
    base = paths.base_python()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    site_dir = root / "lib" / version / "site-packages"
    site_dir.mkdir(parents=True, exist_ok=True)
    (root / "pyvenv.cfg").write_text(
        f"home = {base.parent}\ninclude-system-site-packages = false\nversion = {platform.python_version()}\n"
    )
    for name in ("python3", version):
        link = root / "bin" / name
        if not link.is_symlink():
            link.symlink_to(base)
    site_dirs = set(site.getsitepackages())
    lines = ["# Written by pixelserve.triton_local: the import path of the interpreter that started the server."]
    for entry in paths.import_roots():
        lines.append(f"import site; site.addsitedir({entry!r})" if entry in site_dirs else entry)
    (site_dir / "pixelserve-import-path.pth").write_text("\n".join(lines) + "\n")
    return root


def server_environment(base: dict[str, str] | None = None, python_env: Path | None = None) -> dict[str, str]:
    """Environment for the server: its libraries, this interpreter's libpython, the stub's ``python_env``, the
    malloc settings (malloc_tuning.py)."""
    env = tuned_environment(os.environ if base is None else base)
    libs = [str(paths.bundled_libs_dir()), str(paths.libpython_dir())]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    if python_env is not None:
        env["PATH"] = os.pathsep.join(filter(None, [str(python_env / "bin"), env.get("PATH")]))
    env.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / NUMBA_CACHE_FOLDER))
    return env


class LocalTritonServer:
    """A tritonserver child process serving one or more model repositories on loopback ports.

    The model-repository, shared-memory, logging and trace APIs are always behind ``admin_key``
    (``access.py``; ``admin_headers`` is what a client passes). With ``supervise=True`` a watchdog thread
    probes ``health_model`` with a real inference every ``probe_interval`` seconds and restarts the
    server (same ports, same key) when it has exited, when a stub is dead, or after
    ``probe_failures`` failed probes in a row; ``restarts`` records each recovery. With ``mps=True`` the
    server runs as the client of a CUDA MPS daemon of its own (``mps.py``), started before it and stopped after.

    With ``http_guard=True`` (the default) the HTTP port (``http_url``) is the HTTP guard's (``http_guard.py``), a
    child process that refuses the requests that crash Triton 2.51's HTTP front end and forwards the rest to
    Triton's own HTTP on a free loopback port (``triton_http_url``); it is started first, outlives the watchdog's
    restarts of tritonserver (answering 503 while Triton is down) and is stopped last. ``http_guard=False`` puts
    Triton's HTTP on that port itself (HTTP throughput runs on a trusted network; not recommended).
    """

    def __init__(
        self,
        model_repositories: Sequence[str | os.PathLike[str]],
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        address: str = "127.0.0.1",
        response_cache: bool = False,
        admin_key: str | None = None,
        supervise: bool = False,
        health_model: str = PROBE_MODEL,
        probe_interval: float = 1.0,
        probe_failures: int = 3,
        mps: bool = False,
        http_guard: bool = True,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.address = address
        self.admin_key = access.admin_key(admin_key)
        self.supervise = supervise
        self.health_model = health_model
        self.probe_interval = probe_interval
        self.probe_failures = probe_failures
        self.restarts: list[Restart] = []
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self.model_repositories = [Path(r).resolve() for r in model_repositories]
        self.http_port = http_port or free_port()
        self.http_guard = http_guard
        self.triton_http_port = free_port() if http_guard else self.http_port  # Triton's own HTTP
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.extra_args = list(extra_args)
        self._workdir = Path(tempfile.mkdtemp(prefix="pixelserve-triton-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "tritonserver.log"
        self._base_env = env
        self.response_cache = response_cache
        self._process: subprocess.Popen[bytes] | None = None
        # One MPS daemon for the server's life, restarts included (triton_local/mps.py).
        self.mps = MpsDaemon(self._workdir / "mps") if mps else None
        # One HTTP guard for the server's life too, in front of Triton's HTTP on loopback.
        self.guard = GuardProcess((address, self.http_port), ("127.0.0.1", self.triton_http_port), max_body_bytes,
                                  log_path=self.guard_log_path) if http_guard else None

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    @property
    def admin_headers(self) -> dict[str, str]:
        """tritonclient ``headers=`` that open the restricted APIs of this server."""
        return access.admin_headers(self.admin_key)

    @property
    def http_url(self) -> str:
        """host:port of the HTTP endpoint (the HTTP guard's, unless ``http_guard=False``)."""
        return f"{self._client_host}:{self.http_port}"

    @property
    def triton_http_url(self) -> str:
        """host:port of Triton's own HTTP: behind the guard on loopback, else ``http_url``."""
        return f"127.0.0.1:{self.triton_http_port}" if self.guard is not None else self.http_url

    @property
    def guard_log_path(self) -> Path:
        """The HTTP guard's log (its refusals): next to the server log."""
        return self.log_path.with_name(self.log_path.stem + ".http_guard.log")

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC endpoint."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics endpoint."""
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        """The tritonserver command line."""
        cmd = [str(paths.tritonserver_binary())]
        cmd += [f"--model-repository={repo}" for repo in self.model_repositories]
        cmd += [
            f"--backend-directory={make_backend_dir(self._workdir / 'backends')}",
            f"--cache-directory={paths.caches_dir()}",
            f"--http-port={self.triton_http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={'127.0.0.1' if self.guard is not None else self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            "--allow-metrics=true",
        ]
        cmd += [f"--backend-config={c}" for c in DEFAULT_BACKEND_CONFIG]
        cmd += [f"--metrics-config={c}" for c in METRICS_CONFIG]
        if self.response_cache:
            cmd.append(f"--cache-config={RESPONSE_CACHE_CONFIG}")
        cmd += access.restricted_api_args(self.admin_key)
        # What pixelserve-build wrote for this host (its per-host configs, CUDA memory pools): every server on the
        # repository serves that build; arguments given here win over it.
        cmd += served_args(repository_manifest(self.model_repositories), self.extra_args)
        return cmd + self.extra_args

    def start(self, timeout: float = 180.0) -> "LocalTritonServer":
        """Start the server (after removing stale shared-memory regions) and wait until it and all its models are ready."""
        self._stopping.clear()
        if self.mps is not None and not self.mps.running:
            self.mps.start()
        if self.guard is not None and not self.guard.running:
            self._workdir.mkdir(parents=True, exist_ok=True)  # again, after a stop()
            try:  # first: the HTTP port answers (503) while Triton starts
                self.guard.start()
            except RuntimeError:
                self.stop()
                raise
        self._launch(timeout)
        if self.supervise and (self._watchdog is None or not self._watchdog.is_alive()):
            self._watchdog = threading.Thread(target=self._watch, name="triton-watchdog", daemon=True)
            self._watchdog.start()
        return self

    def _launch(self, timeout: float, log_mode: str = "wb") -> None:
        """Start tritonserver and wait for it; on failure a first start stops everything, a restart only kills."""
        self._workdir.mkdir(parents=True, exist_ok=True)  # again, after a stop()
        clean_stale_shm_regions()
        env = server_environment(self._base_env, make_python_env(self._workdir / "python-env"))
        if self.mps is not None:
            env.update(self.mps.env)
        log = open(self.log_path, log_mode)
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout, stop_on_failure=log_mode == "wb")

    def check_health(self, timeout: float = 5.0) -> None:
        """Raise Unhealthy unless the server runs and answers a real inference through ``health_model``."""
        if not self.is_running():
            raise Unhealthy(f"tritonserver is not running (exit code {self._process and self._process.returncode})",
                            dead=True)
        probe(self.triton_http_url, self.health_model, timeout)

    def wait_healthy(self, timeout: float = 60.0, stop_on_death: bool = False) -> float:
        """Block until the health probe passes; return the seconds waited (TimeoutError with the last failure).

        ``stop_on_death``: raise RuntimeError as soon as the server or a stub is seen dead instead of waiting
        on (the watchdog's restart, so that a death during its wait leads to another restart, not a long wait).
        """
        start = time.monotonic()
        last = Unhealthy("never probed")
        while time.monotonic() - start < timeout:
            try:
                with self._lock:  # not while the watchdog is in the middle of a restart
                    self.check_health()
                return time.monotonic() - start
            except Unhealthy as exc:
                last = exc
            if stop_on_death and (last.dead or not self.is_running()):
                raise RuntimeError(f"died again after the restart: {last}")
            time.sleep(0.1)
        raise TimeoutError(f"not healthy after {timeout:.0f} s: {last}")

    def _watch(self) -> None:
        failures = 0
        stubs = StubWatch(models_are_static(self.extra_args))
        if self._process is not None:
            stubs.refresh(self._process.pid)
        next_probe = time.monotonic() + self.probe_interval
        while not self._stopping.wait(STUB_POLL_S):
            self._keep_guard()
            # Between probes, a look at the stubs and the server: a death is acted on within STUB_POLL_S, not
            # at the next probe, so that /v2/health/ready does not say 200 for a second while requests fail.
            failure = self._seen_dead(stubs)
            if failure is None:
                if time.monotonic() < next_probe:
                    continue
                next_probe = time.monotonic() + self.probe_interval
                try:
                    self.check_health()
                    failures = 0
                    stubs.refresh(self._process.pid if self._process else -1)
                    continue
                except Unhealthy as exc:
                    failure = exc
            stubs.forget()
            failures += 1
            dead = failure.dead or not self.is_running()  # a stub gone, or the server (also after the probe)
            if (dead or failures >= self.probe_failures) and not self._stopping.is_set():
                try:
                    self.restart(str(failure))
                except (RuntimeError, TimeoutError, OSError) as exc:  # try again at the next probe
                    self._note(f"restart failed: {exc}")
                failures = 0

    def _keep_guard(self) -> None:
        """Start the HTTP guard again if it has died (Triton is left alone: it did not)."""
        if self.guard is not None and not self._stopping.is_set():
            self.guard.keep_running(self._note)

    def _note(self, message: str) -> None:
        """A watchdog line in the server log."""
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== pixelserve watchdog: {message}\n".encode())

    def _seen_dead(self, stubs: StubWatch) -> Unhealthy | None:
        """The death seen by a look at the server process and its stubs (None: none seen); a stub gone where
        models may have been unloaded on purpose is settled by a probe at once."""
        if not self.is_running():
            return Unhealthy(f"tritonserver exited (code {self._process and self._process.returncode})", dead=True)
        death, probe_now = stubs.look()
        if not probe_now:
            return death
        try:
            self.check_health()
            stubs.refresh(self._process.pid if self._process else -1)
            return None
        except Unhealthy as exc:
            return exc

    def restart(self, reason: str, timeout: float = 180.0) -> Restart:
        """Kill the server and its stubs, clean their shared memory, start again on the same ports; wait for a good probe."""
        record = Restart(reason, time.monotonic())
        with self._lock:
            if self._stopping.is_set():  # stop() came first: do not start a server nobody will stop
                return record
            self._kill()
            self._note(f"restarting tritonserver: {reason}")
            self._launch(timeout, log_mode="ab")
        self.wait_healthy(timeout, stop_on_death=True)
        record.recovered = time.monotonic()
        self.restarts.append(record)
        return record

    def _kill(self) -> None:
        """SIGKILL the server's process group (its stubs with it) and reap it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stubs left behind by a server that died alone
        except (ProcessLookupError, PermissionError):
            pass

    def wait_ready(self, timeout: float, stop_on_failure: bool = True) -> None:
        """Block until the server reports ready; stop it (or only kill it) and raise with the log tail if it exits or times out."""
        finish = self.stop if stop_on_failure else self._kill
        import urllib.error
        import urllib.request

        ready_url = f"http://{self.triton_http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                message = f"tritonserver exited with code {self._process.returncode}:\n{self.log_tail()}"
                finish()
                raise RuntimeError(message)
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening, or not ready yet
                pass
            time.sleep(0.25)
        message = f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}"
        finish()
        raise TimeoutError(message)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stub_pid(self, instance: str) -> int:
        """The pid of the Python-backend stub of model instance ``instance`` (e.g. ``preprocess_0_0``)."""
        server = self._process.pid if self._process else -1
        for pid, name in live_stubs(server).items():
            if name == instance:
                return pid
        raise LookupError(f"no stub process for {instance} under tritonserver pid {server}")

    def supervising(self) -> bool:
        """Whether the watchdog thread is alive (it may be between a kill and a restart)."""
        return self._watchdog is not None and self._watchdog.is_alive()

    def is_running(self) -> bool:
        """Whether the server process is still alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGINT, then SIGKILL) and remove its scratch directory (with the log, unless given one)."""
        self._stopping.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout)
            self._watchdog = None
        with self._lock:  # waits for a restart in progress
            self._terminate(timeout)
        if self.guard is not None:
            self.guard.stop()
        if self.mps is not None:
            self.mps.stop()
        clean_stale_shm_regions()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _terminate(self, timeout: float) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGINT)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
