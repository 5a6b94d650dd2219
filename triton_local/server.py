"""Start, wait for and stop a real ``tritonserver`` process on a model repository."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import paths

# Python-backend shared memory: images are megabytes, the backend's 1 MiB default grows too slowly.
DEFAULT_BACKEND_CONFIG = (
    "python,shm-default-byte-size=67108864",
    "python,shm-growth-byte-size=16777216",
)


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


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: its libraries, this interpreter's libpython, the models' import roots."""
    env = dict(os.environ if base is None else base)
    libs = [str(paths.bundled_libs_dir()), str(paths.libpython_dir())]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PIXELSERVE_PYTHONPATH"] = os.pathsep.join(paths.project_python_path())
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
    ) -> None:
        self.address = address
        self.model_repositories = [Path(r).resolve() for r in model_repositories]
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.extra_args = list(extra_args)
        self._workdir = Path(tempfile.mkdtemp(prefix="pixelserve-triton-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "tritonserver.log"
        self._env = server_environment(env)
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
        return cmd + self.extra_args

    def start(self, timeout: float = 180.0) -> "LocalTritonServer":
        """Start the server and wait until it and all its models are ready."""
        log = open(self.log_path, "wb")
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self._env, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Block until the server reports ready; raise with the log tail if it exits or times out."""
        import urllib.error
        import urllib.request

        ready_url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self._process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening, or not ready yet
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

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
        """Stop the server (SIGINT, then SIGKILL) and remove its scratch directory."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGINT)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        shutil.rmtree(self._workdir / "backends", ignore_errors=True)

    def __enter__(self) -> "LocalTritonServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
