"""The Python-backend stub processes of a tritonserver, watched so that a dead one is seen at once.

Triton 2.51 keeps answering ``/v2/health/ready`` with 200 after a model's stub has died, while every request
to that model fails. The health probe (health.py) sees it, but only at its next turn (every 1-2 s). The
stubs are the server's children: a stub that exits or becomes a zombie is seen on the next look at /proc,
a few milliseconds of work done every ``STUB_POLL_S``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .health import Unhealthy

STUB_POLL_S = 0.05  # seconds between looks at the stubs: the window in which a dead stub still looks ready
STUB_BINARY = b"triton_python_backend_stub"
INSTANCE_ARG = 8  # the stub's arguments: model.py, shm region, sizes, parent pid, backend dir, handle, instance name
# Modes in which models load and unload only at start, so a stub that exits while serving has died.
STATIC_MODEL_CONTROL = ("none",)


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return None


def live_stubs(server_pid: int) -> dict[int, str]:
    """Stub processes of ``server_pid`` that are alive (not zombies): pid -> model instance name (a scan of /proc)."""
    stubs: dict[int, str] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        found = _parent_and_state(int(proc.name))
        if found is None or found[0] != server_pid or found[1] in ("Z", "X"):
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(STUB_BINARY):
            stubs[int(proc.name)] = args[INSTANCE_ARG].decode(errors="replace") if len(args) > INSTANCE_ARG else "?"
    return stubs


def models_are_static(server_args: Sequence[str]) -> bool:
    """Whether the server's arguments load every model once, at start (no model-control API, no polling)."""
    mode = "none"
    for arg in server_args:
        if arg.startswith("--model-control-mode="):
            mode = arg.split("=", 1)[1]
    return mode in STATIC_MODEL_CONTROL


class StubWatch:
    """A server's stubs, listed by ``refresh`` (a scan of /proc, milliseconds) and checked by ``gone``
    (one small read per stub, microseconds), so that it can look often.

    ``static_models``: models load only at start (``models_are_static``), so a stub gone is a death; otherwise
    a model-control API may have unloaded it on purpose, and only a probe of the server can tell."""

    def __init__(self, static_models: bool = True) -> None:
        self.static_models = static_models
        self.server_pid = -1
        self.known: dict[int, str] = {}

    def refresh(self, server_pid: int) -> None:
        """List the live stubs of ``server_pid`` (after a good probe: models may have loaded since)."""
        self.server_pid = server_pid
        self.known = live_stubs(server_pid)

    def forget(self) -> None:
        """Stop watching until the next refresh (after a death has been reported)."""
        self.known = {}

    def gone(self) -> list[str]:
        """Instance names of the listed stubs that have exited or become zombies since the last refresh."""
        lost = []
        for pid, name in self.known.items():
            found = _parent_and_state(pid)
            if found is None or found[0] != self.server_pid or found[1] in ("Z", "X"):
                lost.append(name)
        return lost

    def look(self) -> tuple[Unhealthy | None, bool]:
        """What a look at the stubs says: (the death seen, or None; whether to probe the server now)."""
        lost = self.gone()
        if not lost:
            return None, False
        if self.static_models:
            return Unhealthy(f"the Python-backend stub of {', '.join(lost)} died", dead=True), False
        return None, True
