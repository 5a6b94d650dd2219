"""Batch jobs: classify many image files over asyncio gRPC with a bounded number of requests in flight.

Files are sent as their encoded bytes (decoded by the server) by default, or as pixels decoded here. Results
stream to a JSONL or CSV file as they arrive (so an interrupted job keeps them, and ``resume`` skips what was
answered); a transient error (server unavailable, queue full) is retried with backoff a bounded number of
times, bad input never; inputs may travel through system or CUDA shared memory, one region per request slot,
registered once and always unregistered.
"""
from __future__ import annotations

import asyncio
import csv
import functools
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
from .errors import ImageReadError, InvalidImage, ServerUnreachable
from .inputs import MODELS, SEND_MODES, load_file
from .predictions import Prediction, parse_classifications
from pixelserve.triton_local.access import admin_headers

SHARED_MEMORY = ("none", "system", "cuda")
READY_TIMEOUT = 10.0  # seconds
UNREGISTER_WAIT = 30.0  # seconds a region may stay "in use" by a request the server is finishing
# gRPC codes worth another try: the server is (re)starting or its queue is full. Everything else is final.
TRANSIENT_CODES = {"StatusCode.UNAVAILABLE": "unavailable", "StatusCode.RESOURCE_EXHAUSTED": "overloaded"}
FINAL_CODES = {"StatusCode.INVALID_ARGUMENT": "rejected", "StatusCode.DEADLINE_EXCEEDED": "timeout"}
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


@dataclass
class Summary:
    """What a job did: counts, failures by reason, wall time and the latencies of answered requests."""

    total: int = 0
    skipped: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: Result) -> None:
        self.retries += max(result.attempts - 1, 0)
        if result.ok:
            self.ok += 1
            self.latencies_ms.append(result.latency_ms)
        else:
            self.failures[result.reason] += 1

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
        lines = [f"{self.total} inputs: {self.ok} classified, {sum(self.failures.values())} failed, "
                 f"{self.skipped} skipped (already answered), {self.retries} retries",  # fmt: skip
                 f"throughput: {rate:.1f} images/s ({self.done} in {self.seconds:.1f} s)"]
        if self.failures:
            lines.append("failures: " + ", ".join(f"{reason} {n}" for reason, n in self.failures.most_common()))
        if self.latencies_ms:
            lines.append("latency: " + ", ".join(f"{k} {v:.1f} ms" for k, v in self.percentiles().items()))
        return "\n".join(lines)


class ResultFile:
    """Results appended as they arrive, one flushed line each: JSONL, or CSV when the name ends in .csv."""

    def __init__(self, path: str | os.PathLike[str], resume: bool = False) -> None:
        self.path = Path(path)
        self.csv = self.path.suffix.lower() == ".csv"
        if self.path.exists() and not resume:
            raise FileExistsError(f"{self.path} exists: pass --resume to continue that job, or remove it")
        self.answered = self._read_answered() if resume else set()
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._stream = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._stream, CSV_FIELDS) if self.csv else None
        if self._writer is not None and new:
            self._writer.writeheader()

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

    def close(self) -> None:
        self._stream.close()


class SharedMemoryPool:
    """One input region per request slot (system or CUDA shared memory), registered with the server once.

    A slot grows (re-created and re-registered) only when an image is larger than it. ``close()``
    unregisters and destroys every region; call it in a ``finally`` (the CLI does, on Ctrl-C too).
    Registration uses the synchronous gRPC client, so cleanup needs no running event loop.
    """

    def __init__(self, url: str, kind: str, slots: int, device_id: int = 0) -> None:
        import tritonclient.grpc as grpcclient

        if kind not in ("system", "cuda"):
            raise ValueError(f"shared memory must be system or cuda, got {kind!r}")
        self.kind, self.device_id = kind, device_id
        self.prefix = f"pixelserve-{os.getpid()}-{random.getrandbits(32):08x}"
        self._client = grpcclient.InferenceServerClient(url)
        self._regions: list[tuple[object, int] | None] = [None] * slots
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
                self._regions[slot] = (handle, size)
                self._client.register_cuda_shared_memory(name, self._shm.get_raw_handle(handle), self.device_id, size,
                                                         headers=admin_headers())
            else:
                handle = self._shm.create_shared_memory_region(name, "/" + name, size)
                self._regions[slot] = (handle, size)
                self._client.register_system_shared_memory(name, "/" + name, size, headers=admin_headers())
            region = self._regions[slot]
        assert region is not None
        self._shm.set_shared_memory_region(region[0], [batch])  # same call in both modules
        return self.name(slot), nbytes

    def _release(self, slot: int, wait: float = UNREGISTER_WAIT) -> None:
        """Unregister the slot's region (the server refuses while a request still reads it: try again for up
        to ``wait`` seconds), then destroy it here."""
        from tritonclient.utils import InferenceServerException

        region, self._regions[slot] = self._regions[slot], None
        if region is None:
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


@dataclass
class BatchOptions:
    """How a job talks to the server."""

    url: str = "localhost:8001"
    model: str = ""  # "": image_classifier_encoded, or image_classifier when sending raw
    top_k: int = 5
    concurrency: int = 8
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.2  # seconds before the first retry; doubled each time, with jitter, at most 5 s
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
) -> Summary:
    """Classify ``files`` (skipping those named in ``skip``), calling ``on_result`` as each answer arrives.

    Raises ServerUnreachable when the server cannot be reached (also when it goes away mid-job and
    retries do not bring it back) and ModelNotReady; per-file failures are Results with a reason.
    Shared-memory regions are unregistered before this returns or raises, on KeyboardInterrupt too.
    """
    skipped = set(skip)
    todo = [str(f) for f in files if str(f) not in skipped]
    summary = Summary(total=len(files), skipped=len(files) - len(todo))
    pool = None
    start = time.perf_counter()
    try:
        _check_ready(options)
        if options.shared_memory != "none":
            pool = SharedMemoryPool(options.url, options.shared_memory, options.concurrency)

        def record(result: Result) -> None:
            summary.add(result)
            on_result(result)

        asyncio.run(_run(todo, options, pool, record))
    except BaseException:
        if pool is not None:
            pool.close()  # best effort; the error that stopped the job is the one to report
        raise
    finally:
        summary.seconds = time.perf_counter() - start
    if pool is not None and (errors := pool.close()):
        raise errors[0]
    return summary


def _check_ready(options: BatchOptions) -> None:
    # The request timeout bounds inference; asking for readiness gets at least READY_TIMEOUT.
    with ImageClassifierClient(options.url, "grpc", timeout=max(options.timeout, READY_TIMEOUT)) as client:
        client.check_ready(options.model)


async def _run(files: list[str], options: BatchOptions, pool: SharedMemoryPool | None,
               record: Callable[[Result], None]) -> None:
    import tritonclient.grpc.aio as aioclient

    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in files:
        queue.put_nowait(name)
    inflight: set[asyncio.Future[Any]] = set()  # infer calls, shielded from the workers' cancellation
    async with aioclient.InferenceServerClient(options.url) as client:
        workers = [asyncio.create_task(_worker(slot, queue, client, options, pool, record, inflight))
                   for slot in range(min(options.concurrency, max(len(files), 1)))]  # fmt: skip
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # On an error or Ctrl-C, let the requests already sent finish (their timeout bounds the wait):
            # the server may still be reading their shared-memory regions, which are released next.
            if inflight:
                await asyncio.wait(inflight, timeout=options.timeout)


async def _worker(slot: int, queue: asyncio.Queue[str], client: Any, options: BatchOptions, pool: SharedMemoryPool | None,
                  record: Callable[[Result], None], inflight: set[asyncio.Future[Any]]) -> None:
    loop = asyncio.get_running_loop()
    while not queue.empty():
        name = queue.get_nowait()
        try:
            batch = await loop.run_in_executor(None, load_file, name, options.send)
        except ImageReadError as exc:
            record(Result(name, reason="unreadable", error=exc.detail))
            continue
        except InvalidImage as exc:
            record(Result(name, reason="invalid_image", error=str(exc)))
            continue
        record(await _infer_with_retries(name, batch, slot, client, options, pool, inflight))


async def _infer_with_retries(name: str, batch: npt.NDArray[Any], slot: int, client: Any, options: BatchOptions,
                             pool: SharedMemoryPool | None, inflight: set[asyncio.Future[Any]]) -> Result:
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    for attempt in range(1, options.retries + 2):
        infer_input = aioclient.InferInput(INPUT_NAME, list(batch.shape), np_to_triton_dtype(batch.dtype))
        if pool is not None:
            region, size = pool.put(slot, batch)
            infer_input.set_shared_memory(region, size)
        else:
            infer_input.set_data_from_numpy(batch)
        output = aioclient.InferRequestedOutput(OUTPUT_NAME, class_count=options.top_k)
        start = time.perf_counter()
        try:
            call = asyncio.ensure_future(client.infer(options.model, [infer_input], outputs=[output],
                                                      client_timeout=options.timeout))  # fmt: skip
            inflight.add(call)
            call.add_done_callback(functools.partial(_forget, inflight))
            response = await asyncio.shield(call)
        except InferenceServerException as exc:
            status, message = str(exc.status() or ""), exc.message() or str(exc)
            reason = TRANSIENT_CODES.get(status) or FINAL_CODES.get(status) or "server_error"
            if status in TRANSIENT_CODES and attempt <= options.retries:
                delay = min(options.backoff * 2 ** (attempt - 1), 5.0)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                continue
            if status == "StatusCode.UNAVAILABLE" and not await _server_live(client, options):
                raise ServerUnreachable(options.url, "gRPC", message)
            return Result(name, reason=reason, error=message, attempts=attempt)
        latency = (time.perf_counter() - start) * 1000
        predictions = tuple(parse_classifications(np.asarray(response.as_numpy(OUTPUT_NAME)).ravel()))
        return Result(name, predictions, latency_ms=latency, attempts=attempt)
    raise AssertionError("unreachable")


def _forget(inflight: set[asyncio.Future[Any]], call: asyncio.Future[Any]) -> None:
    """Done callback of an infer call: drop it from the in-flight set and mark its outcome as seen (a call
    whose worker was cancelled is awaited by nobody, and asyncio would log its error)."""
    inflight.discard(call)
    if not call.cancelled():
        call.exception()


async def _server_live(client: Any, options: BatchOptions) -> bool:
    try:
        return bool(await client.is_server_live(client_timeout=options.timeout))
    except Exception:
        return False


__all__ = ["BatchOptions", "Result", "ResultFile", "SharedMemoryPool", "Summary", "classify_files", "SHARED_MEMORY"]
