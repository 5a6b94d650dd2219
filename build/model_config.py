"""Triton model configs (config.pbtxt) read and written with protobuf's text_format: the one parser and writer.

Configs that a build writes are ``ModelConfig`` messages rendered here, under a header comment that says
what wrote them; nothing edits config text by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def pb2() -> Any:
    """The ``model_config_pb2`` module (Triton's ModelConfig protobuf, shipped in tritonclient)."""
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text into a ``ModelConfig`` message (text_format.ParseError if it is not one)."""
    from google.protobuf import text_format

    return text_format.Parse(text, pb2().ModelConfig())


def read_config(path: str | Path) -> Any:
    """Read a config.pbtxt into a ``ModelConfig`` message."""
    return parse_config(Path(path).read_text(encoding="utf-8"))


def config_text(config: Any, header: Sequence[str]) -> str:
    """``config`` as config.pbtxt text, each line of ``header`` first as a ``#`` comment."""
    from google.protobuf import text_format

    comments = "".join(f"# {line}\n" for line in header)
    return comments + str(text_format.MessageToString(config, use_short_repeated_primitives=True))


def write_config(path: str | Path, config: Any, header: Sequence[str]) -> Path:
    """Write ``config`` with its ``header`` to ``path`` (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_text(config, header), encoding="utf-8")
    return path
