"""The server's malloc settings (triton_local/malloc_tuning.py): what they add to the environment, that the real
tritonserver and its stubs run with them, and that they do what they are for: a decode that freed its memory
reuses it instead of faulting fresh pages in again."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pixelserve.triton_local.malloc_tuning import MALLOC_TUNABLES, SWITCH_ENV, tuned_environment

OURS = [f"{name}={value}" for name, value in MALLOC_TUNABLES]


def _tunables(environ: dict[str, str]) -> list[str]:
    return environ.get("GLIBC_TUNABLES", "").split(":")


def test_the_settings_are_added_to_the_environment():
    assert _tunables(tuned_environment({"PATH": "/bin"})) == OURS


def test_a_users_own_setting_wins_and_theirs_are_kept():
    mine = "glibc.malloc.trim_threshold=4096:glibc.malloc.arena_max=2"
    tunables = _tunables(tuned_environment({"GLIBC_TUNABLES": mine}))
    assert tunables[:2] == mine.split(":")
    assert [t for t in tunables if t.startswith("glibc.malloc.trim_threshold=")] == ["glibc.malloc.trim_threshold=4096"]
    assert OURS[0] in tunables  # the one the user did not set


def test_the_switch_leaves_glibcs_defaults():
    assert "GLIBC_TUNABLES" not in tuned_environment({SWITCH_ENV: "0"})
    assert tuned_environment({SWITCH_ENV: "0", "GLIBC_TUNABLES": "x=1"})["GLIBC_TUNABLES"] == "x=1"


def _first_tunable(pid: int) -> str:
    """GLIBC_TUNABLES as /proc shows it: glibc cuts the process's own copy after the first setting while parsing it
    (its children still get the whole string, which is what ``environ`` points to afterwards)."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"GLIBC_TUNABLES="):
            return entry.decode().split("=", 1)[1].split(":")[0]
    return ""


@pytest.mark.server
def test_the_server_and_its_stubs_run_with_them(triton_server):
    """tritonserver and the stubs it started hold the settings. What they change in a served process depends on
    its threads and the requests before (glibc's per-thread arenas), so the effect is measured, not asserted here:
    perf/env_ab.py, R27 in docs/performance.md; the test below shows it on one thread."""
    for pid in (triton_server._process.pid, triton_server.stub_pid("preprocess_0_0"),
                triton_server.stub_pid("classifier_0_0")):
        assert _first_tunable(pid) == OURS[0], pid


# Decodes one 1080p JPEG 5 times after a first decode, and prints the minor page faults those 5 took.
DECODE_FAULTS = """
import resource, sys
import cv2, numpy as np
from pixelserve.model_runtime.decoding import decode_image
rng = np.random.default_rng(0)
frame = cv2.resize(rng.integers(0, 256, (270, 480, 3), dtype=np.uint8), (1920, 1080))
data = cv2.imencode(".jpg", frame)[1].tobytes()
decode_image(data, 8192)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    decode_image(data, 8192)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _decode_faults(env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-c", DECODE_FAULTS], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_a_decode_reuses_freed_memory_with_them():
    import os

    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    default = _decode_faults({**plain, SWITCH_ENV: "0"})
    tuned = _decode_faults(tuned_environment(plain))
    # glibc's defaults give the decoded image's pages back and fault them in again (thousands per 1080p image)
    assert default > 5 * 1000 and tuned < default / 10, (default, tuned)


def test_container_entry_point_starts_tritonserver_with_them(monkeypatch):
    """pixelserve-tritonserver (launch.py, the image's entry point) execs tritonserver with the settings added to
    the user's own; here the exec is stopped where it would replace the process."""
    import os

    from pixelserve.triton_local import launch

    class Exec(Exception):
        pass

    seen = {}

    def exec_instead(file, argv):
        seen.update(file=file, tunables=os.environ.get("GLIBC_TUNABLES"))
        raise Exec

    for name, value in (("PIXELSERVE_SUPERVISE", "0"), (launch.GUARD_ENV, "0"), ("PIXELSERVE_MPS", "0"),
                        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(launch.os, "execvp", exec_instead)
    with pytest.raises(Exec):
        launch.main(["--model-repository=/nonexistent"])
    assert seen["file"] == "tritonserver"
    assert seen["tunables"].split(":") == ["glibc.malloc.arena_max=4", *OURS]
