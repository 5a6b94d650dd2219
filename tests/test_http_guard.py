"""The HTTP guard in front of Triton's HTTP port (triton_local/http_guard.py).

Its checks on crafted requests (each refusal by name, and valid requests let through); the guard as a real process
in front of a small echo server (framing, pass-through, limits, garbage, a little fuzzing, Triton down); and in front
of a real supervised tritonserver on the shipped repository: real photos classified through it, the three HTTP
requests that crash Triton 2.51 refused quickly with no restart, garbage and broken connections survived, its cost
on a request, and /v2/health/ready telling the truth while the watchdog restarts a killed Triton.
"""
from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import signal
import socket
import statistics
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from waiting import wait_until

from pixelserve.triton_local import free_port
from pixelserve.triton_local.http_guard import HEAD_LIMIT, GuardProcess, check_request, parse_head, read_body, read_head
from pixelserve.triton_local.inference_checks import MAX_BODY_BYTES, REFUSED, Limits, Refused, nesting_within

INFER = "/v2/models/image_classifier/infer"


# ---- the checks, on crafted requests ---------------------------------------------------------------------------

def infer_json(*inputs: dict, outputs: list | None = None) -> bytes:
    request: dict = {"inputs": list(inputs)}
    if outputs is not None:
        request["outputs"] = outputs
    return json.dumps(request).encode()


def checked(body: bytes, path: str = INFER, headers: dict[str, str] | None = None,
            limits: Limits = Limits()) -> tuple[bytes, int | None]:
    """check_request on a POST of ``body`` to ``path``."""
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return check_request(parse_head((head + "\r\n").encode()), body, limits)


def refusal(body: bytes, **kwargs) -> Refused:
    with pytest.raises(Refused) as refused:
        checked(body, **kwargs)
    assert refused.value.message.startswith(REFUSED)
    return refused.value


def test_json_alloc_shape_is_refused():
    """Triton 2.51 allocates a JSON input's claimed shape before reading 'data': a huge claim with one value."""
    for shape in ([32, 8192, 8192, 3], [1, 100000, 100000, 3]):
        refused = refusal(infer_json({"name": "images", "shape": shape, "datatype": "UINT8", "data": [0]}))
        assert refused.status == 400 and "input 'images'" in refused.message and "claims" in refused.message
    # a claim a body could carry, but with one value: the count must match
    refused = refusal(infer_json({"name": "images", "shape": [1, 8192, 8192, 3], "datatype": "UINT8", "data": [0]}))
    assert "'data' holds 1 values, the shape [1, 8192, 8192, 3] needs 201326592" in refused.message


@pytest.mark.parametrize("data, held", [([1] * 11, 11), ([1] * 13, 13), ([[1, 2, 3]] * 3, 9), ([], 0), (7, 1)])
def test_json_value_count_must_match_the_shape(data, held):
    refused = refusal(infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": data}))
    assert f"'data' holds {held} values" in refused.message and "needs 12" in refused.message


@pytest.mark.parametrize("datatype, value", [("UINT8", 256), ("UINT8", -1), ("UINT8", 1.5), ("UINT8", True),
                                             ("INT8", 128), ("UINT16", 65536), ("INT32", 2**31), ("BOOL", 1)])
def test_json_values_that_triton_would_store_changed_are_refused(datatype, value):
    """Triton 2.51 stores 256 as 0 in UINT8 (and 1.5 as 1) with no error: an answer for other pixels than sent."""
    refused = refusal(infer_json({"name": "images", "shape": [1, 2], "datatype": datatype, "data": [[0, value]]}))
    assert refused.status == 400 and "input 'images'" in refused.message
    assert ("does not fit " + datatype in refused.message) or "not true or false" in refused.message, refused.message


@pytest.mark.parametrize("datatype, values", [("UINT8", [0, 255]), ("INT8", [-128, 127]), ("FP32", [1.5, -300]),
                                              ("BOOL", [True, False]), ("INT64", [-2**63, 2**63 - 1])])
def test_json_values_that_fit_pass(datatype, values):
    checked(infer_json({"name": "images", "shape": [1, 2], "datatype": datatype, "data": values}))


def test_bytes_json_counts_strings():
    body = infer_json({"name": "encoded", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "b", "c"]})
    assert "'data' holds 3 values" in refusal(body).message
    checked(infer_json({"name": "encoded", "shape": [3, 1], "datatype": "BYTES", "data": ["a", "b", "c"]}))


def test_nesting_depth_is_refused_before_parsing():
    for depth in (65, 1_000_000):
        refused = refusal(b"[" * depth + b"]" * depth)
        assert refused.status == 400 and "nested deeper than 64" in refused.message
    refusal(b"[" * 1_000_000)  # unbalanced, as deep
    refusal(b'{"a": [' + b"[]," * 10 + b"{" * 70 + b"}" * 70 + b"]}", path="/v2/repository/models/m/load")  # any body
    # brackets inside strings do not count, nor does depth up to the limit
    assert nesting_within(b'{"a": "' + b"[" * 1000 + b'", "b": [[1]]}', 3)
    assert nesting_within(b'{"a": "\\"' + b"[" * 1000 + b'\\"", "b": [[1]]}', 3)
    assert not nesting_within(b'{"a": "x", "b": [[1]]}', 2)
    checked(b"[" * 64 + b"]" * 64, path="/v2/repository/models/m/load")


def test_binary_data_size_must_match_the_shape():
    header = infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8",
                         "parameters": {"binary_data_size": 11}})
    refused = refusal(header + bytes(11), headers={"Inference-Header-Content-Length": str(len(header))})
    assert "binary_data_size 11 does not match the shape [1, 2, 2, 3] of UINT8 (12 bytes)" in refused.message
    header = infer_json({"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 6}})
    assert "(24 bytes)" in refusal(header + bytes(6), headers={"Inference-Header-Content-Length": str(len(header))}).message
    header = infer_json({"name": "encoded", "shape": [4, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}})
    assert "cannot hold the 4 BYTES" in refusal(header + bytes(8),
                                                headers={"Inference-Header-Content-Length": str(len(header))}).message
    refused = refusal(b"{}", headers={"Inference-Header-Content-Length": "3"})
    assert "does not fit a body of 2 bytes" in refused.message


@pytest.mark.parametrize("shape, problem", [
    ([2, 4611686018427387904, 4611686018427387904, 3], "more elements than int64"),  # wraps to 0 in int64
    ([1, 6148914691236517206, 1, 3], "more elements than int64"),  # wraps to 2 in int64
    ([1, 8, 4611686018427387904, 3], "more elements than int64"),
    ([1, (1 << 63) - 1, 0, 3], "claims 0 elements"),  # 0 elements, but a dimension no body carries
    ([1, -8, -8, 3], "negative dimension"),
    ([1, 2.0, 2, 3], "must be a list of integers"),
    ([1, True, 2, 3], "must be a list of integers"),
    ("1,2,2,3", "must be a list of integers"),
])  # fmt: skip
def test_insane_shapes_are_refused(shape, problem):
    refused = refusal(infer_json({"name": "images", "shape": shape, "datatype": "UINT8", "data": []}))
    assert problem in refused.message and "input 'images'" in refused.message


def test_input_without_data_and_repeated_keys_are_refused():
    assert "no 'data'" in refusal(infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8"})).message
    twice = b'{"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3], "datatype": "UINT8", "data": [0]}], ' \
            b'"inputs": [{"name": "images", "shape": [1], "datatype": "UINT8", "data": [0]}]}'
    assert "appears twice" in refusal(twice).message  # Triton would read the first, Python the last
    assert "not valid JSON" in refusal(b'{"inputs": [}').message


def test_the_standard_library_parser_checks_the_same(monkeypatch):
    """Without python-rapidjson (the container installs no tritonclient) the json module parses, as strictly."""
    from pixelserve.triton_local import inference_checks

    monkeypatch.setattr(inference_checks, "_rapidjson", None)
    test_json_alloc_shape_is_refused()
    test_input_without_data_and_repeated_keys_are_refused()
    test_valid_requests_pass()


def test_compressed_bodies_are_inflated_and_checked():
    good = infer_json({"name": "images", "shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]})
    body, _ = checked(gzip.compress(good), headers={"Content-Encoding": "gzip"})
    assert body == good  # forwarded plain
    bad = infer_json({"name": "images", "shape": [1, 100000, 100000, 3], "datatype": "UINT8", "data": [0]})
    assert "claims" in refusal(gzip.compress(bad), headers={"Content-Encoding": "gzip"}).message
    bomb = refusal(gzip.compress(bytes(2 << 20)), headers={"Content-Encoding": "gzip"}, limits=Limits(max_body_bytes=1 << 20))
    assert bomb.status == 413
    assert "unsupported Content-Encoding" in refusal(good, headers={"Content-Encoding": "br"}).message


def test_large_json_is_refused_with_a_pointer_to_binary_data():
    body = infer_json({"name": "images", "shape": [1, 1000, 1000, 3], "datatype": "UINT8", "data": [0] * 3_000_000})
    refused = refusal(body, limits=Limits(max_json_bytes=len(body) - 1))
    assert refused.status == 413 and "binary" in refused.message
    checked(body)  # 9 MB of JSON is fine by default


def test_valid_requests_pass():
    images = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    flat = infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": images.ravel().tolist()})
    assert checked(flat) == (flat, None)
    checked(infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": images.tolist()}))
    checked(infer_json({"name": "images", "shape": [0, 2, 2, 3], "datatype": "UINT8", "data": []}))
    header = infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8", "parameters": {"binary_data_size": 12}},
                        outputs=[{"name": "predictions", "parameters": {"binary_data": True}}])
    body, json_length = checked(header + images.tobytes(), headers={"Inference-Header-Content-Length": str(len(header))})
    assert json_length == len(header) and body == header + images.tobytes()
    # shared memory: the data is not in the body, so only the shape must be sane
    checked(infer_json({"name": "images", "shape": [32, 4096, 4096, 3], "datatype": "UINT8",
                        "parameters": {"shared_memory_region": "input0", "shared_memory_byte_size": 32 * 4096 * 4096 * 3}}))
    checked(infer_json())  # Triton's own error ("request has 0 inputs") stays Triton's
    checked(b"not json at all", path="/v2/repository/index")  # other APIs: only the nesting depth is looked at
    checked(infer_json({"name": "images", "shape": [1, 2, 2, 3], "datatype": "UINT8", "data": [1] * 12},
                       outputs=[{"name": "predictions", "parameters": {"classification": 5}}]),
            path="/v2/models/image_classifier/versions/1/infer")


class _NoWriter:
    """Stands for the client's StreamWriter where nothing is written (no Expect: 100-continue)."""

    def write(self, data: bytes) -> None:
        raise AssertionError("nothing to write")


def read_request(data: bytes, limits: Limits = Limits()) -> bytes:
    """The body read_head + read_body make of ``data`` sent by a client."""
    async def run() -> bytes:
        reader = asyncio.StreamReader(limit=HEAD_LIMIT)
        reader.feed_data(data)
        reader.feed_eof()
        head = await read_head(reader)
        return await read_body(reader, _NoWriter(), parse_head(head), limits)  # type: ignore[arg-type]

    return asyncio.run(run())


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_chunked_bodies_are_dechunked_within_limits():
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert read_request(head + chunked([b"ab", b"c" * 20, b"d"])) == b"ab" + b"c" * 20 + b"d"
    assert read_request(head + b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n") == b"abc"
    with pytest.raises(Refused) as refused:
        read_request(head + chunked([b"x"] * 100_001))
    assert refused.value.status == 400 and "more than 100000 chunks" in refused.value.message and refused.value.unread
    with pytest.raises(Refused) as refused:
        read_request(head + chunked([bytes(600_000)] * 2), Limits(max_body_bytes=1 << 20))
    assert refused.value.status == 413
    for broken in (b"zz\r\nab\r\n0\r\n\r\n", b"2\r\nabc\r\n0\r\n\r\n", b"-1\r\n\r\n"):
        with pytest.raises(Refused):
            read_request(head + broken)
    with pytest.raises(Refused, match="both Transfer-Encoding and Content-Length"):
        read_request(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc")
    with pytest.raises(Refused, match="unsupported Transfer-Encoding"):
        read_request(b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")


def test_oversized_and_malformed_heads_are_refused():
    with pytest.raises(Refused) as refused:
        read_request(b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
    assert refused.value.status == 413 and refused.value.unread
    with pytest.raises(Refused) as refused:
        read_request(b"GET /x HTTP/1.1\r\nX-Long: " + b"a" * HEAD_LIMIT + b"\r\n\r\n")
    assert refused.value.status == 431
    for head in (b"GET /x\r\n\r\n", b"GET  /x HTTP/1.1\r\n\r\n", b"GET /x HTTP/2.0\r\n\r\n", b"GET /x HTTP/1.1\r\nBad : x\r\n\r\n",
                 b"GET /x HTTP/1.1\r\nNoColon\r\n\r\n", b"GET /x HTTP/1.1\r\nA: b\nc\r\n\r\n",
                 b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
                 b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"POST /x HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"):
        with pytest.raises(Refused) as refused:
            read_request(head)
        assert refused.value.status == 400 and refused.value.unread, head
    assert read_request(b"\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") == b"abc"


# ---- where it is wired in ------------------------------------------------------------------------------------

def test_entry_point_puts_the_guard_on_the_http_port(monkeypatch):
    from pixelserve.triton_local import launch

    monkeypatch.delenv(launch.GUARD_ENV, raising=False)
    args, guard = launch.behind_guard(["--model-repository=/models", "--http-port", "9000", "--http-address=10.0.0.5"])
    assert guard is not None and guard.listen == ("10.0.0.5", 9000) and guard.upstream[0] == "127.0.0.1"
    assert args == ["--model-repository=/models", "--http-address=127.0.0.1", f"--http-port={guard.upstream[1]}"]
    assert launch._http_url(args) == f"127.0.0.1:{guard.upstream[1]}"  # the probe goes to Triton itself
    assert launch.behind_guard([])[1].listen == ("0.0.0.0", 8000)  # Triton's defaults
    monkeypatch.setenv(launch.GUARD_ENV, "0")
    assert launch.behind_guard(["--http-port=9000"]) == (["--http-port=9000"], None)


def test_entry_point_supervisor_starts_a_dead_guard_again(tmp_path):
    """launch.supervise (the container's PID 1) keeps the guard alive while it watches tritonserver (here a stand-in
    that exits after 3 s and never answers the probe)."""
    import subprocess

    from pixelserve.triton_local import launch

    guard = GuardProcess(("127.0.0.1", free_port()), ("127.0.0.1", free_port()), log_path=tmp_path / "guard.log")
    guard.start()
    stand_in = subprocess.Popen(["sleep", "3"], start_new_session=True)
    try:
        first = guard.pid
        threading.Timer(0.5, lambda: os.kill(first, signal.SIGKILL)).start()
        launch.supervise(stand_in, f"127.0.0.1:{free_port()}", 1.0, 3, guard=guard)
        assert guard.running and guard.pid != first
        assert get(guard.listen[1], "/v2/health/ready")[0] == 503  # answering, with nothing behind it
    finally:
        guard.stop()
        stand_in.kill()


def test_local_server_puts_triton_behind_the_guard_unless_told_not_to():
    from pixelserve.triton_local import LocalTritonServer
    from pixelserve.triton_local.__main__ import argument_parser

    guarded = LocalTritonServer([MODEL_REPOSITORY], http_port=18000, address="0.0.0.0")
    command = guarded.command()
    assert f"--http-port={guarded.triton_http_port}" in command and "--http-address=127.0.0.1" in command
    assert guarded.guard.listen == ("0.0.0.0", 18000) and guarded.http_url == "127.0.0.1:18000"
    assert "--grpc-address=0.0.0.0" in command  # gRPC and metrics are not proxied
    plain = LocalTritonServer([MODEL_REPOSITORY], http_port=18000, address="0.0.0.0", http_guard=False)
    assert plain.guard is None and "--http-port=18000" in plain.command() and "--http-address=0.0.0.0" in plain.command()
    assert plain.triton_http_url == plain.http_url
    assert argument_parser().parse_args([]).http_guard and not argument_parser().parse_args(["--no-http-guard"]).http_guard


# ---- the guard process in front of an echo server ----------------------------------------------------------------

class Echo(BaseHTTPRequestHandler):
    """Answers every request with what arrived: method, path, headers, body length (and a chunked answer on /chunked)."""

    protocol_version = "HTTP/1.1"

    def answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = json.dumps({"method": self.command, "path": self.path, "length": len(body), "body": body[:64].decode("latin-1"),
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(seen), 10):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(seen[start:start + 10]), seen[start:start + 10]))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(seen)

    do_GET = do_POST = do_PUT = do_HEAD = answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def echo_guard(tmp_path_factory):
    """A guard process (bodies up to 1 MiB) in front of an echo server; yields the guard."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    guard = GuardProcess(("127.0.0.1", free_port()), upstream.server_address, max_body_bytes=1 << 20,
                         log_path=tmp_path_factory.mktemp("guard") / "guard.log")
    guard.start()
    yield guard
    guard.stop()
    upstream.shutdown()


def raw_exchange(port: int, data: bytes, timeout: float = 30.0, half_close: bool = True) -> bytes:
    """Send ``data`` on a fresh connection (then stop sending) and read until the guard closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = bytearray()
        try:
            while chunk := sock.recv(1 << 16):
                answer += chunk
        except ConnectionResetError:
            pass
    return bytes(answer)


def unchunk(data: bytes) -> bytes:
    """A chunked body's data."""
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def ready_status(port: int) -> int:
    """/v2/health/ready's status on ``port``, 0 when nothing answers there."""
    try:
        return get(port, "/v2/health/ready")[0]
    except OSError:
        return 0


def get(port: int, path: str, method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_guard_forwards_requests_as_sent_with_checked_framing(echo_guard):
    port = echo_guard.listen[1]
    status, answer = get(port, "/v2/repository/index?x=1", "POST", b"{}", {"pixelserve-admin-key": "k", "Expect": "100-continue"})
    seen = json.loads(answer)
    assert status == 200 and seen["path"] == "/v2/repository/index?x=1" and seen["headers"]["pixelserve-admin-key"] == "k"
    assert seen["headers"]["content-length"] == "2" and "expect" not in seen["headers"]
    # a chunked request arrives de-chunked, with a Content-Length; a chunked answer is relayed as it came
    answer = raw_exchange(port, b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                          + chunked([b"hello ", b"world"]))
    assert status_of(answer) == 200 and b"transfer-encoding: chunked" in answer.lower()
    seen = json.loads(unchunk(answer.partition(b"\r\n\r\n")[2]))
    assert seen["body"] == "hello world" and seen["headers"]["content-length"] == "11"
    assert "transfer-encoding" not in seen["headers"]
    # two requests on one keep-alive connection, and a HEAD
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for path in ("/one", "/two"):
        connection.request("GET", path)
        assert json.loads(connection.getresponse().read())["path"] == path
    connection.request("HEAD", "/three")
    response = connection.getresponse()
    assert response.status == 200 and response.read() == b""
    connection.close()


def test_guard_refuses_past_its_limits_and_the_client_reads_the_answer(echo_guard):
    port = echo_guard.listen[1]
    started = time.monotonic()
    answer = raw_exchange(port, b"POST /x HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n" + bytes(2 << 20))
    assert status_of(answer) == 413 and REFUSED in body_of(answer)["error"]
    answer = raw_exchange(port, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked([b"x"] * 200_000))
    assert status_of(answer) == 400 and "more than 100000 chunks" in body_of(answer)["error"]
    answer = raw_exchange(port, b"GET /x HTTP/1.1\r\nX-Long: " + b"a" * (100 << 10) + b"\r\n\r\n")
    assert status_of(answer) == 431
    print(f"three refusals in {time.monotonic() - started:.2f} s")
    assert "refused by the pixelserve HTTP guard" in echo_guard.log_path.read_text()  # logged, one line each
    assert get(port, "/after")[0] == 200


def test_guard_survives_garbage_half_requests_and_disconnects(echo_guard):
    port, pid = echo_guard.listen[1], echo_guard.pid
    for garbage in (os.urandom(4096), b"\x00" * 100 + b"\r\n\r\n", b"\r\n\r\n\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200)):  # and a TLS hello
        answer = raw_exchange(port, garbage)
        assert answer == b"" or status_of(answer) in (400, 431), answer[:100]
    raw_exchange(port, b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789")  # half a body, then gone
    raw_exchange(port, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")  # half a chunk
    raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: a")  # half a head
    with socket.create_connection(("127.0.0.1", port)) as sock:  # a reset instead of a close
        sock.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert get(port, "/still-here")[0] == 200 and echo_guard.pid == pid and echo_guard.running


_TOKENS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G\x00T", b"", b"POST /v2/models/m/infer"])
_HEADERS = st.lists(st.sampled_from([
    b"Content-Length: 5", b"Content-Length: -5", b"Content-Length: 99999999999999999999", b"Content-Length: 5, 5",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", b"Inference-Header-Content-Length: 3",
    b"Inference-Header-Content-Length: x", b"Content-Encoding: gzip", b"Connection: close", b"Expect: 100-continue",
    b"X: \x01", b" folded", b":", b"Host: h"]), max_size=5)  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=_TOKENS, target=st.sampled_from([b"/v2/models/m/infer", b"/x", b"", b"*", b"/a b"]),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b""]), headers=_HEADERS,
       body=st.binary(max_size=64) | st.sampled_from([b"{}", b"[[[[", b"5\r\nhello\r\n0\r\n\r\n", b'{"inputs": 5}']))
def test_guard_fuzzed_requests_get_an_answer_or_a_close(echo_guard, method, target, version, headers, body):
    """A little fuzzing: odd request lines, headers and bodies; the guard answers each with a status or closes,
    and keeps serving."""
    request = method + b" " + target + b" " + version + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body
    answer = raw_exchange(echo_guard.listen[1], request, timeout=20)
    assert answer == b"" or answer.startswith(b"HTTP/1."), answer[:100]
    assert echo_guard.running


def test_guard_answers_503_while_triton_is_down(tmp_path):
    guard = GuardProcess(("127.0.0.1", free_port()), ("127.0.0.1", free_port()), log_path=tmp_path / "guard.log")
    guard.start()
    try:
        started = time.monotonic()
        status, answer = get(guard.listen[1], "/v2/health/ready")
        assert status == 503 and json.loads(answer) == {"error": "server restarting"}
        assert time.monotonic() - started < 5
    finally:
        guard.stop()


# ---- in front of a real tritonserver ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded_server():
    """A supervised tritonserver on the shipped repository behind the HTTP guard (LocalTritonServer's default)."""
    from pixelserve.triton_local import LocalTritonServer

    ensure_classifier_built()
    server = LocalTritonServer([MODEL_REPOSITORY], supervise=True)
    assert server.guard is not None and server.triton_http_port != server.http_port
    server.start(timeout=300)
    yield server
    server.stop()


def classify_http(url: str, image: np.ndarray, binary: bool = True) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        inp = httpclient.InferInput("images", [1, *image.shape], "UINT8")
        inp.set_data_from_numpy(image[None], binary_data=binary)
        return client.infer("image_classifier", [inp]).as_numpy("predictions")[0]
    finally:
        client.close()


def test_real_photos_are_classified_through_the_guard(guarded_server):
    from pixelserve.build import reference_images

    for name, expected in reference_images.EXPECTED_TOP1.items():
        image = reference_images.load_photo(name)
        assert int(classify_http(guarded_server.http_url, image).argmax()) in expected, name
    small = reference_images.load_photo("chelsea")[::4, ::4]  # JSON data, not the binary extension
    assert int(classify_http(guarded_server.http_url, np.ascontiguousarray(small), binary=False).argmax()) in range(281, 286)
    # the restricted APIs keep Triton's own key check
    assert get(guarded_server.http_port, "/v2/repository/index", "POST", b"{}")[0] == 403
    status, _ = get(guarded_server.http_port, "/v2/repository/index", "POST", b"{}", guarded_server.admin_headers)
    assert status == 200


def test_triton_crashers_are_refused_quickly_without_a_restart(guarded_server, capsys):
    from test_fuzz import CRASHER_EXAMPLES, GUARDED, send_crasher

    pid = guarded_server._process.pid
    for name in ("json_alloc", "nested", "chunked"):
        for case in CRASHER_EXAMPLES[name]:
            assert case.transport in GUARDED
            started = time.monotonic()
            outcome = send_crasher(guarded_server, case)
            took = time.monotonic() - started
            with capsys.disabled():
                print(f"\n{name} {case.shape}: HTTP {outcome.status} in {took:.2f} s: {outcome.message[:120]}")
            assert not outcome.ok and outcome.status in (400, 413) and REFUSED in outcome.message, outcome
            assert took < 10
            assert int(classify_http(guarded_server.http_url, photo_small()).argmax()) in range(281, 286)
    assert guarded_server._process.pid == pid and not guarded_server.restarts
    log = guarded_server.guard_log_path.read_text()
    assert log.count("WARNING") >= 4 and "nested deeper than 64" in log and "more than 100000 chunks" in log


def photo_small() -> np.ndarray:
    from pixelserve.build import reference_images

    return np.ascontiguousarray(reference_images.load_photo("chelsea")[::2, ::2])


def test_guard_survives_broken_clients_in_front_of_triton(guarded_server):
    port, guard_pid, pid = guarded_server.http_port, guarded_server.guard.pid, guarded_server._process.pid
    raw_exchange(port, os.urandom(8192))
    raw_exchange(port, b"POST " + INFER.encode() + b" HTTP/1.1\r\nContent-Length: 5000\r\n\r\n{\"inputs\": [")
    image = photo_small()
    header = infer_json({"name": "images", "shape": [1, *image.shape], "datatype": "UINT8",
                         "parameters": {"binary_data_size": image.nbytes}})
    request = (f"POST {INFER} HTTP/1.1\r\nHost: t\r\nInference-Header-Content-Length: {len(header)}\r\n"
               f"Content-Length: {len(header) + image.nbytes}\r\n\r\n").encode() + header + image.tobytes()
    for _ in range(3):  # gone before the answer, with a close and with a reset
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw_exchange(port, request[: len(request) // 2])  # half a request
    assert int(classify_http(guarded_server.http_url, image).argmax()) in range(281, 286)
    assert guarded_server.guard.pid == guard_pid and guarded_server._process.pid == pid and not guarded_server.restarts


def test_guard_cost_on_small_requests(guarded_server, capsys):
    """Median latency of 50 small requests straight to Triton's HTTP port and through the guard (printed only)."""
    rng = np.random.default_rng(0)

    def timed(port: int, method: str, path: str, body: bytes | None, connection: http.client.HTTPConnection) -> float:
        started = time.perf_counter()
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, (port, path, response.status)
        return time.perf_counter() - started

    lines = []
    for what, method, path in (("GET /v2/health/ready", "GET", "/v2/health/ready"),
                               ("classify 8x8 JSON", "POST", INFER)):
        times: dict[str, list[float]] = {"direct": [], "guard": []}
        ports = {"direct": guarded_server.triton_http_port, "guard": guarded_server.http_port}
        connections = {k: http.client.HTTPConnection("127.0.0.1", p, timeout=30) for k, p in ports.items()}
        for i in range(55):  # 5 to warm up, then 50 of each, alternating
            for key in ("direct", "guard"):
                body = None
                if method == "POST":
                    body = infer_json({"name": "images", "shape": [1, 8, 8, 3], "datatype": "UINT8",
                                       "data": rng.integers(0, 256, 192).tolist()})
                took = timed(ports[key], method, path, body, connections[key])
                if i >= 5:
                    times[key].append(took)
        for connection in connections.values():
            connection.close()
        direct, guarded = (statistics.median(times[k]) * 1000 for k in ("direct", "guard"))
        lines.append(f"{what}: median direct {direct:.2f} ms, through the guard {guarded:.2f} ms "
                     f"(+{guarded - direct:.2f} ms)")
    with capsys.disabled():
        print("\nHTTP guard cost (50 requests each, keep-alive, this host's CPU):\n  " + "\n  ".join(lines))


def test_a_dead_guard_is_started_again_by_the_watchdog(guarded_server):
    guard_pid, pid = guarded_server.guard.pid, guarded_server._process.pid
    os.kill(guard_pid, signal.SIGKILL)
    wait_until(lambda: guarded_server.guard.pid, lambda now: now not in (guard_pid, None), "a new guard process", 30)
    wait_until(lambda: ready_status(guarded_server.http_port), lambda status: status == 200, "ready through it", 30)
    assert guarded_server._process.pid == pid and not guarded_server.restarts  # Triton left alone


def test_health_through_the_guard_tells_the_truth_while_triton_restarts(guarded_server, capsys):
    """SIGKILL tritonserver: /v2/health/ready through the guard says 503 at once (not a hang, not a stale 200), and
    200 again after the watchdog's restart, on the same port, with the same guard process."""
    port, guard_pid, before = guarded_server.http_port, guarded_server.guard.pid, len(guarded_server.restarts)
    os.kill(guarded_server._process.pid, signal.SIGKILL)
    killed = time.monotonic()
    down = wait_until(lambda: get(port, "/v2/health/ready"), lambda seen: seen[0] != 200, "a non-200 ready answer", 10)
    assert down[0] == 503 and json.loads(down[1]) == {"error": "server restarting"}, down
    seen_down = time.monotonic() - killed
    wait_until(lambda: get(port, "/v2/health/ready")[0], lambda status: status == 200, "ready again", 120, poll_s=0.2)
    back = time.monotonic() - killed
    wait_until(lambda: len(guarded_server.restarts), lambda count: count > before, "the watchdog's restart record", 120)
    assert guarded_server.guard.pid == guard_pid and guarded_server.guard.running
    assert int(classify_http(guarded_server.http_url, photo_small()).argmax()) in range(281, 286)
    with capsys.disabled():
        print(f"\nkilled tritonserver: 503 through the guard after {seen_down:.2f} s, 200 again after {back:.1f} s")
