"""Batch jobs: classify many image files over asyncio gRPC with a bounded number of requests in flight.

Files are sent as their encoded bytes (decoded by the server) by default, or as pixels decoded here. Results
stream to a JSONL or CSV file as they arrive (so an interrupted job keeps them, and ``resume`` skips what was
answered, and a job that wrote nothing leaves no file); transient errors (server unavailable or restarting,
queue full) are retried with capped exponential backoff and jitter until the outage has lasted ``retry_for``
seconds, bad input never; inputs may travel through system or CUDA shared memory, one region per request
slot, registered once (again after a server restart) and always unregistered.
"""
from __future__ import annotations

import asyncio
import csv
import functools
import itertools
import json
import os
import random
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from .classifier import INPUT_NAME, OUTPUT_NAME, ImageClassifierClient
from .errors import AdminKeyRequired, ImageReadError, InvalidImage, ModelNotFound, ModelNotReady, ServerUnreachable
from .inputs import MODELS, SEND_MODES, load_file, raw_hint
from .predictions import Prediction, parse_classifications
from pixelserve.triton_local.access import KEY_ENV, admin_headers

SHARED_MEMORY = ("none", "system", "cuda")
READY_TIMEOUT = 10.0  # seconds
UNREGISTER_WAIT = 30.0  # seconds a region may stay "in use" by a request the server is finishing
# gRPC codes worth another try: the server is (re)starting (connection refused, stream cut) or its queue is
# full. Everything else is final, except the messages below.
TRANSIENT_CODES = {"StatusCode.UNAVAILABLE": "unavailable", "StatusCode.RESOURCE_EXHAUSTED": "overloaded"}
FINAL_CODES = {"StatusCode.INVALID_ARGUMENT": "rejected", "StatusCode.DEADLINE_EXCEEDED": "timeout"}
# A dead Python-backend stub (until the watchdog restarts the server) and a server or model not ready yet.
TRANSIENT_MESSAGES = ("is not healthy", "not ready")
RESTRICTED = "protocol is restricted"  # UNAVAILABLE too, but final: the admin key is missing or wrong
REGION_LOST = "Unable to find shared memory region"  # a restarted server forgot the job's regions
FAILED_SHOWN = 10  # failed files the summary names
CSV_FIELDS = ("file", "ok", "reason", "error", "latency_ms", "attempts", "top1_index", "top1_label", "top1_score",
              "predictions")  # fmt: skip


@dataclass(frozen=True)
class Result:
    """One input's answer (``predictions``) or its failure (``reason``: a fixed word, ``error``: the message)."""

    file: str
    predictions: tuple[Prediction, ...] = ()
    reason: str = ""
    error: str = ""
    latency_ms: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class Retry:
    """A transient error about to be retried: the file, the reason word, the server's message, the attempt that
    failed, the seconds to wait and how long the outage (transient errors, no answer) has lasted."""

    file: str
    reason: str
    error: str
    attempt: int
    delay: float
    outage_s: float


@dataclass
class Summary:
    """What a job did: counts, failures by reason (and the first failed files), retries, the longest outage
    ridden out, wall time and the latencies of answered requests."""

    total: int = 0
    skipped: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failed_files: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): the first FAILED_SHOWN
    retries: int = 0
    outage_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: Result) -> None:
        """Count one input's answer or failure."""
        if result.ok:
            self.ok += 1
            self.latencies_ms.append(result.latency_ms)
        else:
            self.failures[result.reason] += 1
            if len(self.failed_files) < FAILED_SHOWN:
                self.failed_files.append((result.file, result.reason))

    def retried(self, retry: Retry) -> None:
        """Count a retry and the outage it belongs to."""
        self.retries += 1
        self.outage_s = max(self.outage_s, retry.outage_s)

    @property
    def done(self) -> int:
        return self.ok + sum(self.failures.values())

    def percentiles(self) -> dict[str, float]:
        """p50/p90/p99 request latency in ms (answered requests, last attempt, decoding excluded)."""
        if not self.latencies_ms:
            return {}
        values = np.percentile(np.array(self.latencies_ms), [50, 90, 99])
        return {"p50": float(values[0]), "p90": float(values[1]), "p99": float(values[2])}

    def text(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        outage = f" (server unavailable for up to {self.outage_s:.1f} s)" if self.retries else ""
        lines = [f"{self.total} inputs: {self.ok} classified, {sum(self.failures.values())} failed, "
                 f"{self.skipped} skipped (already answered), {self.retries} retries{outage}",  # fmt: skip
                 f"throughput: {rate:.1f} images/s ({self.done} in {self.seconds:.1f} s)"]
        if self.failures:
            lines.append("failures: " + ", ".join(f"{reason} {n}" for reason, n in self.failures.most_common()))
            lines.append(self._failed_files_line())
        if self.failures["unsupported_format"]:
            lines.append("unsupported_format: the server decodes only JPEG and PNG; send those files as pixels "
                         "(--send raw)")  # fmt: skip
        if self.latencies_ms:
            lines.append("latency: " + ", ".join(f"{k} {v:.1f} ms" for k, v in self.percentiles().items()))
        return "\n".join(lines)

    def _failed_files_line(self) -> str:
        failed = sum(self.failures.values())
        shown = ", ".join(f"{file} ({reason})" for file, reason in self.failed_files)
        more = f" and {failed - len(self.failed_files)} more" if failed > len(self.failed_files) else ""
        return f"failed files ({failed}): {shown}{more}"


class ResultFile:
    """Results appended as they arrive, one flushed line each: JSONL, or CSV when the name ends in .csv.

    A file that holds no result (empty, or a CSV header only) is taken over without ``resume``; one this
    object created is removed again by ``close()`` if no result was written (so a failed start leaves nothing
    that would block the next run). OSError (FileNotFoundError for a missing folder) when it cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], resume: bool = False) -> None:
        self.path = Path(path)
        self.csv = self.path.suffix.lower() == ".csv"
        if not resume and self.path.is_file() and self._holds_results():
            raise FileExistsError(f"{self.path} exists: pass --resume to continue that job, or remove it")
        self.answered = self._read_answered() if resume else set()
        self.written = 0
        self.created = not self.path.exists()
        new = self.created or self.path.stat().st_size == 0 or not resume
        self._stream = open(self.path, "a" if resume else "w", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._stream, CSV_FIELDS) if self.csv else None
        if self._writer is not None and new:
            self._writer.writeheader()

    def _holds_results(self) -> bool:
        """Whether the file has a line beyond a CSV header."""
        with open(self.path, "rb") as stream:
            lines = sum(1 for line in itertools.islice(stream, 2) if line.strip())
        return lines > (1 if self.csv else 0)

    def _read_answered(self) -> set[str]:
        """Files with an answer in the file; a line cut off by an interruption is dropped from the file first."""
        if not self.path.exists():
            return set()
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            self.path.write_bytes(data)
        lines = data.decode("utf-8").splitlines()
        if self.csv:
            return {row["file"] for row in csv.DictReader(lines) if row.get("ok") == "true"}
        answered = set()
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not record.get("error"):
                answered.add(record["file"])
        return answered

    def write(self, result: Result) -> None:
        predictions = [p.as_dict() for p in result.predictions]
        if self._writer is not None:
            top = result.predictions[0] if result.predictions else None
            self._writer.writerow({
                "file": result.file, "ok": "true" if result.ok else "false", "reason": result.reason,
                "error": result.error, "latency_ms": f"{result.latency_ms:.3f}", "attempts": result.attempts,
                "top1_index": top.index if top else "", "top1_label": top.label if top else "",
                "top1_score": top.score if top else "", "predictions": json.dumps(predictions)})  # fmt: skip
        else:
            record: dict[str, object] = {"file": result.file}
            if result.ok:
                record["predictions"] = predictions
            else:
                record.update(error=result.error, reason=result.reason)
            record.update(latency_ms=round(result.latency_ms, 3), attempts=result.attempts)
            self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()
        self.written += 1

    def close(self) -> None:
        """Close the file; remove it if this object created it and wrote no result."""
        if self._stream.closed:
            return
        self._stream.close()
        if self.created and not self.written:
            self.path.unlink(missing_ok=True)


class SharedMemoryPool:
    """One input region per request slot (system or CUDA shared memory), registered with the server once.

    Creating the pool checks that the server lets this client register shared memory (AdminKeyRequired
    if not: the API is behind the admin key). A slot grows (re-created and re-registered) only when an image
    is larger than it; ``forget(slot)`` (a restarted server lost the registration) registers it again at the
    next ``put``. ``close()`` unregisters and destroys every region; call it in a ``finally`` (the CLI does,
    on Ctrl-C too). Registration uses the synchronous gRPC client, so cleanup needs no running event loop.
    """

    def __init__(self, url: str, kind: str, slots: int, device_id: int = 0) -> None:
        import tritonclient.grpc as grpcclient

        if kind not in ("system", "cuda"):
            raise ValueError(f"shared memory must be system or cuda, got {kind!r}")
        self.kind, self.device_id = kind, device_id
        self.prefix = f"pixelserve-{os.getpid()}-{random.getrandbits(32):08x}"
        self._client = grpcclient.InferenceServerClient(url)
        self._regions: list[tuple[object, int] | None] = [None] * slots
        self._registered = [False] * slots
        self._check_access()
        if kind == "cuda":
            import tritonclient.utils.cuda_shared_memory as cudashm  # needs a GPU and cuda-python

            self._shm = cudashm
        else:
            with warnings.catch_warnings():  # tritonclient 2.51 imports the deprecated pkg_resources
                warnings.simplefilter("ignore", UserWarning)
                import tritonclient.utils.shared_memory as shm

            self._shm = shm

    def name(self, slot: int) -> str:
        return f"{self.prefix}-{slot}"

    def _check_access(self) -> None:
        """Ask for the server's shared-memory status (a restricted API); AdminKeyRequired where it refuses."""
        from tritonclient.utils import InferenceServerException

        status = (self._client.get_cuda_shared_memory_status if self.kind == "cuda"
                  else self._client.get_system_shared_memory_status)  # fmt: skip
        try:
            status(headers=admin_headers())
        except InferenceServerException as exc:
            self._client.close()
            if RESTRICTED in str(exc):
                raise _admin_key_required() from None
            raise

    def forget(self, slot: int) -> None:
        """The server no longer has the slot's region (it restarted): register it again at the next ``put``."""
        self._registered[slot] = False

    def put(self, slot: int, batch: npt.NDArray[Any]) -> tuple[str, int]:
        """Copy ``batch`` (pixels, or a BYTES tensor of encoded images) into the slot's region (growing it if
        needed); return (region name, byte size)."""
        from tritonclient.utils import serialize_byte_tensor, serialized_byte_size

        if batch.dtype == np.object_:  # BYTES: the server reads each element as a 4-byte length, then the bytes
            batch = serialize_byte_tensor(batch)
            nbytes = serialized_byte_size(batch)
        else:
            nbytes = batch.nbytes
        region = self._regions[slot]
        if region is None or region[1] < nbytes:
            self._release(slot)
            size = max(1 << 20, 1 << (max(nbytes, 1) - 1).bit_length())  # a power of two: few regrowths
            name = self.name(slot)
            if self.kind == "cuda":
                handle = self._shm.create_shared_memory_region(name, size, self.device_id)
            else:
                handle = self._shm.create_shared_memory_region(name, "/" + name, size)
            region = self._regions[slot] = (handle, size)
        if not self._registered[slot]:
            self._register(slot, region)
        self._shm.set_shared_memory_region(region[0], [batch])  # same call in both modules
        return self.name(slot), nbytes

    def _register(self, slot: int, region: tuple[object, int]) -> None:
        """Register the slot's region with the server (AdminKeyRequired where it refuses the key)."""
        from tritonclient.utils import InferenceServerException

        name, (handle, size) = self.name(slot), region
        try:
            if self.kind == "cuda":
                self._client.register_cuda_shared_memory(name, self._shm.get_raw_handle(handle), self.device_id, size,
                                                         headers=admin_headers())
            else:
                self._client.register_system_shared_memory(name, "/" + name, size, headers=admin_headers())
        except InferenceServerException as exc:
            if RESTRICTED in str(exc):
                raise _admin_key_required() from None
            raise
        self._registered[slot] = True

    def _release(self, slot: int, wait: float = UNREGISTER_WAIT) -> None:
        """Unregister the slot's region (the server refuses while a request still reads it: try again for up
        to ``wait`` seconds), then destroy it here."""
        from tritonclient.utils import InferenceServerException

        region, self._regions[slot] = self._regions[slot], None
        registered, self._registered[slot] = self._registered[slot], False
        if region is None:
            return
        if not registered:
            self._shm.destroy_shared_memory_region(region[0])
            return
        unregister = (self._client.unregister_cuda_shared_memory if self.kind == "cuda"
                      else self._client.unregister_system_shared_memory)  # fmt: skip
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    unregister(self.name(slot), headers=admin_headers())
                    break
                except InferenceServerException as exc:
                    if "in use" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            self._shm.destroy_shared_memory_region(region[0])

    def close(self) -> list[Exception]:
        """Unregister and destroy every region (each one, even if another fails), close the client, and
        return what failed."""
        errors = []
        for slot in range(len(self._regions)):
            try:
                self._release(slot)
            except Exception as exc:  # keep releasing the others
                errors.append(exc)
        self._client.close()
        return errors


def _admin_key_required() -> AdminKeyRequired:
    if os.environ.get(KEY_ENV):
        return AdminKeyRequired(f"the server refused the admin key in ${KEY_ENV} for its shared-memory API "
                                "(set the key it was started with)")  # fmt: skip
    return AdminKeyRequired(f"the server's shared-memory API needs its admin key: set ${KEY_ENV}")


@dataclass
class BatchOptions:
    """How a job talks to the server."""

    url: str = "localhost:8001"
    model: str = ""  # "": image_classifier_encoded, or image_classifier when sending raw
    top_k: int = 5
    concurrency: int = 8
    timeout: float = 60.0
    # Seconds an outage is ridden out: transient errors (server restarting, queue full) are retried until the
    # first of them since the server last answered is this old; 0: no retries.
    retry_for: float = 60.0
    backoff: float = 0.2  # seconds before the first retry; doubled each time, at most max_backoff, with jitter
    max_backoff: float = 2.0
    shared_memory: str = "none"
    # "encoded": each file's bytes, decoded by the server; "raw": pixels decoded here. "": encoded, except with
    # CUDA shared memory (raw: the server decodes on the CPU, so bytes in GPU memory would only come back).
    send: str = ""

    def __post_init__(self) -> None:
        if self.shared_memory not in SHARED_MEMORY:
            raise ValueError(f"shared_memory must be one of {', '.join(SHARED_MEMORY)}, got {self.shared_memory!r}")
        if not self.send:
            self.send = "raw" if self.shared_memory == "cuda" else "encoded"
        if self.send not in SEND_MODES:
            raise ValueError(f"send must be one of {', '.join(SEND_MODES)}, got {self.send!r}")
        if self.send == "encoded" and self.shared_memory == "cuda":
            raise ValueError("CUDA shared memory carries raw pixels: send='raw', or shared_memory='system' for encoded")
        self.model = self.model or MODELS[self.send]


def classify_files(
    files: Sequence[str | os.PathLike[str]],
    options: BatchOptions,
    on_result: Callable[[Result], None] = lambda result: None,
    skip: Iterable[str] = (),
    on_retry: Callable[[Retry], None] = lambda retry: None,
) -> Summary:
    """Classify ``files`` (skipping those named in ``skip``), calling ``on_result`` as each answer arrives and
    ``on_retry`` before each retry of a transient error.

    Raises ServerUnreachable when the server cannot be reached within ``options.retry_for`` seconds (at the
    start, or when it goes away mid-job and does not come back), ModelNotFound, ModelNotReady, and AdminKeyRequired for
    shared memory without the server's admin key; per-file failures are Results with a reason.
    Shared-memory regions are unregistered before this returns or raises, on KeyboardInterrupt too.
    """
    skipped = set(skip)
    todo = [str(f) for f in files if str(f) not in skipped]
    summary = Summary(total=len(files), skipped=len(files) - len(todo))
    pool = None
    start = time.perf_counter()
    try:
        def record(result: Result) -> None:
            summary.add(result)
            on_result(result)

        def retried(retry: Retry) -> None:
            summary.retried(retry)
            on_retry(retry)

        _check_ready(options, retried)
        if options.shared_memory != "none":
            pool = SharedMemoryPool(options.url, options.shared_memory, options.concurrency)

        asyncio.run(_run(todo, options, pool, record, retried))
    except BaseException:
        if pool is not None:
            pool.close()  # best effort; the error that stopped the job is the one to report
        raise
    finally:
        summary.seconds = time.perf_counter() - start
    if pool is not None and (errors := pool.close()):
        raise errors[0]
    return summary


def backoff_delay(retry: int, options: BatchOptions) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): ``backoff`` doubled each time, at most
    ``max_backoff``, times a random factor in [0.5, 1] so that clients do not come back in step."""
    return min(options.backoff * 2.0 ** (retry - 1), options.max_backoff) * random.uniform(0.5, 1.0)


def transient_reason(status: str, message: str, shared_memory: bool = False) -> str:
    """The reason word of a gRPC error worth retrying ("unavailable", "overloaded"), or "" for a final one.

    Bad input (INVALID_ARGUMENT) and a refused admin key are final; a region the server does not know is
    transient with ``shared_memory`` (the server restarted and lost the job's registrations)."""
    if status == "StatusCode.INVALID_ARGUMENT" or RESTRICTED in message:
        return ""
    if status in TRANSIENT_CODES:
        return TRANSIENT_CODES[status]
    if any(text in message for text in TRANSIENT_MESSAGES) or (shared_memory and REGION_LOST in message):
        return "unavailable"
    return ""


def _check_ready(options: BatchOptions, on_retry: Callable[[Retry], None] = lambda retry: None) -> None:
    """Return once the server answers and the model is ready. A server that is away or a model not ready yet (a
    restart when the job starts) is asked again with backoff until the outage is ``retry_for`` old, then its error
    is raised; a model the server does not have fails at once."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            # The request timeout bounds inference; asking for readiness gets at least READY_TIMEOUT.
            with ImageClassifierClient(options.url, "grpc", timeout=max(options.timeout, READY_TIMEOUT)) as client:
                client.check_ready(options.model)
            return
        except ModelNotFound:
            raise
        except (ServerUnreachable, ModelNotReady) as exc:
            outage = time.monotonic() - started
            if outage >= options.retry_for:
                raise
            attempt += 1
            delay = min(backoff_delay(attempt, options), max(options.retry_for - outage, 0.0))
            on_retry(Retry("", "unavailable", str(exc), attempt, delay, outage))
            time.sleep(delay)


@dataclass
class _Outage:
    """Transient errors since the server last answered: retried until the first of them is ``retry_for`` old."""

    since: float | None = None

    def answered(self) -> None:
        self.since = None

    def lasted(self) -> float:
        """Note a transient error; return the seconds since the first of this outage."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        return now - self.since


@dataclass
class _Job:
    """What the workers of one job share."""

    client: Any  # tritonclient.grpc.aio.InferenceServerClient
    options: BatchOptions
    pool: SharedMemoryPool | None
    record: Callable[[Result], None]
    retried: Callable[[Retry], None]
    inflight: set[asyncio.Future[Any]] = field(default_factory=set)  # infer calls, shielded from cancellation
    outage: _Outage = field(default_factory=_Outage)


async def _run(files: list[str], options: BatchOptions, pool: SharedMemoryPool | None,
               record: Callable[[Result], None], retried: Callable[[Retry], None]) -> None:
    import tritonclient.grpc.aio as aioclient

    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in files:
        queue.put_nowait(name)
    async with aioclient.InferenceServerClient(options.url, channel_args=_channel_args(options)) as client:
        job = _Job(client, options, pool, record, retried)
        slots = range(min(options.concurrency, max(len(files), 1)))
        workers = [asyncio.create_task(_worker(slot, queue, job)) for slot in slots]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # On an error or Ctrl-C, let the requests already sent finish (their timeout bounds the wait):
            # the server may still be reading their shared-memory regions, which are released next.
            if job.inflight:
                await asyncio.wait(job.inflight, timeout=options.timeout)


def _channel_args(options: BatchOptions) -> list[tuple[str, int]]:
    """tritonclient's default channel settings, with reconnection tries at most ``max_backoff`` apart: gRPC's
    own backoff grows to 2 minutes, which would keep a job waiting long after a restarted server is back."""
    from tritonclient.grpc import KeepAliveOptions

    keepalive = KeepAliveOptions()
    return [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", max(int(options.max_backoff * 1000), 250))]  # fmt: skip


async def _worker(slot: int, queue: asyncio.Queue[str], job: _Job) -> None:
    loop = asyncio.get_running_loop()
    while not queue.empty():
        name = queue.get_nowait()
        try:
            batch = await loop.run_in_executor(None, load_file, name, job.options.send)
        except ImageReadError as exc:
            job.record(Result(name, reason="unreadable", error=exc.detail))
            continue
        except InvalidImage as exc:
            job.record(Result(name, reason="invalid_image", error=str(exc)))
            continue
        job.record(await _infer_with_retries(name, batch, slot, job))


async def _infer_with_retries(name: str, batch: npt.NDArray[Any], slot: int, job: _Job) -> Result:
    """Send one file's tensor, retrying transient errors while the outage is younger than ``retry_for``;
    raise ServerUnreachable when it is over and the server is not even live."""
    from tritonclient.utils import InferenceServerException

    options = job.options
    for attempt in itertools.count(1):
        try:
            response, latency_ms = await _infer(batch, slot, job)
        except InferenceServerException as exc:
            status, message = str(exc.status() or ""), exc.message() or str(exc)
            reason = transient_reason(status, message, job.pool is not None)
            if not reason:
                job.outage.answered()
                return _failure(name, FINAL_CODES.get(status) or "server_error", message, attempt, options)
            outage = job.outage.lasted()
            if outage >= options.retry_for:
                if status == "StatusCode.UNAVAILABLE" and not await _server_live(job):
                    raise ServerUnreachable(options.url, "gRPC", message)
                return _failure(name, reason, message, attempt, options)
            if job.pool is not None and REGION_LOST in message:
                job.pool.forget(slot)
            delay = backoff_delay(attempt, options)
            job.retried(Retry(name, reason, message, attempt, delay, outage))
            await asyncio.sleep(delay)
            continue
        job.outage.answered()
        predictions = tuple(parse_classifications(np.asarray(response.as_numpy(OUTPUT_NAME)).ravel()))
        return Result(name, predictions, latency_ms=latency_ms, attempts=attempt)
    raise AssertionError("unreachable")


async def _infer(batch: npt.NDArray[Any], slot: int, job: _Job) -> tuple[Any, float]:
    """One try: the tensor in the request body or the slot's region; return the response and its latency in ms."""
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import np_to_triton_dtype

    infer_input = aioclient.InferInput(INPUT_NAME, list(batch.shape), np_to_triton_dtype(batch.dtype))
    if job.pool is not None:
        region, size = job.pool.put(slot, batch)
        infer_input.set_shared_memory(region, size)
    else:
        infer_input.set_data_from_numpy(batch)
    output = aioclient.InferRequestedOutput(OUTPUT_NAME, class_count=job.options.top_k)
    start = time.perf_counter()
    call = asyncio.ensure_future(job.client.infer(job.options.model, [infer_input], outputs=[output],
                                                  client_timeout=job.options.timeout))  # fmt: skip
    job.inflight.add(call)
    call.add_done_callback(functools.partial(_forget, job.inflight))
    response = await asyncio.shield(call)
    return response, (time.perf_counter() - start) * 1000


def _failure(name: str, reason: str, message: str, attempts: int, options: BatchOptions) -> Result:
    """The Result of a failed file; encoded bytes the server cannot decode but Pillow can become
    ``unsupported_format``, with a hint to send them as pixels."""
    hint = raw_hint(name, message) if reason == "rejected" and options.send == "encoded" else ""
    if hint:
        return Result(name, reason="unsupported_format", error=f"{message}; {hint}", attempts=attempts)
    return Result(name, reason=reason, error=message, attempts=attempts)


def _forget(inflight: set[asyncio.Future[Any]], call: asyncio.Future[Any]) -> None:
    """Done callback of an infer call: drop it from the in-flight set and mark its outcome as seen (a call
    whose worker was cancelled is awaited by nobody, and asyncio would log its error)."""
    inflight.discard(call)
    if not call.cancelled():
        call.exception()


async def _server_live(job: _Job) -> bool:
    try:
        return bool(await job.client.is_server_live(client_timeout=min(job.options.timeout, READY_TIMEOUT)))
    except Exception:
        return False


__all__ = ["BatchOptions", "Result", "Retry", "ResultFile", "SharedMemoryPool", "Summary", "backoff_delay", "classify_files",
           "transient_reason", "SHARED_MEMORY"]
