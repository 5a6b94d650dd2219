"""perf_analyzer from the tritonclient 2.51 wheel, with the two libraries it needs found in the server wheel."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import paths


def perf_analyzer_binary() -> Path:
    """Path of ``perf_analyzer`` installed by the tritonclient wheel: next to this interpreter, else on PATH."""
    found = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent)) or shutil.which("perf_analyzer")
    if not found:
        raise RuntimeError("perf_analyzer not found: install tritonclient[all]==2.51.0 (its wheel carries it)")
    return Path(found)


def _runtime_lib_dir() -> Path:
    """A directory with the sonames perf_analyzer asks for, linked to the copies bundled in nvidia-pytriton.

    One directory per bundled-library folder (per environment): links into a removed environment would
    otherwise be found first and break perf_analyzer for every other one.
    """
    bundled = paths.bundled_libs_dir()
    digest = hashlib.sha256(str(bundled.resolve()).encode()).hexdigest()[:12]
    libdir = Path(tempfile.gettempdir()) / f"pixelserve-perf-libs-{digest}"
    libdir.mkdir(exist_ok=True)
    for soname, pattern in (("libb64.so.0d", "libb64-*.so.0d"), ("libcudart.so.12", "libcudart-*.so.12*")):
        link = libdir / soname
        if link.exists():  # follows the link: a dangling one is replaced below
            continue
        matches = sorted(bundled.glob(pattern))
        if matches:
            link.unlink(missing_ok=True)
            try:
                link.symlink_to(matches[0])
            except FileExistsError:  # another process made it first
                pass
    return libdir


def perf_analyzer_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run perf_analyzer with ``args``."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(_runtime_lib_dir()), env.get("LD_LIBRARY_PATH")]))
    return [str(perf_analyzer_binary()), *args], env
