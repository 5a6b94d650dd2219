"""A CUDA Multi-Process Service (MPS) control daemon of one server's own, so that the server's model instance
processes share the GPU side by side instead of taking turns on it.

Every Python-backend instance is a process with its own CUDA context; without MPS the GPU time-slices
between them. Under MPS their kernels run concurrently: on the H100 the encoded ensemble served 2,908-3,150
images/s at concurrency 32 against 1,751 without (perf/results/README.md, "MPS"). The daemon's pipe and
log directories are private to the server (``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` in the
server's environment), so it never joins or disturbs another MPS daemon on the host. It changes no GPU
setting; ``stop`` tells it to quit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV, LOG_ENV = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"


class MpsUnavailable(RuntimeError):
    """MPS was asked for where it cannot run (no NVIDIA driver utilities, or the daemon did not start)."""


class MpsDaemon:
    """``nvidia-cuda-mps-control -d`` with its pipes and logs under ``root``; ``env`` is what its clients need."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = Path(root)
        self.pipe_dir, self.log_dir = root / "pipe", root / "log"
        self._binary: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """The variables that make a CUDA process a client of this daemon."""
        return {PIPE_ENV: str(self.pipe_dir), LOG_ENV: str(self.log_dir)}

    @property
    def running(self) -> bool:
        """Whether the daemon's control socket is there."""
        return (self.pipe_dir / "control").exists()

    def start(self, timeout: float = 10.0) -> None:
        """Start the daemon and wait for its control socket; MpsUnavailable says why it could not."""
        binary = shutil.which(CONTROL)
        if binary is None:
            raise MpsUnavailable(f"MPS needs {CONTROL} (NVIDIA driver utilities) on PATH; it is not there")
        self._binary = binary
        self.pipe_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = subprocess.run([binary, "-d"], env={**os.environ, **self.env}, capture_output=True, text=True,
                                 timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if started.returncode != 0 or not self.running:
            raise MpsUnavailable(f"{CONTROL} -d did not start (exit {started.returncode}): "
                                 f"{(started.stderr or started.stdout).strip()} {self.log_tail()}".strip())

    def control(self, command: str, timeout: float = 10.0) -> str:
        """Send one command to the running daemon (e.g. ``get_server_list``) and return its answer."""
        if self._binary is None:
            raise MpsUnavailable("the MPS daemon was not started")
        answer = subprocess.run([self._binary], input=command + "\n", env={**os.environ, **self.env},
                                capture_output=True, text=True, timeout=timeout)
        return answer.stdout.strip()

    def server_pids(self) -> list[int]:
        """The MPS server processes the daemon runs (one per user once a client has connected)."""
        return [int(pid) for pid in self.control("get_server_list").split()]

    def client_pids(self, server_pid: int) -> list[int]:
        """The client processes (CUDA contexts) of one MPS server."""
        return [int(pid) for pid in self.control(f"get_client_list {server_pid}").split()]

    def log_tail(self, lines: int = 5) -> str:
        """The end of the daemon's control log, for error messages."""
        log = self.log_dir / "control.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        """Tell the daemon to quit (its MPS server goes with it) and wait for the control socket to go."""
        if self._binary is None or not self.running:
            return
        self.control("quit", timeout)
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
