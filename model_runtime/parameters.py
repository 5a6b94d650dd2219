"""The `parameters` of a model's config.pbtxt, as the Python backend hands them to `initialize`."""
from __future__ import annotations

from typing import Any, Mapping

# The HxW image size that GPU instances size their buffers and decoder for at load (image_size_parameter; set in
# model_repository/preprocess/config.pbtxt, which says why).
RESERVE_PARAMETER = "reserve_image_size"


def config_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """``{key: string_value}`` of the model config's ``parameters`` (the JSON of ``args["model_config"]``)."""
    return {key: str(value["string_value"]) for key, value in model_config.get("parameters", {}).items()}


def image_size_parameter(parameters: Mapping[str, str], key: str) -> tuple[int, int] | None:
    """``(height, width)`` from a ``HxW`` parameter such as ``1080x1920``; None for ``0`` or an absent key."""
    text = parameters.get(key, "0").strip()
    if text in ("", "0"):
        return None
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"parameter {key}={text!r}: expected HEIGHTxWIDTH (e.g. 1080x1920) or 0") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"parameter {key}={text!r}: height and width must be positive")
    return height, width


def milliseconds_parameter(parameters: Mapping[str, str], key: str, default: str | None = None) -> float:
    """Seconds from a parameter given in milliseconds (0 or more); ``default`` when absent, else an error."""
    text = parameters.get(key, default)
    if text is None:
        raise ValueError(f"parameter {key} is missing from config.pbtxt")
    try:
        milliseconds = float(text)
    except ValueError:
        raise ValueError(f"parameter {key}={text!r}: expected milliseconds") from None
    if not milliseconds >= 0:  # NaN too
        raise ValueError(f"parameter {key}={text!r}: expected 0 or more milliseconds")
    return milliseconds / 1e3
