"""``pixelserve-perf-analyzer``: the one command that runs perf_analyzer here (the wheel's binary, given its
libraries) and in the Triton SDK container (the perf_analyzer already on PATH)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixelserve.triton_local import tools

SCRIPT = Path(sys.executable).parent / "pixelserve-perf-analyzer"


def _run(*args: str) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"{SCRIPT} missing: scripts/setup.sh installs the project's console scripts"
    env = {key: value for key, value in os.environ.items() if key != "LD_LIBRARY_PATH"}  # the wrapper must set it
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_version_runs_the_real_perf_analyzer():
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert "Perf Analyzer Version 2.51" in result.stdout + result.stderr


def test_help_lists_perf_analyzers_options_and_succeeds():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    assert "--concurrency-range" in result.stdout and "unrecognized option" not in result.stdout


def test_wrapper_info_names_a_binary_with_every_library_found():
    result = _run("--wrapper-info")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "missing libraries: none" in result.stdout
    binary = Path(result.stdout.split("binary: ", 1)[1].splitlines()[0])
    assert binary.name == "perf_analyzer" and os.access(binary, os.X_OK)


def _fake_sdk_perf_analyzer(tmp_path: Path, monkeypatch) -> Path:
    """A ``perf_analyzer`` first on PATH that needs no library of ours, as in the Triton SDK container."""
    sdk_bin = tmp_path / "sdk-bin"
    sdk_bin.mkdir()
    fake = sdk_bin / "perf_analyzer"
    fake.write_text('#!/bin/sh\necho "sdk perf_analyzer $*"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{sdk_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    return fake


def _no_library_copies(tmp_path: Path, monkeypatch) -> Path:
    """An environment without the wheels that carry libb64/libcudart; returns the wheel's perf_analyzer."""
    wheel_binary = tools.candidate_binaries()[0]
    if not tools.missing_libraries(wheel_binary, {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}):
        pytest.skip("this system resolves the wheel's perf_analyzer libraries by itself")
    monkeypatch.setattr(tools, "library_dirs", lambda: [])
    monkeypatch.setattr(tools.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    return wheel_binary


def test_falls_back_to_the_perf_analyzer_on_path_when_the_wheels_cannot_start(tmp_path, monkeypatch):
    _no_library_copies(tmp_path, monkeypatch)
    fake = _fake_sdk_perf_analyzer(tmp_path, monkeypatch)

    found = tools.resolve()

    assert found.binary == fake and found.missing == []
    assert "LD_LIBRARY_PATH" not in found.env  # the container's own libraries, untouched
    argv, _ = tools.perf_analyzer_command(["-m", "m"])
    assert subprocess.run(argv, env=found.env, capture_output=True, text=True).stdout == "sdk perf_analyzer -m m\n"


def test_only_the_path_perf_analyzer_is_used_where_no_wheel_installed_one(tmp_path, monkeypatch):
    fake = _fake_sdk_perf_analyzer(tmp_path, monkeypatch)
    monkeypatch.setattr(tools.sys, "executable", str(tmp_path / "python"))  # no perf_analyzer next to it

    assert tools.candidate_binaries() == [fake]
    assert tools.resolve().binary == fake


def test_missing_libraries_are_named_with_the_way_to_get_them(tmp_path, monkeypatch, capsys):
    wheel_binary = _no_library_copies(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path))  # no other perf_analyzer to fall back to

    found = tools.resolve()

    assert found.binary == wheel_binary and found.missing == ["libb64.so.0d", "libcudart.so.12"]
    assert tools.main(["--wrapper-info"]) == 1
    err = capsys.readouterr().err
    assert "libb64.so.0d" in err and "scripts/setup.sh" in err and "libb64-0d" in err


def test_no_perf_analyzer_at_all_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools.sys, "executable", str(tmp_path / "python"))

    assert tools.main(["--version"]) == 127
    assert "tritonclient[all]==2.51.0" in capsys.readouterr().err
