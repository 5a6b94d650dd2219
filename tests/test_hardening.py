"""Safe defaults and recovery parts, each on its own: the shape check, the admin key, stale shm cleanup, the
container entry point's supervisor. (The fuzzer and the kill tests against a running server: test_fuzz.py.)"""
from __future__ import annotations

import mmap
import os
import signal
import time
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from pixelserve.build.classifier_config import preprocess_spec
from pixelserve.kernels_numba import ImageError, check_batch_shape
from pixelserve.perf import perf_config, run_perf
from pixelserve.triton_local import access, launch
from pixelserve.triton_local import server as server_module
from pixelserve.triton_local.server import SHM_DIR, SHM_REGION_PREFIX, clean_stale_shm_regions
from pixelserve.triton_local.stubs import StubWatch
from waiting import wait_until

SPEC = preprocess_spec()


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 40)), max_size=6))
def test_batch_shape_check_accepts_only_sane_batches_and_raises_only_image_error(shape):
    sane = (len(shape) == 4 and 1 <= shape[0] <= 32 and 1 <= shape[1] <= SPEC.max_image_side
            and 1 <= shape[2] <= SPEC.max_image_side and shape[3] == 3)  # fmt: skip
    try:
        check_batch_shape(shape, SPEC, 32)
    except ImageError:
        assert not sane
    else:
        assert sane


@pytest.mark.parametrize("shape, message", [
    ([1, 8, 4611686018427387904, 3], "exceeds the maximum side"),
    ([1, -8, -8, 3], "negative dimension"),
    ([0, 2, 2, 3], "0 images in one request"),
    ([33, 2, 2, 3], "33 images in one request"),
    ([2, 2, 3], "expected [batch, height, width, 3]"),
])  # fmt: skip
def test_batch_shape_check_names_the_problem(shape, message):
    with pytest.raises(ImageError, match=message.replace("[", r"\[")):
        check_batch_shape(shape, SPEC, 32)


def test_restricted_api_arguments_and_headers():
    args = access.restricted_api_args("k3y")
    assert args == ["--http-restricted-api=model-repository,shared-memory,logging,trace:pixelserve-admin-key=k3y",
                    "--grpc-restricted-protocol=model-repository,shared-memory,logging,trace:pixelserve-admin-key=k3y"]
    for bad in ("", "a,b", "a:b", "a=b", "a b"):
        with pytest.raises(ValueError):
            access.restricted_api_args(bad)
    assert access.admin_headers("k3y") == {"pixelserve-admin-key": "k3y", "triton-grpc-protocol-pixelserve-admin-key": "k3y"}
    assert access.admin_key() != access.admin_key() or os.environ.get(access.KEY_ENV)  # random unless set


def test_perf_analyzer_gets_the_key_only_for_shared_memory_and_logs_hide_it(tmp_path):
    config = perf_config.RunConfig()
    plain = run_perf.perf_analyzer_args(config, "h:1", tmp_path / "i.json", "none", "1", tmp_path / "o.csv", "s3cret")
    shm = run_perf.perf_analyzer_args(config, "h:1", tmp_path / "i.json", "system", "1", tmp_path / "o.csv", "s3cret")
    assert "-H" not in plain
    assert "triton-grpc-protocol-pixelserve-admin-key:s3cret" in shm and "pixelserve-admin-key:s3cret" in shm
    shown = access.redact_headers(shm)
    assert "s3cret" not in " ".join(shown) and "pixelserve-admin-key:$PIXELSERVE_ADMIN_KEY" in shown


def test_stale_shm_regions_are_removed_and_mapped_ones_kept():
    stale, live = (SHM_DIR / f"{SHM_REGION_PREFIX}pixelserve-test-{os.getpid()}-{tag}" for tag in ("stale", "live"))
    for path in (stale, live):
        path.write_bytes(b"\0" * 4096)
        os.utime(path, (time.time() - 60, time.time() - 60))
    with open(live, "r+b") as handle, mmap.mmap(handle.fileno(), 4096):
        try:
            removed = clean_stale_shm_regions()
            assert stale.name in removed and not stale.exists()
            assert live.exists() and live.name not in removed
        finally:
            stale.unlink(missing_ok=True)
    live.unlink()


def _ready(http_url: str) -> bool:
    """Whether Triton's own /v2/health/ready answers 200 (what load balancers and tritonclient ask)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _seconds_still_ready(http_url: str, limit: float = 30.0) -> float:
    """Seconds for which /v2/health/ready keeps answering 200 (polled every 10 ms), at most ``limit``."""
    start = time.monotonic()
    while _ready(http_url) and time.monotonic() - start < limit:
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def stub_listed(monkeypatch) -> Callable[[str], None]:
    """Wait until the StubWatch of the supervisor under test (launch.supervise, LocalTritonServer's watchdog) has
    listed the stub of a model instance: a stub killed before that is seen only at the next probe."""
    listings: list[frozenset[str]] = []

    class ListingWatch(StubWatch):
        def refresh(self, server_pid: int) -> None:
            super().refresh(server_pid)
            listings.append(frozenset(self.known.values()))

    monkeypatch.setattr(launch, "StubWatch", ListingWatch)
    monkeypatch.setattr(server_module, "StubWatch", ListingWatch)

    def wait(instance: str, timeout: float = 60.0) -> None:
        wait_until(lambda: listings[-1] if listings else frozenset(), lambda names: instance in names,
                   f"the supervisor to list the stub of {instance}", timeout)

    return wait


@pytest.mark.server
def test_container_entry_point_stops_a_server_whose_stub_died_before_its_next_probe(stub_listed):
    """launch.supervise (the container's PID 1) kills the server and exits non-zero, so Docker restarts it. With a
    30 s probe interval the death is still acted on within a second: the stubs are watched between probes, so
    /v2/health/ready stops saying 200 (Triton 2.51 says 200 with a dead stub while every request fails)."""
    import threading

    from pixelserve.triton_local import LocalTritonServer
    from pixelserve.triton_local.launch import supervise

    ensure_classifier_built()
    with LocalTritonServer([MODEL_REPOSITORY]) as server:
        result = {}
        watcher = threading.Thread(target=lambda: result.update(
            code=supervise(server._process, server.http_url, 30.0, 3)))
        watcher.start()
        stub_listed("preprocess_0_0")  # by the first probe, at once, which found the server healthy
        assert _ready(server.http_url)
        os.kill(server.stub_pid("preprocess_0_0"), signal.SIGKILL)
        still_ready = _seconds_still_ready(server.http_url)
        watcher.join(60)
        print(f"ready for {still_ready:.3f} s after the stub died")
        assert result.get("code") == 1
        assert server._process.poll() is not None
        assert still_ready < 0.9, f"/v2/health/ready said 200 for {still_ready:.2f} s after the stub died"


@pytest.mark.server
def test_watchdog_restarts_at_once_when_a_stub_dies_between_probes(stub_listed):
    """LocalTritonServer's watchdog (pixelserve-server) with a 30 s probe interval: a killed stub is seen by the
    stub watch, not the probe, so /v2/health/ready stops saying 200 within a second; the service comes back."""
    from pixelserve.triton_local import LocalTritonServer
    from pixelserve.triton_local.health import probe

    ensure_classifier_built()
    server = LocalTritonServer([MODEL_REPOSITORY], supervise=True, probe_interval=30.0)
    with server:
        stub_listed("preprocess_0_0")  # by the watchdog as it starts (start() returned once the server was ready)
        os.kill(server.stub_pid("preprocess_0_0"), signal.SIGKILL)
        still_ready = _seconds_still_ready(server.http_url)
        print(f"ready for {still_ready:.3f} s after the stub died")
        assert still_ready < 0.9, f"/v2/health/ready said 200 for {still_ready:.2f} s after the stub died"
        restarts = wait_until(lambda: list(server.restarts), bool, "the watchdog to restart the server", 120)
        assert "preprocess_0_0" in restarts[0].reason, restarts
        server.wait_healthy(120)
        probe(server.http_url)


def test_free_ports_are_never_handed_out_twice():
    """A server gets several ports from free_port (gRPC, HTTP, the guard's upstream, metrics): the kernel may
    return one free port to two bind(0) calls in a row, which would give a server one port twice."""
    from pixelserve.triton_local import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
