"""Serving under a CUDA MPS daemon of the server's own (pixelserve.triton_local.mps, ``pixelserve-server --mps``):
refused with a clear error where the driver's MPS control tool is missing; on a GPU host, the shipped repository
answers real photos while its instance processes are clients of the daemon, which quits with the server."""
from __future__ import annotations

import shutil

import pytest

from conftest import HAS_GPU, MODEL_REPOSITORY
from reference_top1 import assert_reference_top1

from pixelserve.triton_local import LocalTritonServer
from pixelserve.triton_local.mps import CONTROL, MpsUnavailable


def test_mps_without_the_control_tool_is_refused_before_the_server_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control on it
    server = LocalTritonServer([MODEL_REPOSITORY], mps=True)
    try:
        with pytest.raises(MpsUnavailable, match=CONTROL):
            server.start(timeout=30)
        assert not server.is_running()
    finally:
        server.stop()


@pytest.mark.gpu
@pytest.mark.server
def test_shipped_repository_serves_real_photos_as_clients_of_its_own_mps_daemon():
    if not HAS_GPU:
        pytest.skip("needs a CUDA GPU")
    if shutil.which(CONTROL) is None:
        pytest.skip(f"needs {CONTROL} (NVIDIA driver utilities)")
    import tritonclient.grpc as grpcclient

    server = LocalTritonServer([MODEL_REPOSITORY], mps=True)
    try:
        server.start(timeout=300)
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert_reference_top1(client)
        (mps_server,) = server.mps.server_pids()
        # tritonserver itself and at least the preprocess instance (KIND_GPU on a GPU host) hold CUDA contexts
        assert len(server.mps.client_pids(mps_server)) >= 2
    finally:
        server.stop()
    assert not server.mps.running  # the daemon quit with the server


def test_container_entry_point_stops_with_the_reason_when_mps_cannot_start(tmp_path, monkeypatch):
    from pixelserve.triton_local import launch

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PIXELSERVE_MPS", "1")
    monkeypatch.setenv("PIXELSERVE_MPS_DIR", str(tmp_path / "mps"))
    with pytest.raises(SystemExit) as stopped:
        launch.main(["--model-repository=/nonexistent"])
    assert "PIXELSERVE_MPS=1" in str(stopped.value.code) and CONTROL in str(stopped.value.code)
