"""Find and replace one top-level field of a protobuf text file (config.pbtxt) without touching the rest.

Re-serializing with ``text_format`` would drop every comment and reformat the file, so edits here are
textual: a small tokenizer that knows strings and ``#`` comments locates the field's exact byte span.
"""
from __future__ import annotations

import re
from typing import Iterator, NamedTuple

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z0-9_.+-]+)
  | (?P<punct>[{}\[\]<>:,;])
    """,
    re.VERBOSE,
)
_OPEN = {"{": "}", "[": "]", "<": ">"}


class Token(NamedTuple):
    """One lexical token: its kind (string, word, punct), text and [start, end) offsets."""

    kind: str
    text: str
    start: int
    end: int


def tokens(text: str) -> Iterator[Token]:
    """The tokens of ``text`` without whitespace and comments; ValueError on a character text format cannot hold."""
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot tokenize config text at offset {position}: {text[position:position + 20]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            yield Token(kind, match.group(), match.start(), match.end())
        position = match.end()


def _value_end(stream: list[Token], index: int) -> int:
    """Index just past the value that starts at ``stream[index]`` (a scalar, or a bracketed block)."""
    token = stream[index]
    if token.text not in _OPEN:
        index += 1
        while index < len(stream) and stream[index].kind == "string" and token.kind == "string":
            index += 1  # adjacent string literals concatenate
        return index
    closers = [_OPEN[token.text]]
    index += 1
    while closers:
        if index >= len(stream):
            raise ValueError(f"unbalanced {token.text!r} opened at offset {token.start}")
        current = stream[index]
        if current.kind == "punct" and current.text in _OPEN:
            closers.append(_OPEN[current.text])
        elif current.kind == "punct" and current.text in "}]>":
            expected = closers.pop()
            if current.text != expected:
                raise ValueError(f"expected {expected!r} at offset {current.start}, found {current.text!r}")
        index += 1
    return index


def field_spans(text: str, name: str) -> list[tuple[int, int]]:
    """[start, end) offsets of every top-level entry of field ``name`` (``name [ ... ]``, ``name { ... }``, ``name: v``)."""
    stream = list(tokens(text))
    spans = []
    index = 0
    while index < len(stream):
        token = stream[index]
        if token.kind != "word":
            index += 1  # separators between top-level fields
            continue
        value = index + 1
        if value < len(stream) and stream[value].text == ":":
            value += 1
        if value >= len(stream):
            raise ValueError(f"field {token.text!r} at offset {token.start} has no value")
        end = _value_end(stream, value)
        if token.text == name:
            spans.append((token.start, stream[end - 1].end))
        index = end
    return spans


def _whole_lines(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen [start, end) to whole lines when nothing but whitespace shares those lines with it."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end == -1 else line_end + 1
    if text[line_start:start].strip() or text[end:line_end].strip():
        return start, end
    return line_start, line_end


def replace_field(text: str, name: str, block: str) -> str:
    """``text`` with the first top-level ``name`` entry replaced by ``block`` and any further entries removed.

    Everything outside those entries is kept byte for byte. Without an entry, ``block`` is appended.
    """
    spans = field_spans(text, name)
    if not spans:
        separator = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{separator}{block}\n"
    pieces = []
    position = 0
    for number, (start, end) in enumerate(spans):
        if number:
            start, end = _whole_lines(text, start, end)
        pieces.append(text[position:start])
        if not number:
            pieces.append(block)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)
