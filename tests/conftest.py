"""Shared fixtures: GPU detection (CUDA simulator elsewhere), the shipped repository on a real tritonserver."""
from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = REPO_ROOT / "model_repository"


def _has_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1"


HAS_GPU = _has_gpu()
if not HAS_GPU:
    # The numba.cuda kernels still run in CI, under numba's CUDA simulator (must be set before numba.cuda loads).
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on a GPU host: bash perf/run_device.sh tests)")
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A seeded generator: PIXELSERVE_TEST_SEED, else a fixed seed per test. The seed is printed, so a failing
    test's captured output names it (rerun with PIXELSERVE_TEST_SEED=<seed>)."""
    seed = int(os.environ.get("PIXELSERVE_TEST_SEED") or zlib.crc32(request.node.nodeid.encode()))
    print(f"numpy random seed: {seed} (rerun with PIXELSERVE_TEST_SEED={seed})")
    return np.random.default_rng(seed)


def ensure_classifier_built() -> None:
    """Build the repository for this host (pixelserve-build) if no build has written its manifest yet."""
    from pixelserve.triton_local.build_manifest import read_manifest

    if read_manifest(MODEL_REPOSITORY) is None:
        subprocess.run([sys.executable, "-m", "pixelserve.build.build_repository"], cwd=REPO_ROOT, check=True)


@pytest.fixture(scope="session")
def triton_server():
    """A real tritonserver on the shipped model repository (not a copy), on free loopback ports."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    server = LocalTritonServer([MODEL_REPOSITORY])  # unsupervised: health probes would add to the statistics tests count
    server.start(timeout=300)
    yield server
    server.stop()


FP32_ONNX = REPO_ROOT / "artifacts" / "onnx" / "efficientnet_lite0.onnx"


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FP32 EfficientNet-Lite0 ONNX: the built artifact when present, else a fresh export."""
    if FP32_ONNX.is_file():
        return FP32_ONNX
    output = tmp_path_factory.mktemp("onnx") / "efficientnet_lite0.onnx"
    subprocess.run([sys.executable, "-m", "pixelserve.build.export_onnx", "--output", str(output)], check=True)
    return output
