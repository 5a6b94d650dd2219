"""Where the Triton server, its Python backend and its libraries live inside the installed wheels."""
from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path


def pytriton_root() -> Path:
    """The ``pytriton`` package directory (from the nvidia-pytriton wheel, which bundles tritonserver 2.51)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed: `pip install -r requirements-dev.txt`")
    return Path(list(spec.submodule_search_locations)[0])


def tritonserver_binary() -> Path:
    """Path of the bundled ``tritonserver`` executable."""
    return pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def bundled_libs_dir() -> Path:
    """Directory of the shared libraries the bundled server links against."""
    return pytriton_root().parent / "nvidia_pytriton.libs"


def caches_dir() -> Path:
    """Directory of the bundled response-cache implementations (for ``--cache-directory``)."""
    return pytriton_root() / "tritonserver" / "caches"


def python_backend_files() -> list[Path]:
    """The three files a Python backend directory needs, the stub matching this interpreter's version."""
    root = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"no Python backend stub for Python {version} in {stub.parent.parent}")
    backend = root / "backends" / "python"
    return [backend / "libtriton_python.so", backend / "triton_python_backend_utils.py", stub]


def libpython_dir() -> Path:
    """Directory of this interpreter's shared libpython, which the stub loads (it must come first)."""
    return Path(sysconfig.get_config_var("LIBDIR"))


def base_python() -> Path:
    """The base interpreter behind this one (itself, unless this is a virtual environment)."""
    return Path(getattr(sys, "_base_executable", None) or sys.executable)


def import_roots() -> list[str]:
    """This interpreter's import path beyond the standard library: PYTHONPATH entries and site directories, in order."""
    stdlib = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")}
    roots = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry) or entry in roots:
            continue
        if entry in stdlib or os.path.basename(entry) == "lib-dynload":
            continue
        roots.append(entry)
    return roots
