"""Reading what a child process writes to a pseudo-terminal, for tests of what a user sees at a terminal."""
from __future__ import annotations

import os


def read_terminal(primary: int, seen: bytearray) -> None:
    """Collect what a child writes to its pseudo-terminal until it closes (its buffer must not fill up)."""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the writer is gone
            return
        if not chunk:
            return
        seen += chunk
