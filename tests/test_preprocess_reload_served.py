"""preprocess reloaded on a real server with other parameters (explicit model control, one server for the module):
a 1 ms slow-execute limit logs a request's phases; a setting it cannot use refuses the load, and the version that
was serving keeps serving."""
from __future__ import annotations

import json
import time

import pytest

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from encoded_requests import encoded_input, jpeg
from images import photo

from pixelserve.model_runtime.cuda_host_wait import HOST_WAIT_PARAMETER

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server():
    """tritonserver on the shipped repository serving image_classifier_encoded, models loadable by the admin."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    args = ["--model-control-mode=explicit", "--load-model=image_classifier_encoded"]
    with LocalTritonServer([MODEL_REPOSITORY], extra_args=args) as running:
        yield running


@pytest.fixture
def client(server):
    """A gRPC client of the module's server; preprocess is back to its file's config after the test."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.load_model("preprocess", headers=server.admin_headers)


def test_a_slow_execute_is_logged_with_its_phases(server, client):
    import tritonclient.grpc as grpcclient

    config = client.get_model_config("preprocess", as_json=True)["config"]
    assert config["parameters"]["slow_log_ms"]["string_value"] == "100"  # shipped
    client.infer("image_classifier_encoded", [encoded_input(grpcclient, jpeg(photo("chelsea")))])
    assert "preprocess: slow execute()" not in server.log_path.read_text(errors="replace")  # a small photo: far under 100 ms

    config["parameters"]["slow_log_ms"]["string_value"] = "0.001"  # every execute is slow now
    client.load_model("preprocess", config=json.dumps(config), headers=server.admin_headers)
    # another photo: the ensemble's response cache would answer the same bytes without running preprocess
    client.infer("image_classifier_encoded", [encoded_input(grpcclient, jpeg(photo("coffee")))])
    deadline = time.monotonic() + 10
    while "preprocess: slow execute()" not in (log := server.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"no slow-execute line in the log:\n{server.log_tail()}"
        time.sleep(0.2)
    line = next(x for x in log.splitlines() if "preprocess: slow execute()" in x)
    assert "for 1 request(s)" in line and "decode" in line and "outside the timed phases" in line


def test_a_bad_gpu_host_wait_refuses_the_load_and_the_server_keeps_serving(server, client):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    config = client.get_model_config("preprocess", as_json=True)["config"]
    assert config["parameters"][HOST_WAIT_PARAMETER]["string_value"] == "auto"  # shipped
    config["parameters"][HOST_WAIT_PARAMETER] = {"string_value": "sometimes"}
    with pytest.raises(InferenceServerException, match=f"{HOST_WAIT_PARAMETER}='sometimes'"):
        client.load_model("preprocess", config=json.dumps(config), headers=server.admin_headers)
    # The version that was serving still serves.
    scores = client.infer("image_classifier_encoded", [encoded_input(grpcclient, jpeg(photo("rocket")))])
    assert scores.as_numpy("predictions").shape == (1, 1000)
    assert client.is_model_ready("preprocess")
