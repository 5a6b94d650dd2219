"""An HTTP guard in front of Triton's HTTP port: it refuses the requests that crash Triton 2.51's HTTP front end.

Triton 2.51 (the pip wheel we serve) dies or stalls on three kinds of HTTP request before any model runs, and
none can be fixed from a model:

- ``json_alloc``: a JSON inference input that claims a huge shape with a single value in ``data``; Triton
  allocates shape x element size before reading ``data`` (seconds of stall and gigabytes, or a std::bad_alloc
  abort). Fixed upstream by ``--http-max-input-size`` (triton-inference-server/server#8174) and by checking a JSON
  input's size before allocating (server#8676); 2.51 has neither.
- ``nested``: a body of 10^6 nested brackets overflows the JSON parser's stack.
- ``chunked``: a body in ~10^6 tiny chunks (Transfer-Encoding: chunked) overflows the stack (CVE-2025-23310/23311).

The checks themselves are in inference_checks.py. The guard is a small asyncio reverse proxy that owns the
user-facing HTTP port; Triton's own HTTP listens on
loopback behind it. For every request it reads the head (at most HEAD_LIMIT bytes: 431) and the whole body: a
``Content-Length`` up to ``max_body_bytes`` (413), or a chunked body, which it de-chunks itself (at most MAX_CHUNKS
chunks: 400) and forwards with a Content-Length, so Triton never reads chunks; a gzip/deflate body is inflated here
(within the same size) and forwarded plain. A JSON body (or the JSON header of the binary tensor extension) larger
than MAX_JSON_BYTES (413) or nested deeper than MAX_JSON_DEPTH (400) is refused. An inference request (a path ending in ``/infer``) is parsed, and each
input must have a shape of non-negative integers whose element count fits int64 and (unless its data is in a
shared-memory region) the largest body; JSON ``data`` must hold exactly that many values and a ``binary_data_size``
must be that many elements of the datatype. Refusals are answered as Triton answers errors, ``{"error": "..."}``,
and logged (one warning line each). Everything else passes through unchanged (health, metadata, repository,
shared memory, statistics, trace, logging, and the admin-key checks Triton does on them). While Triton is down
(restarting) every request gets 503 ``{"error": "server restarting"}``.

Run it: ``python -m pixelserve.triton_local.http_guard --listen 0.0.0.0:8000 --upstream 127.0.0.1:18000``.
``LocalTritonServer`` and ``pixelserve-tritonserver`` start it as a child process (``GuardProcess``) by default.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Sequence

from .inference_checks import (
    MAX_BODY_BYTES,
    MAX_CHUNKS,
    MAX_JSON_BYTES,
    Limits,
    Refused,
    check_inference,
    inflated,
    nesting_within,
    parse_json,
)


log = logging.getLogger("pixelserve.http_guard")

HEAD_LIMIT = 64 << 10  # bytes of a request head (request line and headers), and of a chunked body's trailers
IDLE_TIMEOUT_S = 300.0  # a client connection may wait this long before (or in) a request head
BODY_TIMEOUT_S = 600.0  # and this long for a whole body
CONNECT_TIMEOUT_S = 5.0  # to open a connection to Triton
DRAIN_BYTES = 1 << 30  # after a refusal that leaves a body unread: how much of it is read and dropped ...
DRAIN_TIMEOUT_S = 10.0  # ... for at most this long, so that the client reads the answer instead of a reset
UPSTREAM_LIMIT = 1 << 20  # buffer of a connection to Triton (a response head must fit)
SMALL = 64 << 10  # bodies up to this size are written together with their head
OFFLOAD_BYTES = 1 << 20  # JSON parts larger than this are checked in a thread, off the event loop

# Headers the guard sets itself when forwarding (framing and connection handling), dropped from the client's.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
                         "expect", "content-length", "content-encoding", "inference-header-content-length"})
SINGLE_HEADERS = ("content-length", "transfer-encoding", "content-encoding", "inference-header-content-length")
REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


class UpstreamDown(Exception):
    """Triton could not be reached, or closed the connection before answering: the client may be told so."""


class UpstreamLost(Exception):
    """The exchange broke after part of Triton's answer reached the client: the connection can only be closed."""


@dataclass
class Request:
    """One request's head as the client sent it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); several occurrences joined with ", "."""
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        """Whether the client keeps the connection open after the answer (HTTP/1.1 unless it says close)."""
        tokens = {token.strip().lower() for token in (self.header("connection") or "").split(",")}
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens

    @property
    def is_inference(self) -> bool:
        """A request Triton may route to its inference handler: /v2/models/<name>[/versions/<v>]/infer."""
        return self.path.endswith("/infer")


# ---- reading a request --------------------------------------------------------------------------------------

def parse_head(head: bytes) -> Request:
    """The request line and headers of ``head`` (ending in an empty line); Refused (400) when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    while lines and not lines[-1]:
        lines.pop()
    parts = lines[0].split(" ") if lines else []
    if (len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or _BAD_TARGET.search(parts[1])
            or parts[2] not in ("HTTP/1.1", "HTTP/1.0")):
        raise Refused(400, f"malformed request line {(lines[0] if lines else '')[:80]!r}", unread=True)
    request = Request(parts[0], parts[1], parts[2])
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise Refused(400, f"malformed header line {line[:80]!r}", unread=True)
        request.headers.append((name, value))
    for name in SINGLE_HEADERS:
        if sum(key.lower() == name for key, _ in request.headers) > 1:
            raise Refused(400, f"more than one {name} header", unread=True)
    return request


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next request head from the client; None when the client has gone (or sent half a head and left)."""
    while True:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            raise Refused(431, f"request head larger than {HEAD_LIMIT} bytes", unread=True) from None
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            return None
        head = head.lstrip(b"\r\n")  # empty lines before a request are allowed
        if head:
            return head


async def read_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request,
                    limits: Limits) -> bytes:
    """The whole body of ``request``: Content-Length bytes, or a chunked body de-chunked; Refused past the limits."""
    chunked, length = request.header("transfer-encoding"), request.header("content-length")
    if chunked is not None:
        if length is not None:
            raise Refused(400, "both Transfer-Encoding and Content-Length", unread=True)
        if chunked.strip().lower() != "chunked":
            raise Refused(400, f"unsupported Transfer-Encoding {chunked[:40]!r}", unread=True)
        await _continue(writer, request)
        return await asyncio.wait_for(read_chunked(reader, limits), BODY_TIMEOUT_S)
    if length is None:
        return b""
    if not _DIGITS.fullmatch(length):
        raise Refused(400, f"malformed Content-Length {length[:40]!r}", unread=True)
    if int(length) > limits.max_body_bytes:
        raise Refused(413, f"body of {int(length)} bytes, more than {limits.max_body_bytes}", unread=True)
    await _continue(writer, request)
    return await asyncio.wait_for(reader.readexactly(int(length)), BODY_TIMEOUT_S)


async def _continue(writer: asyncio.StreamWriter, request: Request) -> None:
    """Answer ``Expect: 100-continue`` before reading a body that will be read (Triton never sees the Expect)."""
    if (request.header("expect") or "").strip().lower() == "100-continue" and request.version == "HTTP/1.1":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()


async def read_chunked(reader: asyncio.StreamReader, limits: Limits) -> bytes:
    """A chunked body, de-chunked (trailers dropped); Refused past ``limits`` or when malformed."""
    body, chunks = bytearray(), 0
    while True:
        size = _chunk_size(await _line(reader))
        if size == 0:
            break
        chunks += 1
        if chunks > limits.max_chunks:
            raise Refused(400, f"chunked body of more than {limits.max_chunks} chunks", unread=True)
        if len(body) + size > limits.max_body_bytes:
            raise Refused(413, f"chunked body of more than {limits.max_body_bytes} bytes", unread=True)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise Refused(400, "malformed chunk: no CRLF after its data", unread=True)
    trailers = 0
    while (line := await _line(reader)) != b"\r\n":
        trailers += len(line)
        if trailers > HEAD_LIMIT:
            raise Refused(431, f"chunked trailers larger than {HEAD_LIMIT} bytes", unread=True)
    return bytes(body)


async def _line(reader: asyncio.StreamReader) -> bytes:
    """One CRLF-ended line of a chunked body (at most the reader's limit)."""
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise Refused(400, "malformed chunked body: a line without CRLF", unread=True) from None


def _chunk_size(line: bytes) -> int:
    """The size on a chunk's size line (extensions ignored)."""
    text = line[:-2].split(b";", 1)[0].strip(b" \t")
    if not _HEX.fullmatch(text):
        raise Refused(400, f"malformed chunk size {text[:20]!r}", unread=True)
    return int(text, 16)


# ---- checking a request ---------------------------------------------------------------------------------------

def check_request(request: Request, body: bytes, limits: Limits) -> tuple[bytes, int | None]:
    """The body to forward (inflated) and its JSON part's length where the binary extension says it; Refused
    when the JSON is nested too deep or an inference request's inputs are unsafe for Triton 2.51."""
    body = inflated(request.header("content-encoding"), body, limits)
    json_length = _json_length(request, body)
    part = body if json_length is None else body[:json_length]
    if len(part) > limits.max_json_bytes:
        raise Refused(413, f"JSON of {len(part)} bytes, more than {limits.max_json_bytes} (send large tensors as "
                           "binary data: the binary tensor extension)")
    if not nesting_within(part, limits.max_depth):
        raise Refused(400, f"JSON nested deeper than {limits.max_depth} levels (or with unbalanced brackets)")
    if request.is_inference:
        try:
            document = parse_json(part)
        except (ValueError, RecursionError, OverflowError, TypeError) as exc:
            raise Refused(400, f"the inference request is not valid JSON ({str(exc)[:120]})") from None
        check_inference(document, limits)
    return body, json_length


def _json_length(request: Request, body: bytes) -> int | None:
    """Inference-Header-Content-Length (the binary tensor extension's JSON part), checked against the body."""
    value = request.header("inference-header-content-length")
    if value is None:
        return None
    if not _DIGITS.fullmatch(value) or int(value) > len(body):
        raise Refused(400, f"Inference-Header-Content-Length {value[:40]!r} does not fit a body of {len(body)} bytes")
    return int(value)


# ---- forwarding ---------------------------------------------------------------------------------------------

def upstream_head(request: Request, body: bytes, json_length: int | None) -> bytes:
    """The head forwarded to Triton: the client's, with the framing the guard checked (a Content-Length)."""
    lines = [f"{request.method} {request.target} {request.version}"]
    lines += [f"{name}: {value}" for name, value in request.headers if name.lower() not in HOP_HEADERS]
    if json_length is not None:
        lines.append(f"Inference-Header-Content-Length: {json_length}")
    if body or request.header("content-length") is not None or request.header("transfer-encoding") is not None:
        lines.append(f"Content-Length: {len(body)}")
    if request.version == "HTTP/1.0":
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(status: int, message: str, close: bool) -> bytes:
    """An answer of the guard's own, in Triton's error format."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


@dataclass
class _Response:
    """Triton's answer head, and how its body is framed."""

    head: bytes
    status: int
    length: int | None  # Content-Length; None: chunked, until close, or no body
    chunked: bool
    closes: bool  # Triton closes the connection after it


def parse_response_head(head: bytes, head_only: bool) -> _Response:
    """Triton's response head: status, framing and connection, its Connection headers dropped."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    kept, length, chunked, closes = [lines[0]], None, False, lines[0].startswith("HTTP/1.0")
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        key, value = name.strip().lower(), value.strip()
        if key == "content-length":
            length = int(value)
        elif key == "transfer-encoding":
            chunked = "chunked" in value.lower()
        if key in ("connection", "keep-alive"):
            closes = closes or "close" in value.lower()
            continue
        kept.append(line)
    if head_only or status in (204, 304) or 100 <= status < 200:
        length, chunked = 0, False
    return _Response("\r\n".join(kept).encode("latin-1"), status, length, chunked, closes)


class Upstream:
    """One client connection's persistent connection to Triton."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The open connection, or a new one (UpstreamDown when Triton does not accept one)."""
        if (self.reader is not None and self.writer is not None and not self.writer.is_closing()
                and not self.reader.at_eof() and self.reader.exception() is None):
            return self.reader, self.writer
        self.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*self.address, limit=UPSTREAM_LIMIT), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamDown(f"{type(exc).__name__}: {exc}") from None
        self.reader, self.writer = reader, writer
        return reader, writer

    async def exchange(self, head: bytes, body: bytes, client: asyncio.StreamWriter, head_only: bool,
                       close_client: bool) -> bool:
        """Send one request and relay Triton's answer to ``client``; whether the client connection may go on."""
        reader, writer = await self.connect()
        try:
            writer.write(head + body if len(body) <= SMALL else head)
            if len(body) > SMALL:
                writer.write(body)
            await writer.drain()
            while True:
                response = parse_response_head(await reader.readuntil(b"\r\n\r\n"), head_only)
                if not 100 <= response.status < 200:
                    break
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            self.close()
            raise UpstreamDown(f"{type(exc).__name__}: {exc}") from None
        until_close = response.length is None and not response.chunked
        closing = close_client or until_close
        head_out = response.head + (b"\r\nConnection: close" if closing else b"") + b"\r\n\r\n"
        try:
            await self._relay_body(reader, client, response, head_out)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise UpstreamLost(f"{type(exc).__name__}: {exc}") from None
        if response.closes or until_close:
            self.close()
        return not closing

    @staticmethod
    async def _relay_body(reader: asyncio.StreamReader, client: asyncio.StreamWriter, response: _Response,
                          head: bytes) -> None:
        """Write ``head`` and the body as Triton frames it (Content-Length, chunks as they come, or until close)."""
        if response.length is not None and response.length <= SMALL:
            client.write(head + await reader.readexactly(response.length))
            await client.drain()
            return
        client.write(head)
        if response.chunked:
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line[:-2].split(b";", 1)[0].strip(), 16)
                client.write(line + (await reader.readexactly(size + 2) if size else b""))
                await client.drain()
                if size == 0:
                    while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                        client.write(trailer)
                    client.write(b"\r\n")
                    break
        else:
            remaining = response.length if response.length is not None else -1
            while remaining != 0:
                piece = await reader.read(UPSTREAM_LIMIT if remaining < 0 else min(remaining, UPSTREAM_LIMIT))
                if not piece:
                    if remaining < 0:
                        break
                    raise EOFError(f"{remaining} bytes of the answer missing")
                client.write(piece)
                remaining -= len(piece) if remaining > 0 else 0
                await client.drain()
        await client.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---- serving ------------------------------------------------------------------------------------------------

async def serve_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream,
                        limits: Limits, peer: str) -> bool:
    """Read, check and forward one request and relay its answer; whether the connection may carry another."""
    request: Request | None = None
    try:
        head = await read_head(reader)
        if head is None:
            return False
        request = parse_head(head)
        body = await read_body(reader, writer, request, limits)
        if len(body) > OFFLOAD_BYTES:
            body, json_length = await asyncio.get_running_loop().run_in_executor(
                None, check_request, request, body, limits)
        else:
            body, json_length = check_request(request, body, limits)
    except Refused as refusal:
        where = f"{request.method} {request.path[:120]}" if request else "-"
        log.warning("%s %s: %d %s", peer, where, refusal.status, refusal.message)
        close = refusal.unread or request is None or not request.keep_alive
        writer.write(error_response(refusal.status, refusal.message, close))
        await writer.drain()
        if refusal.unread:
            await drain_client(reader, writer)
        return not close
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
        return False  # the client left in the middle of its request
    try:
        return await upstream.exchange(upstream_head(request, body, json_length), body, writer,
                                       request.method == "HEAD", not request.keep_alive)
    except UpstreamDown as exc:
        log.info("%s %s %s: Triton unreachable (%s): 503", peer, request.method, request.path[:120], exc)
        writer.write(error_response(503, "server restarting", not request.keep_alive))
        await writer.drain()
        return request.keep_alive
    except UpstreamLost:
        return False


async def drain_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an answer sent before the body was read: stop writing, read and drop what the client still sends
    (bounded), so that it sees the answer rather than a connection reset."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        deadline, drained = time.monotonic() + DRAIN_TIMEOUT_S, 0
        while drained < DRAIN_BYTES and time.monotonic() < deadline:
            piece = await asyncio.wait_for(reader.read(1 << 20), max(deadline - time.monotonic(), 0.01))
            if not piece:
                break
            drained += len(piece)
    except (OSError, asyncio.TimeoutError):
        pass


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream_address: tuple[str, int],
                        limits: Limits) -> None:
    """Serve one client connection, request after request, over one connection to Triton; never raises."""
    peer = str(writer.get_extra_info("peername"))
    upstream = Upstream(upstream_address)
    try:
        while await serve_request(reader, writer, upstream, limits, peer):
            pass
    except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        pass
    except Exception:  # a bug here must cost one connection, never the guard
        log.exception("%s: unexpected error, connection closed", peer)
    finally:
        upstream.close()
        writer.close()


async def serve(listen: tuple[str, int], upstream: tuple[str, int], limits: Limits = Limits(),
                exit_with_parent: bool = False) -> None:
    """Run the guard until SIGTERM or SIGINT (or, with ``exit_with_parent``, until the parent process is gone)."""
    server = await asyncio.start_server(lambda r, w: handle_client(r, w, upstream, limits), listen[0] or None,
                                        listen[1], limit=HEAD_LIMIT, backlog=1024)
    log.info("listening on %s, forwarding to Triton at %s (bodies up to %d bytes, JSON up to %d bytes and %d deep, "
             "%d chunks)", format_address(listen), format_address(upstream), limits.max_body_bytes,
             limits.max_json_bytes, limits.max_depth, limits.max_chunks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            if exit_with_parent and os.getppid() != parent:
                log.info("the parent process is gone: stopping")
                break
    server.close()


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) as (host, port)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    """The guard's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=parse_address, required=True, help="HOST:PORT the clients connect to")
    parser.add_argument("--upstream", type=parse_address, required=True, help="HOST:PORT of Triton's own HTTP")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="largest request body (413 above)")
    parser.add_argument("--max-json-bytes", type=int, default=MAX_JSON_BYTES, help="largest JSON part (413 above)")
    parser.add_argument("--max-chunks", type=int, default=MAX_CHUNKS, help="most chunks of a chunked body")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the process that started it ends")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pixelserve-http-guard %(levelname)s %(message)s")
    limits = Limits(max_body_bytes=args.max_body_bytes, max_json_bytes=args.max_json_bytes, max_chunks=args.max_chunks)
    asyncio.run(serve(args.listen, args.upstream, limits, args.exit_with_parent))
    return 0


# ---- the guard as a child process ----------------------------------------------------------------------------

class GuardProcess:
    """The guard as a child process of a supervisor (LocalTritonServer, pixelserve-tritonserver): started before
    Triton, started again if it dies, stopped last. Triton's restarts do not touch it, so the port stays open."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], max_body_bytes: int = MAX_BODY_BYTES,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        self.listen = listen
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes
        self.log_path = Path(log_path) if log_path is not None else None  # None: this process's stderr
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pixelserve.triton_local.http_guard", "--listen", format_address(self.listen),
                "--upstream", format_address(self.upstream), "--max-body-bytes", str(self.max_body_bytes),
                "--exit-with-parent"]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the guard and wait until it accepts connections (RuntimeError if it exits or does not)."""
        log_file: IO[bytes] | None = open(self.log_path, "ab") if self.log_path is not None else None
        try:
            self._process = subprocess.Popen(self.command(), stdout=log_file, stderr=subprocess.STDOUT if log_file else None,
                                             start_new_session=True)
        finally:
            if log_file is not None:
                log_file.close()
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listen[0], self.listen[0])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"the HTTP guard exited with code {self._process.returncode}: {self.log_tail()}")
            try:
                socket.create_connection((host, self.listen[1]), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the HTTP guard did not listen on {format_address(self.listen)} in {timeout:.0f} s")

    def keep_running(self, report: Callable[[str], None]) -> None:
        """Start the guard again if it has died, telling ``report`` so; a start that fails is told too, and tried
        again at the next call."""
        if self._process is None or self.running:
            return
        try:
            self.start()
        except RuntimeError as exc:
            report(f"the HTTP guard failed to start: {exc}")
            return
        report("the HTTP guard had died: started again")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None:
            return "(see stderr)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


if __name__ == "__main__":
    sys.exit(main())
