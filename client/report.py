"""Write classification results: plain text blocks, or one JSON list streamed as results come in."""
from __future__ import annotations

import json
from typing import TextIO

from .predictions import Prediction


class PlainReport:
    """One block per classified file: its name, then a ranked line per prediction."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._blocks = 0

    def add(self, file: str, predictions: list[Prediction], error: str | None = None) -> None:
        """Write the block for one file; failed files are left to the error stream."""
        if error is not None:
            return
        lines = [""] if self._blocks else []
        lines.append(file)
        lines += [f"  {rank}. {p.score:9.4f}  {p.label or '?'} ({p.index})" for rank, p in enumerate(predictions, 1)]
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()
        self._blocks += 1

    def close(self) -> None:
        """Finish the report."""


class JsonReport:
    """A JSON list of {"file", "predictions": [{"index", "label", "score"}]}, plus "error" for failed files."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._entries = 0

    def add(self, file: str, predictions: list[Prediction], error: str | None = None) -> None:
        """Append one file's entry."""
        entry: dict[str, object] = {"file": file, "predictions": [p.as_dict() for p in predictions]}
        if error is not None:
            entry["error"] = error
        self._stream.write(("[\n  " if not self._entries else ",\n  ") + json.dumps(entry))
        self._stream.flush()
        self._entries += 1

    def close(self) -> None:
        """Close the list, so the output stays valid JSON after an early stop (no entries: no output)."""
        if self._entries:
            self._stream.write("\n]\n")
            self._stream.flush()
