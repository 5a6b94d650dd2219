"""``pixelserve-tritonserver``: exec the ``tritonserver`` on PATH with the project's Python-backend settings.

The Triton container's entry point (docker/Dockerfile), so that the container and the local server
(``LocalTritonServer``) size the Python backend's shared memory from the one DEFAULT_BACKEND_CONFIG and the response
cache from RESPONSE_CACHE_CONFIG.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from .server import DEFAULT_BACKEND_CONFIG, METRICS_CONFIG, RESPONSE_CACHE_CONFIG


def command(args: Sequence[str]) -> list[str]:
    """The tritonserver command line: the project's backend settings, then ``args``."""
    settings = [f"--backend-config={setting}" for setting in DEFAULT_BACKEND_CONFIG]
    settings += [f"--metrics-config={setting}" for setting in METRICS_CONFIG]
    return ["tritonserver", *settings, f"--cache-config={RESPONSE_CACHE_CONFIG}", *args]


def main(argv: Sequence[str] | None = None) -> None:
    """Replace this process with tritonserver (it stays PID 1 in a container and gets the signals)."""
    argv = command(sys.argv[1:] if argv is None else argv)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
