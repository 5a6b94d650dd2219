"""The slow-execute log on a real server: preprocess reloaded with a 1 ms limit logs a request's phases."""
from __future__ import annotations

import json
import time

import pytest

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from encoded_requests import encoded_input, jpeg
from images import photo

pytestmark = pytest.mark.server


def test_a_slow_execute_is_logged_with_its_phases():
    import tritonclient.grpc as grpcclient

    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    args = ["--model-control-mode=explicit", "--load-model=image_classifier_encoded"]
    with LocalTritonServer([MODEL_REPOSITORY], extra_args=args) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        config = client.get_model_config("preprocess", as_json=True)["config"]
        assert config["parameters"]["slow_log_ms"]["string_value"] == "100"  # shipped
        data = jpeg(photo("chelsea"))
        client.infer("image_classifier_encoded", [encoded_input(grpcclient, data)])
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
