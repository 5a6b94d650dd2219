"""Python API: classify images on a Triton server, encoded files with ``image_classifier_encoded`` and raw RGB
pixels with ``image_classifier``."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar, cast

import numpy as np
import numpy.typing as npt

from .errors import InferenceFailed, ItemError, ModelNotFound, ModelNotReady
from .inputs import ENCODED_MODEL, RAW_MODEL, ImageInput, as_request_tensor
from .predictions import Prediction, parse_classifications
from .transport import Pending, open_transport, parse_endpoint

DEFAULT_MODEL = RAW_MODEL
DEFAULT_TIMEOUT = 60.0
INPUT_NAME = "images"
OUTPUT_NAME = "predictions"

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What became of one item of ``classify_many``: its predictions, or the error for it."""

    item: T
    predictions: list[Prediction] = field(default_factory=list)
    error: ItemError | None = None

    @property
    def ok(self) -> bool:
        """Whether the item was classified."""
        return self.error is None


class ImageClassifierClient:
    """Client of the Triton image classification models (HTTP or gRPC), one request per image.

    An image is given as encoded bytes (a JPEG or PNG file's contents), as a path (str or os.PathLike: the
    file is read and its bytes sent, not decoded here), or as an HxWx3 uint8 RGB array; one call may mix
    them. Bytes and paths go to ``encoded_model`` (default image_classifier_encoded), which decodes them on
    the server (EXIF orientation applied); arrays go to ``model`` (default image_classifier) as raw pixels.

    ``url`` is host:port (default localhost:8000 for HTTP, localhost:8001 for gRPC); ``timeout``
    bounds each call in seconds; ``concurrency`` is how many requests ``classify_many`` keeps in flight.
    Errors are this package's: ServerUnreachable, ModelNotReady, or an ItemError for one image (for bad
    bytes, an InferenceFailed carrying the server's reason).
    """

    def __init__(
        self,
        url: str | None = None,
        protocol: str = "http",
        model: str = DEFAULT_MODEL,
        timeout: float = DEFAULT_TIMEOUT,
        concurrency: int = 1,
        encoded_model: str = ENCODED_MODEL,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.endpoint = parse_endpoint(url, protocol)
        self.model, self.encoded_model = model, encoded_model
        self.concurrency = concurrency
        self._transport = open_transport(self.endpoint, timeout, concurrency)

    @property
    def url(self) -> str:
        """host:port of the server."""
        return self.endpoint.address

    def model_for(self, send: str) -> str:
        """The model that takes images sent ``"encoded"`` or ``"raw"``."""
        return {"encoded": self.encoded_model, "raw": self.model}[send]

    def check_ready(self, *models: str) -> None:
        """Raise ServerUnreachable, ModelNotFound or ModelNotReady unless ``models`` (default: both the raw and
        the encoded model) can serve requests now."""
        for model in models or (self.model, self.encoded_model):
            if self._transport.model_ready(model):
                continue
            states = self._transport.model_states()
            if not self._transport.model_found(model):
                raise ModelNotFound(model, self.url, self.endpoint.display, None if states is None else sorted(states))
            if states is None:
                detail = "the server restricts its model list (set PIXELSERVE_ADMIN_KEY to see its state)"
            else:
                detail = f"its state is {states.get(model, 'UNKNOWN')}"
            raise ModelNotReady(model, self.url, self.endpoint.display, detail)

    def classify(self, image: ImageInput, top_k: int = 5) -> list[Prediction]:
        """Top-``top_k`` predictions for one image (bytes, path or HxWx3 uint8 RGB array), best first."""
        return self._parse(self._submit(image, top_k).result())

    def classify_many(
        self,
        items: Iterable[T],
        top_k: int = 5,
        load: Callable[[T], ImageInput] | None = None,
    ) -> Iterator[Outcome[T]]:
        """Classify many images with up to ``concurrency`` requests in flight, yielding outcomes in input order.

        Items are images (bytes, paths and arrays, mixed as needed), or anything ``load`` turns into one
        (e.g. paths with ``load_image``, to send them as pixels decoded here). A failure for one item
        (unreadable, undecodable or rejected by the server, timed out) becomes its Outcome's error;
        ServerUnreachable still raises.
        """
        window: deque[tuple[T, Pending | ItemError]] = deque()
        try:
            for item in items:
                window.append((item, self._start(item, top_k, load)))
                if len(window) >= self.concurrency:
                    yield self._finish(*window.popleft())
            while window:
                yield self._finish(*window.popleft())
        finally:
            for _, started in window:
                if isinstance(started, Pending):
                    started.cancel()

    def close(self) -> None:
        """Close the connection to the server."""
        self._transport.close()

    def __enter__(self) -> "ImageClassifierClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, image: ImageInput, top_k: int) -> Pending:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        send, tensor = as_request_tensor(image)
        return self._transport.submit(self.model_for(send), {INPUT_NAME: tensor}, OUTPUT_NAME, top_k)

    def _start(self, item: T, top_k: int, load: Callable[[T], ImageInput] | None) -> Pending | ItemError:
        try:
            return self._submit(load(item) if load is not None else cast(ImageInput, item), top_k)
        except ItemError as exc:
            return exc

    def _finish(self, item: T, started: Pending | ItemError) -> Outcome[T]:
        if isinstance(started, ItemError):
            return Outcome(item, error=started)
        try:
            return Outcome(item, self._parse(started.result()))
        except ItemError as exc:
            return Outcome(item, error=exc)

    @staticmethod
    def _parse(output: npt.NDArray[Any] | None) -> list[Prediction]:
        if output is None:
            raise InferenceFailed(f"the answer has no {OUTPUT_NAME!r} output")
        try:
            return parse_classifications(np.asarray(output).ravel())
        except ValueError as exc:
            raise InferenceFailed(f"unexpected output from the server: {exc}") from None
