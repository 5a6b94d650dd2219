"""Talk to Triton over HTTP or gRPC through tritonclient, with errors turned into this package's."""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import numpy.typing as npt
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from pixelserve.triton_local.access import admin_headers

from .errors import ClientError, InferenceFailed, ItemError, RequestTimedOut, ServerUnreachable

PROTOCOLS = ("http", "grpc")
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
PROTOCOL_NAMES = {"http": "HTTP", "grpc": "gRPC"}
_SCHEMES = {"http://": False, "grpc://": False, "https://": True, "grpcs://": True}

R = TypeVar("R")


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens: host:port, protocol, TLS or not."""

    address: str
    protocol: str
    ssl: bool = False

    @property
    def display(self) -> str:
        """How messages name the endpoint's protocol."""
        return PROTOCOL_NAMES[self.protocol]


def parse_endpoint(url: str | None, protocol: str) -> Endpoint:
    """Read a URL given as host:port (the protocol's default port when None), with an optional scheme."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    address, ssl = (url or DEFAULT_URLS[protocol]).strip(), False
    for scheme, scheme_ssl in _SCHEMES.items():
        if address.lower().startswith(scheme):
            address, ssl = address[len(scheme):], scheme_ssl
            break
    return Endpoint(address.rstrip("/"), protocol, ssl)


class Pending:
    """A request in flight; ``result()`` waits for its output array or raises a ClientError."""

    def __init__(self, wait: Callable[[], npt.NDArray[Any]], cancel: Callable[[], object]) -> None:
        self._wait, self._cancel = wait, cancel

    def result(self) -> npt.NDArray[Any]:
        """The requested output, once the server has answered."""
        return self._wait()

    def cancel(self) -> None:
        """Stop waiting for this request."""
        self._cancel()


class Transport:
    """One tritonclient connection (pool) to a server; subclasses bind a protocol."""

    _client: Any  # tritonclient.http or tritonclient.grpc InferenceServerClient

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint, self.timeout = endpoint, timeout

    def model_ready(self, model: str) -> bool:
        """Whether the server reports ``model`` ready."""
        return self._call(lambda: self._model_ready(model))

    def model_found(self, model: str) -> bool:
        """Whether the server has ``model`` (loaded or not); asks its metadata route, which is open to all."""
        return self._call(lambda: self._model_found(model))

    def model_states(self) -> dict[str, str] | None:
        """State (and reason, if any) of each model in the server's repository, by name; None where the server
        restricts its repository API and $PIXELSERVE_ADMIN_KEY does not open it (pixelserve.triton_local.access)."""
        states: dict[str, str] = {}
        try:
            entries = self._call(self._repository_index)
        except ServerUnreachable as exc:
            if "restricted" in str(exc):
                return None
            raise
        for entry in entries:
            state = entry.get("state") or "UNKNOWN"
            states[entry["name"]] = f"{state} ({entry['reason']})" if entry.get("reason") else state
        return states

    def submit(self, model: str, inputs: dict[str, npt.NDArray[Any]], output: str, class_count: int) -> Pending:
        """Send one inference request asking for the top ``class_count`` classes of ``output``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""
        self._client.close()

    def _call(self, fn: Callable[[], R]) -> R:
        """Run a server-level query; any failure of it means the server cannot be used."""
        try:
            return fn()
        except Exception as exc:
            error = translate_error(exc, self.endpoint, self.timeout)
            if isinstance(error, ItemError):
                error = ServerUnreachable(self.endpoint.address, self.endpoint.display, str(error))
            raise error from None

    def _model_ready(self, model: str) -> bool:
        raise NotImplementedError

    def _model_found(self, model: str) -> bool:
        try:
            self._client.get_model_metadata(model, **self._query_options())
        except InferenceServerException as exc:
            if is_unknown_model(exc):
                return False
            raise
        return True

    def _query_options(self) -> dict[str, Any]:
        return {}

    def _repository_index(self) -> list[dict[str, Any]]:
        raise NotImplementedError


class HttpTransport(Transport):
    """HTTP/REST through tritonclient.http (gevent underneath)."""

    def __init__(self, endpoint: Endpoint, timeout: float, concurrency: int) -> None:
        import gevent
        import tritonclient.http as httpclient

        super().__init__(endpoint, timeout)
        self._module = httpclient
        self._spawn = gevent.spawn
        hub = gevent.get_hub()
        # Ctrl-C while waiting makes gevent's hub print "KeyboardInterrupt" and a timestamp before
        # raising it here; this only silences the print (for this thread's hub).
        if KeyboardInterrupt not in hub.NOT_ERROR:
            hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)
        self._client = httpclient.InferenceServerClient(
            endpoint.address, concurrency=concurrency, connection_timeout=timeout, network_timeout=timeout, ssl=endpoint.ssl
        )

    def submit(self, model: str, inputs: dict[str, npt.NDArray[Any]], output: str, class_count: int) -> Pending:
        infer_inputs = [_infer_input(self._module, name, array) for name, array in inputs.items()]
        outputs = [self._module.InferRequestedOutput(output, class_count=class_count)]

        # Not the client's async_infer: gevent prints a traceback for every failed greenlet, so the
        # greenlet here returns its exception instead of raising it.
        def run() -> npt.NDArray[Any] | BaseException:
            try:
                response = self._client.infer(model, infer_inputs, outputs=outputs)
                return response.as_numpy(output)  # type: ignore[no-any-return]  # tritonclient is untyped
            except Exception as exc:
                return exc

        greenlet = self._spawn(run)

        def wait() -> npt.NDArray[Any]:
            value: npt.NDArray[Any] | BaseException = greenlet.get()
            if isinstance(value, BaseException):
                raise translate_error(value, self.endpoint, self.timeout)
            return value

        return Pending(wait, lambda: greenlet.kill(block=False))

    def _model_ready(self, model: str) -> bool:
        return self._client.is_model_ready(model)  # type: ignore[no-any-return]  # tritonclient is untyped

    def _repository_index(self) -> list[dict[str, Any]]:
        return self._client.get_model_repository_index(headers=admin_headers())  # type: ignore[no-any-return]  # tritonclient is untyped


class GrpcTransport(Transport):
    """gRPC through tritonclient.grpc."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        super().__init__(endpoint, timeout)
        self._module = grpcclient
        self._client = grpcclient.InferenceServerClient(endpoint.address, ssl=endpoint.ssl)

    def submit(self, model: str, inputs: dict[str, npt.NDArray[Any]], output: str, class_count: int) -> Pending:
        infer_inputs = [_infer_input(self._module, name, array) for name, array in inputs.items()]
        outputs = [self._module.InferRequestedOutput(output, class_count=class_count)]
        future: concurrent.futures.Future[npt.NDArray[Any]] = concurrent.futures.Future()

        def done(result: Any, error: BaseException | None) -> None:  # runs on a gRPC thread
            try:
                if error is not None:
                    raise error
                future.set_result(result.as_numpy(output))
            except Exception as exc:
                future.set_exception(exc)

        try:
            call = self._client.async_infer(model, infer_inputs, done, outputs=outputs, client_timeout=self.timeout)
        except Exception as exc:
            future.set_exception(exc)
            call = None

        def wait() -> npt.NDArray[Any]:
            try:
                return future.result()
            except Exception as exc:
                raise translate_error(exc, self.endpoint, self.timeout) from None

        return Pending(wait, lambda: call is not None and call.cancel())

    def _model_ready(self, model: str) -> bool:
        return self._client.is_model_ready(model, client_timeout=self.timeout)  # type: ignore[no-any-return]  # tritonclient is untyped

    def _query_options(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout}

    def _repository_index(self) -> list[dict[str, Any]]:
        index = self._client.get_model_repository_index(headers=admin_headers(), as_json=True, client_timeout=self.timeout)
        return index.get("models", [])  # type: ignore[no-any-return]  # tritonclient is untyped


def open_transport(endpoint: Endpoint, timeout: float, concurrency: int = 1) -> Transport:
    """A transport for the endpoint's protocol, allowing ``concurrency`` requests in flight."""
    try:
        if endpoint.protocol == "http":
            return HttpTransport(endpoint, timeout, concurrency)
        return GrpcTransport(endpoint, timeout)
    except Exception as exc:
        raise translate_error(exc, endpoint, timeout) from None


def is_unknown_model(exc: InferenceServerException) -> bool:
    """Whether the server answered that it has no model of the requested name (HTTP 404, gRPC NOT_FOUND)."""
    message = exc.message() or str(exc)
    return "unknown model" in message and "is not found" in message


def translate_error(exc: BaseException, endpoint: Endpoint, timeout: float) -> ClientError:
    """The ClientError that stands for an exception raised by tritonclient or the network."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, TimeoutError):  # before OSError: a timeout is one
        return RequestTimedOut(f"no answer from the server within {timeout:g} s")
    if isinstance(exc, OSError):
        return ServerUnreachable(endpoint.address, endpoint.display, exc.strerror or str(exc) or type(exc).__name__)
    if isinstance(exc, InferenceServerException):
        status, message = str(exc.status() or ""), exc.message() or str(exc)
        if status in ("StatusCode.UNAVAILABLE", "503"):  # gRPC, or HTTP 503 (the HTTP guard while Triton restarts)
            return ServerUnreachable(endpoint.address, endpoint.display, message)
        if status == "StatusCode.DEADLINE_EXCEEDED":
            return RequestTimedOut(f"no answer from the server within {timeout:g} s")
        return InferenceFailed(f"server error: {message}")
    return InferenceFailed(f"unexpected answer from the server ({type(exc).__name__}: {exc})")


def _infer_input(module: Any, name: str, array: npt.NDArray[Any]) -> Any:
    infer_input = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    infer_input.set_data_from_numpy(array)
    return infer_input
