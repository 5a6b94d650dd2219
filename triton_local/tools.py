"""perf_analyzer with the libraries it needs: the tritonclient 2.51 wheel's binary, or one already on PATH.

``pixelserve-perf-analyzer ARGS...`` (``main``) runs it with the user's arguments. The wheel's binary asks
for ``libb64.so.0d`` and ``libcudart.so.12``, which a plain Python environment does not provide; copies of
both come in the nvidia-pytriton wheel (requirements-dev.txt), and libcudart also in nvidia-cuda-runtime-cu12.
A binary whose libraries the system already resolves (the Triton SDK container's) runs as it is.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import paths

# soname -> file names that provide it: the name itself, or the renamed copy auditwheel bundled.
LIBRARIES = {
    "libb64.so.0d": ("libb64.so.0d", "libb64-*.so.0d"),
    "libcudart.so.12": ("libcudart.so.12", "libcudart-*.so.12*"),
}
SETUP_HINT = ("scripts/setup.sh installs nvidia-pytriton, which bundles libb64.so.0d and libcudart.so.12 "
              "(elsewhere: apt-get install libb64-0d; pip install nvidia-cuda-runtime-cu12)")  # fmt: skip


@dataclass
class PerfAnalyzer:
    """A perf_analyzer binary, the environment to run it in, and the sonames still unresolved there."""

    binary: Path
    env: dict[str, str]
    missing: list[str]


def candidate_binaries() -> list[Path]:
    """Every ``perf_analyzer`` there is: the one next to this interpreter (the wheel's) first, then PATH's."""
    found = [shutil.which("perf_analyzer", path=str(Path(sys.executable).parent)), shutil.which("perf_analyzer")]
    unique: list[Path] = []
    for path in (Path(p) for p in found if p):
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def perf_analyzer_binary() -> Path:
    """Path of the first ``perf_analyzer``: next to this interpreter, else on PATH."""
    binaries = candidate_binaries()
    if not binaries:
        raise RuntimeError("perf_analyzer not found: install tritonclient[all]==2.51.0 (its wheel carries it; "
                           "scripts/setup.sh does) or use the Triton SDK container")  # fmt: skip
    return binaries[0]


def library_dirs() -> list[Path]:
    """Installed folders holding copies of LIBRARIES: nvidia-pytriton's bundled libraries, nvidia-cuda-runtime-cu12's."""
    dirs = []
    try:
        dirs.append(paths.bundled_libs_dir())
    except RuntimeError:  # no nvidia-pytriton here
        pass
    spec = importlib.util.find_spec("nvidia")  # the namespace package NVIDIA's CUDA wheels install into
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(location) / "cuda_runtime" / "lib" for location in spec.submodule_search_locations]
    return [d for d in dirs if d.is_dir()]


def _runtime_lib_dir() -> Path:
    """A directory with the sonames perf_analyzer asks for, linked to the first copies in ``library_dirs()``.

    One directory per set of source folders (per environment): links into a removed environment would
    otherwise be found first and break perf_analyzer for every other one.
    """
    sources = library_dirs()
    digest = hashlib.sha256("\n".join(str(d.resolve()) for d in sources).encode()).hexdigest()[:12]
    libdir = Path(tempfile.gettempdir()) / f"pixelserve-perf-libs-{digest}"
    libdir.mkdir(exist_ok=True)
    for soname, patterns in LIBRARIES.items():
        link = libdir / soname
        if link.exists():  # follows the link: a dangling one is replaced below
            continue
        matches = [match for d in sources for pattern in patterns for match in sorted(d.glob(pattern))]
        if matches:
            link.unlink(missing_ok=True)
            try:
                link.symlink_to(matches[0])
            except FileExistsError:  # another process made it first
                pass
    return libdir


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Sonames the dynamic loader cannot find for ``binary`` in ``env`` (none known without ``ldd``, or for a script)."""
    ldd = shutil.which("ldd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/bin"]))
    if not ldd:
        return []
    result = subprocess.run([ldd, str(binary)], env=env, capture_output=True, text=True, timeout=60)
    return [line.split("=>")[0].strip() for line in result.stdout.splitlines() if "=> not found" in line]


def with_runtime_libs(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the linked LIBRARIES first on LD_LIBRARY_PATH."""
    added = os.pathsep.join(filter(None, [str(_runtime_lib_dir()), env.get("LD_LIBRARY_PATH")]))
    return {**env, "LD_LIBRARY_PATH": added}


def resolve() -> PerfAnalyzer:
    """The perf_analyzer to run: the first candidate whose libraries all resolve, as the system has it or with
    LIBRARIES added; failing that, the first candidate with LIBRARIES added (``missing`` says what it lacks)."""
    binaries = candidate_binaries()
    if not binaries:
        perf_analyzer_binary()  # raises, saying how to install it
    plain = dict(os.environ)
    first = None
    for binary in binaries:
        # The system's own libraries first: the SDK container's perf_analyzer must keep its CUDA runtime.
        if not missing_libraries(binary, plain):
            return PerfAnalyzer(binary, plain, [])
        env = with_runtime_libs(plain)
        found = PerfAnalyzer(binary, env, missing_libraries(binary, env))
        if not found.missing:
            return found
        first = first or found
    assert first is not None
    return first


def perf_analyzer_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run perf_analyzer with ``args``."""
    found = resolve()
    return [str(found.binary), *args], found.env


def _print_help(found: PerfAnalyzer) -> int:
    """This wrapper's line, then perf_analyzer's usage (it has no --help of its own: it prints usage and exits 99)."""
    result = subprocess.run([str(found.binary), "--help"], env=found.env, capture_output=True, text=True)
    usage = [line for line in (result.stdout + result.stderr).splitlines() if "unrecognized option" not in line]
    print(f"pixelserve-perf-analyzer: runs {found.binary} with its libraries (--wrapper-info shows how); "
          "its options follow.\n")  # fmt: skip
    print("\n".join(usage))
    return 0 if any(line.startswith("Usage:") for line in usage) else result.returncode or 1


def main(argv: list[str] | None = None) -> int:
    """``pixelserve-perf-analyzer [perf_analyzer options]``: replace this process with perf_analyzer.

    ``--help`` prints perf_analyzer's options; ``--wrapper-info`` prints which binary runs and its library path.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        found = resolve()
    except RuntimeError as exc:
        print(f"pixelserve-perf-analyzer: {exc}", file=sys.stderr)
        return 127
    if found.missing:
        print(f"pixelserve-perf-analyzer: {found.binary} lacks {', '.join(found.missing)}: {SETUP_HINT}", file=sys.stderr)
    if args == ["--wrapper-info"]:
        print(f"binary: {found.binary}")
        print(f"LD_LIBRARY_PATH: {found.env.get('LD_LIBRARY_PATH', '')}")
        print(f"missing libraries: {', '.join(found.missing) or 'none'}")
        return 1 if found.missing else 0
    if args in (["--help"], ["-h"]):
        return _print_help(found)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(found.binary, [str(found.binary), *args], found.env)


if __name__ == "__main__":
    sys.exit(main())
