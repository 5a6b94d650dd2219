"""Who may call Triton's administrative APIs: a key in a request header, set by Triton's restricted-API options.

Inference, health, metadata, model configuration and statistics stay open. Loading and unloading models
(model-repository), registering shared memory, changing the log settings and tracing need the header
``pixelserve-admin-key: <key>`` (HTTP; ``triton-grpc-protocol-pixelserve-admin-key`` on gRPC). The key is ``$PIXELSERVE_ADMIN_KEY`` where it is
set; otherwise the server gets a random one that only the process that started it knows (so nobody can
use those APIs). Clients pass it as tritonclient ``headers=`` and perf_analyzer as ``-H``.
"""
from __future__ import annotations

import os
import secrets

ADMIN_HEADER = "pixelserve-admin-key"  # lower case: gRPC metadata keys must be
# Triton 2.51 looks for the gRPC header under this prefix (seen: "This protocol is restricted, expecting
# header 'triton-grpc-protocol-pixelserve-admin-key'"); clients send both names, each server reads its own.
GRPC_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
KEY_ENV = "PIXELSERVE_ADMIN_KEY"
# Triton's names for the API groups behind the key (the same for --http-restricted-api and
# --grpc-restricted-protocol in 2.51).
RESTRICTED_APIS = ("model-repository", "shared-memory", "logging", "trace")


def admin_key(key: str | None = None) -> str:
    """``key``, else ``$PIXELSERVE_ADMIN_KEY``, else a fresh random key."""
    return key or os.environ.get(KEY_ENV) or secrets.token_urlsafe(24)


def restricted_api_args(key: str) -> list[str]:
    """tritonserver arguments that put RESTRICTED_APIS behind ``ADMIN_HEADER: key`` on HTTP and gRPC."""
    if not key or any(c in key for c in ",:= \n"):
        raise ValueError(f"{KEY_ENV} must be a non-empty token without ',', ':', '=' or spaces")
    setting = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key}"
    return [f"--http-restricted-api={setting}", f"--grpc-restricted-protocol={setting}"]


def admin_headers(key: str | None = None) -> dict[str, str]:
    """tritonclient ``headers=`` (HTTP or gRPC) for the restricted APIs: ``key`` or ``$PIXELSERVE_ADMIN_KEY``."""
    key = key or os.environ.get(KEY_ENV)
    return {ADMIN_HEADER: key, GRPC_HEADER: key} if key else {}


def perf_analyzer_header_args(key: str | None = None) -> list[str]:
    """perf_analyzer ``-H`` arguments carrying the admin key (it registers shared memory with it)."""
    return [arg for name, value in admin_headers(key).items() for arg in ("-H", f"{name}:{value}")]


def redact_headers(args: list[str]) -> list[str]:
    """``args`` with the value of every ``-H name:value`` shown as ``$PIXELSERVE_ADMIN_KEY`` (for logs and results)."""
    shown = list(args)
    for index in range(1, len(shown)):
        if shown[index - 1] == "-H" and ":" in shown[index]:
            shown[index] = shown[index].split(":", 1)[0] + ":$" + KEY_ENV
    return shown
