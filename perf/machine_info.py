"""Describe the machine a measurement ran on: CPU model and count, GPU names, OS."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_names() -> list[str]:
    """``name, driver, memory`` of each GPU nvidia-smi lists; empty without a usable NVIDIA driver."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def describe() -> dict[str, str]:
    """A small dict for result files: CPU, cores visible to this process, GPUs, OS."""
    gpus = gpu_names()
    return {
        "cpu": cpu_model(),
        "cpu_count": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "gpu": "; ".join(gpus) if gpus else "none",
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }
