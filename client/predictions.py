"""Top-k results of Triton's classification extension."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes: its index, label and score (the model's logit)."""

    index: int
    label: str
    score: float

    def as_dict(self) -> dict[str, object]:
        """The prediction as a JSON-ready dict."""
        return {"index": self.index, "label": self.label, "score": self.score}


def parse_classification(entry: bytes | str) -> Prediction:
    """Parse one classification entry, b"value:index:label" (label absent without a labels file)."""
    if not isinstance(entry, (bytes, str)):
        raise ValueError(f"not a classification entry: {entry!r}")
    text = entry.decode("utf-8", errors="replace") if isinstance(entry, bytes) else entry
    # maxsplit keeps labels that contain ':' whole
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise ValueError(f"not a classification entry: {text!r}")
    label = parts[2] if len(parts) == 3 else ""
    return Prediction(index=int(parts[1]), label=label, score=float(parts[0]))


def parse_classifications(entries: Iterable[bytes | str]) -> list[Prediction]:
    """Parse a flat sequence of classification entries, keeping the server's order (best first)."""
    return [parse_classification(entry) for entry in entries]
