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
import time
from pathlib import Path
from typing import Sequence

from . import paths

# Python-backend shared memory: images are megabytes, the backend's 1 MiB default grows too slowly.
# The one place for these sizes: the container gets them through pixelserve-tritonserver (launch.py).
DEFAULT_BACKEND_CONFIG = (
    "python,shm-default-byte-size=67108864",
    "python,shm-growth-byte-size=16777216",
)
# Triton's response cache, in server memory: the one place for its size. Models opt in with
# `response_cache { enable: true }` (the image_classifier ensemble does: build/classifier_config.py).
# An entry costs about the response (4 KB of FP32 scores) plus the key; 256 MiB holds ~60,000 answers.
RESPONSE_CACHE_CONFIG = "local,size=268435456"
# Latency summaries (nv_inference_queue_summary_us{quantile=...} etc.): the queue-time p99 alert and the
# dashboard's percentiles read them (deploy/prometheus, deploy/grafana).
METRICS_CONFIG = ("summary_latencies=true",)


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """Environment for the server: its libraries, this interpreter's libpython, the stub's ``python_env``."""
    env = dict(os.environ if base is None else base)
    libs = [str(paths.bundled_libs_dir()), str(paths.libpython_dir())]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    if python_env is not None:
        env["PATH"] = os.pathsep.join(filter(None, [str(python_env / "bin"), env.get("PATH")]))
    env.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "pixelserve-numba-cache"))
    return env


class LocalTritonServer:
    """A tritonserver child process serving one or more model repositories on loopback ports."""

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
        response_cache: bool = True,
    ) -> None:
        self.address = address
        self.model_repositories = [Path(r).resolve() for r in model_repositories]
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.extra_args = list(extra_args)
        self._workdir = Path(tempfile.mkdtemp(prefix="pixelserve-triton-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "tritonserver.log"
        self._base_env = env
        self.response_cache = response_cache
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address

    @property
    def http_url(self) -> str:
        """host:port of the HTTP endpoint."""
        return f"{self._client_host}:{self.http_port}"

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
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--metrics-address={self.address}",
            "--allow-metrics=true",
        ]
        cmd += [f"--backend-config={c}" for c in DEFAULT_BACKEND_CONFIG]
        cmd += [f"--metrics-config={c}" for c in METRICS_CONFIG]
        if self.response_cache:
            cmd.append(f"--cache-config={RESPONSE_CACHE_CONFIG}")
        return cmd + self.extra_args

    def start(self, timeout: float = 180.0) -> "LocalTritonServer":
        """Start the server and wait until it and all its models are ready."""
        self._workdir.mkdir(parents=True, exist_ok=True)  # again, after a stop()
        env = server_environment(self._base_env, make_python_env(self._workdir / "python-env"))
        log = open(self.log_path, "wb")
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Block until the server reports ready; stop it and raise with the log tail if it exits or times out."""
        import urllib.error
        import urllib.request

        ready_url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                message = f"tritonserver exited with code {self._process.returncode}:\n{self.log_tail()}"
                self.stop()
                raise RuntimeError(message)
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening, or not ready yet
                pass
            time.sleep(0.25)
        message = f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}"
        self.stop()
        raise TimeoutError(message)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def is_running(self) -> bool:
        """Whether the server process is still alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGINT, then SIGKILL) and remove its scratch directory (with the log, unless given one)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGINT)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
