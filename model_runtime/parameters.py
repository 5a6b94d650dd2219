"""The `parameters` of a model's config.pbtxt, as the Python backend hands them to `initialize`."""
from __future__ import annotations

from typing import Any, Mapping


def config_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """``{key: string_value}`` of the model config's ``parameters`` (the JSON of ``args["model_config"]``)."""
    return {key: str(value["string_value"]) for key, value in model_config.get("parameters", {}).items()}
