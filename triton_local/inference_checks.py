"""What an HTTP inference request must satisfy before Triton 2.51's HTTP front end parses it (the HTTP guard's
checks, http_guard.py): a body within size, JSON within size and nesting, each input's shape sane and matched by
its data, each JSON value fitting its datatype. A request that fails gets ``Refused`` with the HTTP status to answer.
"""
from __future__ import annotations

import itertools
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

_rapidjson: Any
try:
    import rapidjson as _rapidjson
except ImportError:  # python-rapidjson comes with tritonclient[http]; the standard library does the same, slower
    _rapidjson = None

MAX_BODY_BYTES = 512 << 20  # the largest request body (after de-chunking and inflating)
MAX_JSON_BYTES = 64 << 20  # the largest JSON part (Triton parses it into a DOM; tensors this big go as binary data)
MAX_CHUNKS = 100_000  # chunks of one chunked body (Triton 2.51 was seen to die at 10^6)
MAX_JSON_DEPTH = 64  # nesting of a JSON body: an inference request needs 4 or so
REFUSED = "refused by the pixelserve HTTP guard"  # every refusal's message starts with this
ELEMENT_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
                 "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
INT64_MAX = (1 << 63) - 1
# The values an integer datatype holds: Triton 2.51's JSON parser stores a value outside them wrapped (256 as 0 in
# UINT8) and a fraction truncated, with no error, so the request would be answered for other pixels than sent.
INTEGER_RANGES = {f"{sign}INT{bits}": ((0, (1 << bits) - 1) if sign else (-(1 << bits - 1), (1 << bits - 1) - 1))
                  for sign in ("U", "") for bits in (8, 16, 32, 64)}
BYTES_PREFIX = 4  # a BYTES element in the binary extension: a 4-byte length, then the bytes

# A JSON string, or an unterminated one up to the end (so that a stray quote costs one pass, not one per quote).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


@dataclass(frozen=True)
class Limits:
    """What the guard lets through."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_json_bytes: int = MAX_JSON_BYTES
    max_chunks: int = MAX_CHUNKS
    max_depth: int = MAX_JSON_DEPTH


class Refused(Exception):
    """A request the guard answers itself with ``status``; ``unread``: the rest of the request (and so where the
    next one starts) is unknown, so the connection must be closed after the answer."""

    def __init__(self, status: int, message: str, unread: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = f"{REFUSED}: {message}"
        self.unread = unread


def inflated(encoding: str | None, body: bytes, limits: Limits) -> bytes:
    """``body`` decoded from Content-Encoding ``encoding`` (gzip, deflate or none), at most the largest body."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in ("gzip", "deflate"):
        raise Refused(400, f"unsupported Content-Encoding {name[:40]!r}")
    for wbits in ((31,) if name == "gzip" else (15, -15)):  # deflate: zlib-wrapped, else raw
        decoder = zlib.decompressobj(wbits)
        try:
            plain = decoder.decompress(body, limits.max_body_bytes + 1)
        except zlib.error:
            continue
        if len(plain) > limits.max_body_bytes:
            raise Refused(413, f"{name} body inflating to more than {limits.max_body_bytes} bytes")
        if decoder.eof:
            return plain
    raise Refused(400, f"malformed {name} body")


def nesting_within(data: bytes, max_depth: int) -> bool:
    """Whether the brackets of JSON text ``data`` (outside its strings) nest at most ``max_depth`` deep.

    Fewer opening brackets than that cannot nest deeper (most requests end here); otherwise strings go, every other
    byte but brackets goes, a run of more openers than allowed settles it, else the running level is summed up."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return True
    steps = _JSON_STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS)  # 1 per opener, -1 (0xff) per closer
    if re.search(b"\x01{%d}" % (max_depth + 1), steps):
        return False
    return max(itertools.accumulate(memoryview(steps).cast("b")), default=0) <= max_depth


class _UniqueKeys(dict):  # type: ignore[type-arg]
    """A JSON object that refuses a key twice: Triton reads a repeated key's first value, Python its last."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self:
            raise ValueError(f"the key {key!r} appears twice in one object")
        super().__setitem__(key, value)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = _UniqueKeys()
    for key, value in pairs:
        found[key] = value
    return found


if _rapidjson is not None:
    class _Decoder(_rapidjson.Decoder):  # type: ignore[misc, unused-ignore]
        def start_object(self) -> _UniqueKeys:
            return _UniqueKeys()

    _DECODER = _Decoder()


def parse_json(data: bytes) -> Any:
    """``data`` parsed as JSON (ValueError when it is not, or repeats a key in an object)."""
    if _rapidjson is not None:
        return _DECODER(data)
    return json.loads(data, object_pairs_hook=_unique_pairs)


def check_inference(document: Any, limits: Limits) -> None:
    """Refused unless every input of the inference request ``document`` is safe to hand to Triton 2.51.

    What is not an inference request at all (no list of input objects) is left for Triton to refuse."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    for index, item in enumerate(inputs if isinstance(inputs, list) else []):
        if isinstance(item, dict):
            check_input(item, index, limits)


def check_input(item: dict[str, Any], index: int, limits: Limits) -> None:
    """Refused unless input ``item`` has a sane shape and carries exactly the data its shape claims."""
    name = item.get("name")
    label = f"input {name!r}" if isinstance(name, str) else f"input #{index}"
    datatype = item.get("datatype")
    size = ELEMENT_BYTES.get(datatype) if isinstance(datatype, str) else None
    parameters = item.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    shared = "shared_memory_region" in parameters  # the data is in a registered region, not in this body
    shape = item.get("shape")
    count = element_count(shape, label, None if shared else limits.max_body_bytes // (size or 1))
    if "data" in item:
        values = value_count(item["data"])
        if values != count:
            raise Refused(400, f"{label}: 'data' holds {values} values, the shape {_short(shape)} needs {count}")
        check_values(item["data"], datatype, label)
    if "binary_data_size" in parameters:
        declared = parameters["binary_data_size"]
        if type(declared) is not int or declared < 0:
            raise Refused(400, f"{label}: binary_data_size {_short(declared)} is not a byte count")
        if size is not None and declared != count * size:
            raise Refused(400, f"{label}: binary_data_size {declared} does not match the shape {_short(shape)} "
                               f"of {datatype} ({count * size} bytes)")
        if datatype == "BYTES" and declared < count * BYTES_PREFIX:
            raise Refused(400, f"{label}: binary_data_size {declared} cannot hold the {count} BYTES elements of "
                               f"the shape {_short(shape)} ({BYTES_PREFIX} bytes each at least)")
    elif "data" not in item and not shared:
        raise Refused(400, f"{label}: no 'data', binary_data_size or shared_memory_region")


def element_count(shape: Any, label: str, max_elements: int | None) -> int:
    """The element count of ``shape``: a list of non-negative integers whose product fits int64 and, where
    given, ``max_elements`` (no dimension beyond it either: a huge one next to a 0 also kills the 2.51 stub)."""
    if not isinstance(shape, list) or not all(type(dim) is int for dim in shape):
        raise Refused(400, f"{label}: the shape must be a list of integers, not {_short(shape)}")
    if any(dim < 0 for dim in shape):
        raise Refused(400, f"{label}: negative dimension in the shape {_short(shape)}")
    count, largest = 1, max(shape, default=0)
    for dim in shape:
        count *= dim
        if count > INT64_MAX:
            break
    if count > INT64_MAX or largest > INT64_MAX:
        raise Refused(400, f"{label}: the shape {_short(shape)} has more elements than int64 can count")
    if max_elements is not None and max(count, largest) > max_elements:
        raise Refused(400, f"{label}: the shape {_short(shape)} claims {count} elements; a request body carries at "
                           f"most {max_elements}")
    return count


def value_count(data: Any) -> int:
    """The values of JSON ``data`` (a flat or nested list; strings and objects count one each).

    A list whose first item is not a list counts as flat: a mixed list is undercounted, never overcounted, so a
    shape matched by this count never claims more values than the body holds."""
    if not isinstance(data, list):
        return 1
    if data and isinstance(data[0], list):
        return sum(value_count(item) for item in data)
    return len(data)


def check_values(data: Any, datatype: Any, label: str) -> None:
    """Refused where a JSON value does not fit the input's datatype (an integer type's range, a whole number, a
    boolean for BOOL), which Triton 2.51 would store changed instead of refusing."""
    bounds = INTEGER_RANGES.get(datatype) if isinstance(datatype, str) else None
    if bounds is None and datatype != "BOOL":
        return
    for value in _flat_values(data):
        if datatype == "BOOL":
            if type(value) is not bool:
                raise Refused(400, f"{label}: the BOOL value {_short(value)} is not true or false")
        elif type(value) is not int or not bounds[0] <= value <= bounds[1]:  # type: ignore[index]
            raise Refused(400, f"{label}: the value {_short(value)} does not fit {datatype} "
                               f"(whole numbers {bounds[0]}..{bounds[1]})")  # type: ignore[index]


def _flat_values(data: Any) -> Any:
    """The values of JSON ``data``, nested lists flattened, in order."""
    if not isinstance(data, list):
        yield data
        return
    for item in data:
        if isinstance(item, list):
            yield from _flat_values(item)
        else:
            yield item


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
