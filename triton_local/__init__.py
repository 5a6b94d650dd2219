"""Run the real Triton server (and perf_analyzer) shipped in PyPI wheels, without Docker."""
from .server import LocalTritonServer, free_port, server_environment
from .tools import perf_analyzer_command

__all__ = ["LocalTritonServer", "free_port", "server_environment", "perf_analyzer_command"]
