"""Errors the client raises: fatal ones stop a run, item errors concern one image only."""
from __future__ import annotations


class ClientError(Exception):
    """Base class of every error this package raises on purpose."""


class ServerUnreachable(ClientError):
    """No Triton server answers at the URL."""

    def __init__(self, url: str, protocol: str, detail: str) -> None:
        super().__init__(f"cannot reach Triton at {url} over {protocol}: {detail}")
        self.url, self.protocol, self.detail = url, protocol, detail


class ModelNotReady(ClientError):
    """The server answers but the model cannot serve requests."""

    def __init__(self, model: str, url: str, protocol: str, detail: str) -> None:
        super().__init__(f"model {model} is not ready on {url} over {protocol}: {detail}")
        self.model, self.url, self.protocol, self.detail = model, url, protocol, detail


class ModelNotFound(ModelNotReady):
    """The server has no model of that name (``models``: the ones it has, when it lets the client list them)."""

    def __init__(self, model: str, url: str, protocol: str, models: list[str] | None = None) -> None:
        listed = f"; its models: {', '.join(models) or 'none'}" if models is not None else ""
        ClientError.__init__(self, f"model '{model}' not found on {url} over {protocol}{listed}")
        self.model, self.url, self.protocol, self.detail = model, url, protocol, "not found"
        self.models = models


class AdminKeyRequired(ClientError):
    """The server refused a restricted API (shared-memory registration): the admin key is missing or wrong."""


class ItemError(ClientError):
    """Something went wrong for one image; the others are unaffected."""


class ImageReadError(ItemError):
    """A file could not be read or decoded as an image."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail


def file_access_error(path: str, exc: OSError) -> ImageReadError | None:
    """The ImageReadError for a file that could not be opened (missing, a folder, no permission), else None."""
    for kind, detail in ((FileNotFoundError, "no such file"), (IsADirectoryError, "is a folder"),
                         (PermissionError, "permission denied")):  # fmt: skip
        if isinstance(exc, kind):
            return ImageReadError(path, detail)
    return None


class InvalidImage(ItemError, ValueError):
    """An array is not an HxWx3 uint8 image."""


class InferenceFailed(ItemError):
    """The server answered this request with an error."""


class RequestTimedOut(ItemError):
    """The server did not answer this request in time."""
