"""Where the Triton server, its Python backend and its libraries live inside the installed wheels."""
from __future__ import annotations

import importlib.util
import os
import site
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def project_python_path() -> list[str]:
    """Import roots the Python-backend models need: PYTHONPATH entries, this repo, this environment's site-packages.

    The stub ignores PYTHONPATH and only sees its base interpreter's site-packages, so the models put
    these on ``sys.path`` themselves, from the ``PIXELSERVE_PYTHONPATH`` variable.
    """
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    entries.append(str(REPO_ROOT))
    entries += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    entries += site.getsitepackages()
    seen: list[str] = []
    for entry in entries:
        if entry not in seen:
            seen.append(entry)
    return seen
