"""Batch jobs of pixelserve-classify that meet trouble, against real tritonservers: a server that restarts (or dies)
mid-job, shared memory without the admin key, an output folder that does not exist, a wrong model name, formats
the server does not decode, many failed files, and what retries are for."""
from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import skimage.data
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import MODEL_REPOSITORY, ensure_classifier_built
from images import uncached_jpeg
from terminal import read_terminal

from pixelserve.client import batch
from pixelserve.client.classify import (
    EXIT_MODEL_NOT_READY,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
)
from pixelserve.triton_local import LocalTritonServer
from pixelserve.triton_local.access import KEY_ENV

pytestmark = pytest.mark.server
CAT_INDICES = range(281, 286)
JOB_FILES = 150


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def lines_in(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def wait_for_lines(path: Path, count: int, timeout: float = 120.0) -> int:
    """Wait until the job has written ``count`` results; return how many it had then."""
    deadline = time.monotonic() + timeout
    while lines_in(path) < count:
        assert time.monotonic() < deadline, f"the job wrote {lines_in(path)} results in {timeout:.0f} s"
        time.sleep(0.02)
    return lines_in(path)


def kill_server(server: LocalTritonServer) -> None:
    """SIGKILL the server's process group (the server and its Python-backend stubs), as a crash would."""
    os.killpg(server._process.pid, signal.SIGKILL)


def mid_job(output: Path, action, seen: dict) -> threading.Thread:
    """A thread that runs ``action()`` once the job has written 20 results, noting in ``seen`` how many it had
    then ("results") and when the action started ("at")."""
    def run() -> None:
        seen["results"] = wait_for_lines(output, 20)
        seen["at"] = time.monotonic()
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def our_regions(server: LocalTritonServer) -> list[str]:
    """System shared-memory regions of batch jobs, registered on the server or left in /dev/shm."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    status = client.get_system_shared_memory_status(headers=server.admin_headers, as_json=True).get("regions", {})
    return [name for name in status if name.startswith("pixelserve-")] + [
        f for f in os.listdir("/dev/shm") if f.startswith("pixelserve-")]  # fmt: skip


def assert_every_file_answered_once(output: Path, folder: Path) -> list[dict]:
    records = read_jsonl(output)
    assert sorted(r["file"] for r in records) == sorted(str(f) for f in folder.iterdir())
    assert all("error" not in r and r["predictions"][0]["index"] in CAT_INDICES for r in records), records
    return records


@pytest.fixture(scope="module")
def supervised():
    """A tritonserver of our own under the watchdog (LocalTritonServer(supervise=True)), restarted when it dies."""
    ensure_classifier_built()
    server = LocalTritonServer([MODEL_REPOSITORY], supervise=True)
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.fixture
def many(tmp_path) -> Path:
    """JOB_FILES distinct small JPEG photos of a cat (distinct bytes: the response cache answers none of them)."""
    folder = tmp_path / "many"
    folder.mkdir()
    cat = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    for i in range(JOB_FILES):
        (folder / f"cat{i:03d}.jpg").write_bytes(uncached_jpeg(cat))
    return folder


# --- a server that restarts or dies mid-job ------------------------------------------------------------


def test_job_rides_out_a_server_killed_mid_job(supervised, many, tmp_path, monkeypatch):
    """Default settings: the server's process group is killed mid-job, the watchdog brings it back (4-9 s), and
    the job finishes with every file answered and exit 0, its progress bar and summary showing the retries."""
    monkeypatch.setenv(KEY_ENV, supervised.admin_key)
    output = tmp_path / "results.jsonl"
    restarts = len(supervised.restarts)
    primary, secondary = pty.openpty()
    seen = bytearray()
    process = subprocess.Popen(
        [sys.executable, "-m", "pixelserve.client.classify", str(many), "--output", str(output), "--url",
         supervised.grpc_url, "--concurrency", "4"],
        stdout=subprocess.PIPE, stderr=secondary, text=True, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    os.close(secondary)
    reader = threading.Thread(target=read_terminal, args=(primary, seen))
    reader.start()
    try:
        at_kill = wait_for_lines(output, 20)
        kill_server(supervised)
        out, _ = process.communicate(timeout=240)
    finally:
        process.kill()
        reader.join(10)
        os.close(primary)
    terminal = seen.decode(errors="replace")
    assert process.returncode == EXIT_OK, (out, terminal[-2000:])
    assert at_kill < JOB_FILES  # killed mid-job
    assert len(supervised.restarts) > restarts  # the watchdog did restart it
    records = assert_every_file_answered_once(output, many)
    assert max(r["attempts"] for r in records) > 1
    retries = int(re.search(r"(\d+) retries \(server unavailable for up to [\d.]+ s\)", out).group(1))
    assert retries >= 1 and f"{JOB_FILES} inputs: {JOB_FILES} classified, 0 failed" in out
    # The bar counted the retries as they happened (rich redraws the line; the last drawing has them all).
    shown = [int(n) for n in re.findall(r"retries (\d+) \(unavailable\)", terminal)]
    assert shown and max(shown) == retries, terminal[-2000:]


def test_job_started_while_the_server_restarts_waits_for_it(supervised, many, tmp_path, capsys):
    """The server is killed just before the job starts: the job waits for the watchdog's restart (telling its
    retries) instead of exiting at once, then answers every file exactly once."""
    output = tmp_path / "results.jsonl"
    restarts = len(supervised.restarts)
    kill_server(supervised)
    code = main([str(many), "--output", str(output), "--url", supervised.grpc_url, "--concurrency", "4"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, (out, err)
    assert len(supervised.restarts) > restarts  # it was down when the job began
    assert_every_file_answered_once(output, many)
    assert re.search(r"pixelserve-classify: retrying \(unavailable: ", err), err


def test_shared_memory_job_rides_out_a_restart(supervised, many, tmp_path, monkeypatch, capsys):
    """server.restart() from another thread mid-job: the new server has none of the job's shared-memory regions;
    the job registers them again, finishes with exit 0 and leaves no region behind. Without a terminal, the
    retries are told on stderr as they happen."""
    monkeypatch.setenv(KEY_ENV, supervised.admin_key)
    output = tmp_path / "results.jsonl"
    restarts, seen = len(supervised.restarts), {}
    restart = mid_job(output, lambda: supervised.restart("restarted by a test"), seen)
    try:
        code = main([str(many), "--output", str(output), "--url", supervised.grpc_url, "--concurrency", "3",
                     "--shared-memory", "system"])  # fmt: skip
    finally:
        restart.join(120)
    out, err = capsys.readouterr()
    # Had the regions not been registered again, every request after the restart would have failed (NOT_FOUND).
    assert code == EXIT_OK, err
    assert seen["results"] < JOB_FILES and len(supervised.restarts) > restarts
    assert_every_file_answered_once(output, many)
    assert re.search(r", [1-9]\d* retries \(server unavailable for up to", out), out
    assert re.search(r"pixelserve-classify: retrying \(unavailable: .*\); retries so far: \d+", err), err
    assert our_regions(supervised) == []


def test_job_stops_when_the_server_stays_away_and_resumes(many, tmp_path, capsys):
    """An unsupervised server killed mid-job: the job retries for --retry-for seconds, then exits 3 with one line
    that counts the results written and gives the command that continues the job, which then completes it."""
    ensure_classifier_built()
    server = LocalTritonServer([MODEL_REPOSITORY]).start(timeout=300)
    output = tmp_path / "results.jsonl"
    args = [str(many), "--output", str(output), "--url", server.grpc_url, "--retry-for", "3", "--quiet"]
    seen: dict = {}
    killer = mid_job(output, lambda: kill_server(server), seen)
    try:
        code = main(args)
        stopped = time.monotonic()
        killer.join(60)
        out, err = capsys.readouterr()
        assert code == EXIT_UNREACHABLE, (out, err)
        assert 3.0 <= stopped - seen["at"] < 30.0  # retried for the budget, then gave up
        written = lines_in(output)
        assert seen["results"] <= written < JOB_FILES and out == ""
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"pixelserve-classify: cannot reach Triton at {server.grpc_url} over gRPC: "), err
        assert f"; {written} results written to {output}; continue with: " in last
        resume = shlex.split(last.split("continue with: ", 1)[1])
        assert resume == ["pixelserve-classify", *args, "--resume"]
        assert "Traceback" not in err
        server.stop()
        server.start(timeout=300)  # the server is back: the command given continues the job
        assert main(resume[1:]) == EXIT_OK
        out, _ = capsys.readouterr()
        assert f"{JOB_FILES} inputs: {JOB_FILES - written} classified, 0 failed, {written} skipped" in out
        assert_every_file_answered_once(output, many)
    finally:
        server.stop()


def test_retries_only_transient_errors():
    """What counts as transient, on the exceptions tritonclient raises for a restarting server."""
    def reason(status: str, message: str, shared_memory: bool = False) -> str:
        exc = InferenceServerException(message, status=status)
        return batch.transient_reason(str(exc.status()), exc.message(), shared_memory)

    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    assert reason("StatusCode.UNAVAILABLE", refused) == "unavailable"
    assert reason("StatusCode.UNAVAILABLE", "Stream removed (Socket closed)") == "unavailable"
    assert reason("StatusCode.RESOURCE_EXHAUSTED", "queue is full") == "overloaded"
    assert reason("StatusCode.INTERNAL", "Stub process 'preprocess_0_0' is not healthy.") == "unavailable"
    assert reason("StatusCode.NOT_FOUND", "Unable to find shared memory region: 'pixelserve-1-0'", True) == "unavailable"
    # Final: bad input (whatever it says), a refused admin key, other server errors.
    assert reason("StatusCode.INVALID_ARGUMENT", "input 'encoded': not a JPEG or PNG image, server not ready") == ""
    assert reason("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header 'x'") == ""
    assert reason("StatusCode.INTERNAL", "something broke") == ""
    assert reason("StatusCode.NOT_FOUND", "Unable to find shared memory region: 'x'") == ""  # not the job's


def test_backoff_doubles_with_jitter_up_to_a_cap():
    options = batch.BatchOptions()
    assert (options.retry_for, options.backoff, options.max_backoff) == (60.0, 0.2, 2.0)
    for retry in range(1, 12):
        delays = [batch.backoff_delay(retry, options) for _ in range(200)]
        top = min(0.2 * 2 ** (retry - 1), 2.0)
        assert all(0.5 * top <= d <= top for d in delays)
        assert max(delays) - min(delays) > 0.2 * top  # jitter: retries do not come back in step


def test_bad_input_is_never_retried(triton_server, tmp_path, capsys):
    """INVALID_ARGUMENT (here: bytes the server cannot decode) fails at once, with its reason, on a live server."""
    (tmp_path / "notes.jpg").write_text("not an image\n")
    output = tmp_path / "results.jsonl"
    start = time.monotonic()
    assert main([str(tmp_path / "notes.jpg"), "--output", str(output), "--url", triton_server.grpc_url]) == EXIT_SOME_FAILED
    assert time.monotonic() - start < 10
    [record] = read_jsonl(output)
    assert record["reason"] == "rejected" and record["attempts"] == 1
    assert ", 0 retries" in capsys.readouterr().out


# --- clear errors instead of tracebacks ------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "not-the-key"])
def test_shared_memory_without_the_admin_key(triton_server, tmp_path, monkeypatch, capsys, key):
    from images import photo

    Image.fromarray(photo("chelsea")).save(tmp_path / "cat.jpg")
    if key is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, key)
    output = tmp_path / "results.jsonl"
    code = main([str(tmp_path / "cat.jpg"), "--output", str(output), "--url", triton_server.grpc_url, "--shared-memory",
                 "system", "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    expected = "needs its admin key: set $PIXELSERVE_ADMIN_KEY" if key is None else "refused the admin key in $PIXELSERVE_ADMIN_KEY"
    assert err.count("\n") == 1 and err.startswith("pixelserve-classify: --shared-memory: ") and expected in err, err
    assert "leave out --shared-memory" in err and out == ""
    assert not output.exists()  # nothing was written: no file to block the next run


def test_output_in_a_folder_that_does_not_exist(tmp_path, capsys):
    """Checked before the server is contacted (none runs at this URL)."""
    output = tmp_path / "no" / "such" / "results.jsonl"
    code = main([str(tmp_path), "--output", str(output), "--url", "127.0.0.1:9"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert err == f"pixelserve-classify: cannot write results to {output}: folder {output.parent} does not exist\n"
    assert out == ""


def test_wrong_model_name_is_named_and_leaves_no_file(triton_server, tmp_path, monkeypatch, capsys):
    from images import photo

    monkeypatch.delenv(KEY_ENV, raising=False)  # the model's metadata route is open: no key needed to tell
    Image.fromarray(photo("chelsea")).save(tmp_path / "cat.jpg")
    output = tmp_path / "results.csv"
    args = [str(tmp_path / "cat.jpg"), "--output", str(output), "--url", triton_server.grpc_url, "--quiet"]
    assert main([*args, "--model", "image_clasifier"]) == EXIT_MODEL_NOT_READY
    out, err = capsys.readouterr()
    assert err == f"pixelserve-classify: model 'image_clasifier' not found on {triton_server.grpc_url} over gRPC\n"
    assert not output.exists()
    assert main(args) == EXIT_OK  # the next run is not told to --resume a job that wrote nothing
    assert "1 inputs: 1 classified" in capsys.readouterr().out


def test_result_file_without_results_does_not_block(tmp_path):
    """A file holding no result (empty, a CSV header alone: left by older versions) is taken over; one with a
    result needs --resume; a file opened and closed without a result is removed."""
    for name, text in (("empty.jsonl", ""), ("header.csv", ",".join(batch.CSV_FIELDS) + "\r\n")):
        (tmp_path / name).write_text(text)
        batch.ResultFile(tmp_path / name).close()
    (tmp_path / "one.jsonl").write_text('{"file": "x"}\n')
    with pytest.raises(FileExistsError, match="--resume"):
        batch.ResultFile(tmp_path / "one.jsonl")
    batch.ResultFile(tmp_path / "new.csv").close()
    assert not (tmp_path / "new.csv").exists()
    resumed = batch.ResultFile(tmp_path / "one.jsonl", resume=True)
    resumed.close()
    assert (tmp_path / "one.jsonl").read_text() == '{"file": "x"}\n'  # not ours to remove


# --- what the summary tells ------------------------------------------------------------------------------


def test_other_formats_are_told_to_use_send_raw(triton_server, tmp_path, capsys):
    """GIF, TIFF and WebP files in a folder: the server decodes only JPEG and PNG; each failure and the summary
    say to send them as pixels, and --send raw classifies them."""
    from images import photo

    cat = Image.fromarray(photo("chelsea"))
    for name in ("cat.gif", "cat.tiff", "cat.webp", "cat.jpg"):
        cat.save(tmp_path / name)
    output = tmp_path / "results.jsonl"
    assert main([str(tmp_path), "--output", str(output), "--url", triton_server.grpc_url, "--quiet"]) == EXIT_SOME_FAILED
    out, _ = capsys.readouterr()
    records = {Path(r["file"]).name: r for r in read_jsonl(output)}
    assert records["cat.jpg"]["predictions"][0]["index"] in CAT_INDICES
    for name, fmt in (("cat.gif", "GIF"), ("cat.tiff", "TIFF"), ("cat.webp", "WEBP")):
        assert records[name]["reason"] == "unsupported_format", records[name]
        assert records[name]["error"].endswith(f"it is a {fmt} image: the server decodes only JPEG and PNG; "
                                               "send it as pixels: --send raw")  # fmt: skip
    assert "failures: unsupported_format 3" in out
    assert "unsupported_format: the server decodes only JPEG and PNG; send those files as pixels (--send raw)" in out
    raw = tmp_path / "raw.jsonl"
    assert main([*(str(tmp_path / n) for n in ("cat.gif", "cat.tiff", "cat.webp")), "--output", str(raw), "--url",
                 triton_server.grpc_url, "--send", "raw", "--quiet"]) == EXIT_OK  # fmt: skip
    assert all(r["predictions"][0]["index"] in CAT_INDICES for r in read_jsonl(raw))


def test_summary_names_the_first_failed_files(triton_server, tmp_path, capsys):
    broken = [tmp_path / f"broken{i:02d}.jpg" for i in range(batch.FAILED_SHOWN + 3)]
    for path in broken:
        path.write_text("not an image\n")
    output = tmp_path / "results.jsonl"
    assert main([*map(str, broken), "--output", str(output), "--url", triton_server.grpc_url, "--quiet"]) == EXIT_SOME_FAILED
    out, _ = capsys.readouterr()
    line = next(line for line in out.splitlines() if line.startswith("failed files "))
    named = re.findall(r"(\S+broken\d\d\.jpg) \(rejected\)", line)
    assert line.startswith(f"failed files ({len(broken)}): ") and line.endswith(" and 3 more"), line
    assert len(named) == batch.FAILED_SHOWN and set(named) <= {str(p) for p in broken}
