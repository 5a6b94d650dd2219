"""Waiting on a condition in tests: poll until it holds, or fail saying what was awaited and what was last seen."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(read: Callable[[], T], accept: Callable[[T], bool], what: str, timeout: float = 30.0,
               poll_s: float = 0.05) -> T:
    """The first ``read()`` that ``accept`` takes, polled every ``poll_s`` seconds; AssertionError naming ``what``
    and the last reading once ``timeout`` seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last seen: {value!r}")
        time.sleep(poll_s)
