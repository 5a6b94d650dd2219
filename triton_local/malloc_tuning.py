"""glibc malloc settings for tritonserver and its Python-backend stubs: keep freed memory for the next request.

By default glibc hands large blocks back to the kernel as soon as they are freed (``munmap`` above the mmap
threshold, heap trimming above the trim threshold), so every request that allocates a few megabytes (a file's
bytes, a decoded image, a batch) touches fresh pages, and each page's first touch is a page fault. On virtual
machines a fault is expensive: a few microseconds each on the hosts this project is measured on, thousands per
decoded 1080p image. With the two thresholds raised, freed memory stays in the process and is reused: the
process keeps its peak heap instead of returning it (tcmalloc and jemalloc, which Triton's container ships as
alternatives to glibc's malloc, also keep freed memory for reuse). docs/performance.md (R27) has the measurements.

``PIXELSERVE_MALLOC_TUNING=0`` leaves glibc's defaults; settings the user put in ``GLIBC_TUNABLES`` win.
"""
from __future__ import annotations

from typing import Mapping

SWITCH_ENV = "PIXELSERVE_MALLOC_TUNING"
# mmap_threshold: the largest glibc allows (32 MiB on 64-bit), so that an image or a batch comes from the reused
# heap; setting it also stops glibc's own dynamic adjustment. trim_threshold: free heap kept before trimming.
MALLOC_TUNABLES = (
    ("glibc.malloc.mmap_threshold", "33554432"),
    ("glibc.malloc.trim_threshold", "1073741824"),
)


def tuned_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the project's malloc settings added to ``GLIBC_TUNABLES`` (unless switched off)."""
    result = dict(env)
    if result.get(SWITCH_ENV, "1") == "0":
        return result
    existing = [item for item in result.get("GLIBC_TUNABLES", "").split(":") if item]
    named = {item.split("=", 1)[0] for item in existing}
    added = [f"{name}={value}" for name, value in MALLOC_TUNABLES if name not in named]
    result["GLIBC_TUNABLES"] = ":".join(existing + added)
    return result
