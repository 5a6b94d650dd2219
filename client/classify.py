"""pixelserve-classify: classify image files on a Triton server (their encoded bytes, or raw pixels with --send raw)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from .classifier import DEFAULT_TIMEOUT, ImageClassifierClient, Outcome
from .errors import AdminKeyRequired, ImageReadError, InferenceFailed, ModelNotReady, ServerUnreachable
from .files import expand_path
from .images import load_image
from .inputs import MODELS, SEND_MODES, ImageInput, raw_hint, read_encoded
from .report import JsonReport, PlainReport
from .batch import SHARED_MEMORY, BatchOptions, Result, ResultFile, Retry, classify_files
from .transport import DEFAULT_URLS, PROTOCOLS

__all__ = ["main", "build_parser"]  # the Python API is the package itself (pixelserve.client)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2  # argparse's own
EXIT_UNREACHABLE = 3
EXIT_MODEL_NOT_READY = 4
EXIT_INTERRUPTED = 130
RETRY_FOR = 60.0  # seconds: a server restart (4-9 s under the watchdog) is ridden out with room to spare

EPILOG = f"""\
Each file is sent as its own request. By default (--send encoded) that is the file's bytes as stored, to
{MODELS['encoded']}, which decodes JPEG and PNG on the server (EXIF orientation applied); a file
it cannot decode fails alone, with the server's reason (and, for a GIF, WebP, TIFF ... file, a hint to use
--send raw). --send raw decodes here instead (any format Pillow reads, e.g. GIF, WebP, TIFF; EXIF
orientation applied) and sends [1, H, W, 3] uint8 RGB to {MODELS['raw']}. --model overrides the model
of the chosen mode.
Folders are searched recursively for image files (by extension; hidden entries skipped).
Scores are the model's logits.

Batch jobs (--output FILE): requests go over asyncio gRPC (--url is the gRPC port, default
localhost:8001), at most --concurrency in flight; each answer is appended to FILE as it arrives (JSONL,
or CSV when FILE ends in .csv), in completion order; --resume skips the files FILE already answered
and appends (a job that wrote nothing leaves no FILE). A progress bar (images/s, ETA, failures, retries) is
drawn on stderr when it is a terminal, unless --quiet (elsewhere: a notice while retrying); a summary
(counts, failures by reason, the first failed files, retries, throughput, latency p50/p90/p99) ends the
job. Server unavailable or restarting, or its queue full: retried with exponential backoff (0.2 s doubling,
at most 2 s, with jitter) until the outage has lasted --retry-for seconds, then exit 3 if the server is
gone; bad input and timeouts: not retried. Ctrl-C and exit 3 say how many results were written and the
command that resumes the job.
--shared-memory system puts each request's tensor (encoded bytes or pixels) in shared memory instead of
the request body. --shared-memory cuda sends raw pixels (it implies --send raw): the server decodes
encoded bytes on the CPU, so bytes placed in GPU memory would only be copied back to the host.

--json prints one list: {{"file", "predictions": [{{"index", "label", "score"}}]}} per input,
in input order; inputs that failed have "predictions": [] and an "error" message.

exit status:
  {EXIT_OK}    every image classified
  {EXIT_SOME_FAILED}    some inputs failed (not an image, missing, or an error from the server for that image);
       the others were still classified
  {EXIT_USAGE}    bad command line, or what it asks for cannot be done: --output in a folder that does not exist
       (or an existing FILE without --resume), --shared-memory without the server's admin key
       ($PIXELSERVE_ADMIN_KEY: the shared-memory API is restricted)
  {EXIT_UNREACHABLE}    cannot reach the Triton server
  {EXIT_MODEL_NOT_READY}    the model is not ready, or not found ("model 'X' not found"), on the server
  {EXIT_INTERRUPTED}  interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="pixelserve-classify",
        description="Classify images with a Triton image classification model; print the top-k labels per image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--list", dest="list_file", metavar="FILE", help="a file naming one input path per line")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None, help="default: http; grpc with --output")
    parser.add_argument(
        "--url",
        help=f"server host:port (default: {DEFAULT_URLS['http']} for http, {DEFAULT_URLS['grpc']} for grpc)",
    )
    parser.add_argument(
        "--send", choices=SEND_MODES, default=None,
        help="encoded: the files' bytes, decoded by the server (default); raw: pixels decoded here",
    )
    parser.add_argument(
        "--model", help=f"model name (default: {MODELS['encoded']}; {MODELS['raw']} with --send raw)"
    )
    parser.add_argument("--top-k", type=_positive(int), default=5, metavar="K", help="classes per image (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of text blocks")
    parser.add_argument(
        "--concurrency", type=_positive(int), default=4, metavar="N", help="requests in flight at once (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=_positive(float), default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help="per request and connection (default: %(default)g)",
    )
    batch = parser.add_argument_group("batch jobs")
    batch.add_argument("--output", metavar="FILE", help="stream results to FILE (.jsonl or .csv): batch mode")
    batch.add_argument("--resume", action="store_true", help="continue the job of --output FILE, skipping answered files")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.add_argument("--retry-for", type=_non_negative(float), default=RETRY_FOR, metavar="SECONDS",
                       help="ride out a server restart or full queue this long, retrying (default: %(default)g; "
                            "0: no retries)")
    batch.add_argument("--shared-memory", choices=SHARED_MEMORY, default="none",
                       help="send images through shared memory (server on this host; cuda needs a GPU and "
                            "implies --send raw)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not args.paths and not args.list_file:
        parser.error("name at least one PATH or a --list FILE")
    if args.output is None and (args.resume or args.shared_memory != "none"):
        parser.error("--resume and --shared-memory belong to batch jobs (--output FILE)")
    if args.output is not None and args.protocol == "http":
        parser.error("batch jobs (--output) use gRPC")
    if args.shared_memory == "cuda" and args.send == "encoded":
        parser.error("--shared-memory cuda sends raw pixels: use --send raw, or --shared-memory system for encoded bytes")
    args.send = args.send or ("raw" if args.shared_memory == "cuda" else "encoded")
    args.protocol = args.protocol or ("grpc" if args.output else "http")
    try:
        return run_batch(args) if args.output else run(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): stop quietly, and keep Python's exit-time flush from failing too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SOME_FAILED


def run(args: argparse.Namespace) -> int:
    """Classify the inputs named by parsed arguments; return the exit status."""
    report = JsonReport(sys.stdout) if args.json else PlainReport(sys.stdout)
    failures = 0
    try:
        model = args.model or MODELS[args.send]
        # Every file goes the one way --send says, so the client's raw and encoded model are both that model.
        with ImageClassifierClient(args.url, args.protocol, model, args.timeout, args.concurrency, model) as client:
            client.check_ready(model)
            load = _read if args.send == "encoded" else _decode
            for outcome in client.classify_many(_inputs(args.paths, args.list_file), args.top_k, load=load):
                reason = None if outcome.ok else _reason(outcome)
                if reason is not None:
                    failures += 1
                    _error(f"{outcome.item}: {reason}")
                report.add(str(outcome.item), outcome.predictions, reason)
    except ServerUnreachable as exc:
        _error(str(exc))
        return EXIT_UNREACHABLE
    except ModelNotReady as exc:
        _error(str(exc))
        return EXIT_MODEL_NOT_READY
    finally:
        report.close()
    return EXIT_SOME_FAILED if failures else EXIT_OK


def run_batch(args: argparse.Namespace) -> int:
    """A batch job (--output): stream results to the file, show progress, print the summary."""
    from .progress import job_progress

    files = _inputs(args.paths, args.list_file)
    try:
        output = ResultFile(args.output, resume=args.resume)
    except FileExistsError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _error(f"cannot write results to {args.output}: {_output_problem(Path(args.output), exc)}")
        return EXIT_USAGE
    options = BatchOptions(url=args.url or DEFAULT_URLS["grpc"], model=args.model or "", top_k=args.top_k,
                           concurrency=args.concurrency, timeout=args.timeout, retry_for=args.retry_for,
                           shared_memory=args.shared_memory, send=args.send)  # fmt: skip
    todo = sum(str(f) not in output.answered for f in files)
    bar = not args.quiet and sys.stderr.isatty()
    try:
        with job_progress(todo, bar, notify=None if args.quiet or bar else _error) as progress:
            def on_result(result: Result) -> None:
                output.write(result)
                progress.finished(result.ok)

            def on_retry(retry: Retry) -> None:
                progress.retried(retry.reason, retry.error)

            summary = classify_files(files, options, on_result, skip=output.answered, on_retry=on_retry)
    except ServerUnreachable as exc:
        started = output.written or output.answered
        _error(f"{exc}; {_written(output)}; {_resume_hint(args)}" if started else str(exc))
        return EXIT_UNREACHABLE
    except ModelNotReady as exc:
        _error(str(exc))
        return EXIT_MODEL_NOT_READY
    except AdminKeyRequired as exc:
        _error(f"--shared-memory: {exc} (or leave out --shared-memory)")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error(f"interrupted: {_written(output)}; {_resume_hint(args)}")
        return EXIT_INTERRUPTED
    finally:
        output.close()
    print(summary.text(), flush=True)
    return EXIT_SOME_FAILED if summary.failures else EXIT_OK


def _written(output: ResultFile) -> str:
    """How many results the job wrote, and where ("3 results written to out.jsonl (40 from before)")."""
    before = f" ({len(output.answered)} from before)" if output.answered else ""
    return f"{output.written} results written to {output.path}{before}"


def _resume_hint(args: argparse.Namespace) -> str:
    """The command line that continues the job: this one, with --resume."""
    argv = args.argv if "--resume" in args.argv else [*args.argv, "--resume"]
    return f"continue with: pixelserve-classify {shlex.join(argv)}"


def _output_problem(path: Path, exc: OSError) -> str:
    """Why the output file cannot be opened, in a few words."""
    if isinstance(exc, FileNotFoundError) and not path.parent.is_dir():
        return f"folder {path.parent} does not exist"
    if isinstance(exc, IsADirectoryError):
        return "is a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def _inputs(paths: Sequence[str], list_file: str | None = None) -> list[Path]:
    """Every file to classify, in command-line order, then those of the list file; a folder without images
    stands for itself."""
    if list_file:
        lines = Path(list_file).read_text(encoding="utf-8").splitlines()
        paths = [*paths, *(line.strip() for line in lines if line.strip() and not line.startswith("#"))]
    files: list[Path] = []
    for path in paths:
        files += expand_path(path) or [Path(path)]
    return files


def _read(path: Path) -> ImageInput:
    """The file's bytes, to be decoded by the server."""
    _not_a_folder(path)
    return read_encoded(path)


def _decode(path: Path) -> ImageInput:
    """The file's pixels, decoded here."""
    _not_a_folder(path)
    return load_image(path)


def _not_a_folder(path: Path) -> None:
    if path.is_dir():
        raise ImageReadError(str(path), "no image files in this folder")


def _reason(outcome: Outcome[Path]) -> str:
    """What went wrong for one file; for bytes the server cannot decode but Pillow can, a hint to use --send raw."""
    error = outcome.error
    if isinstance(error, ImageReadError):
        return error.detail
    hint = raw_hint(outcome.item, str(error)) if isinstance(error, InferenceFailed) else ""
    return f"{error}; {hint}" if hint else str(error)


def _error(message: str) -> None:
    sys.stdout.flush()  # keep the order of results and errors on a shared terminal
    print(f"pixelserve-classify: {message}", file=sys.stderr, flush=True)


Number = TypeVar("Number", int, float)


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    return _number(kind, allow_zero=False)


def _non_negative(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    return _number(kind, allow_zero=True)


def _number(kind: Callable[[str], Number], allow_zero: bool) -> Callable[[str], Number]:
    """An argparse type: a number of ``kind`` above 0 (or 0 too, with ``allow_zero``)."""
    def convert(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value > 0 or (allow_zero and value == 0)):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if allow_zero else 'positive'}: {text!r}")
        return value

    return convert


if __name__ == "__main__":
    sys.exit(main())
