"""pixelserve-classify: classify image files on a Triton server (their encoded bytes, or raw pixels with --send raw)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from .classifier import DEFAULT_TIMEOUT, ImageClassifierClient, Outcome
from .errors import ImageReadError, ModelNotReady, ServerUnreachable
from .files import expand_path
from .images import load_image
from .inputs import MODELS, SEND_MODES, ImageInput, read_encoded
from .report import JsonReport, PlainReport
from .batch import SHARED_MEMORY
from .transport import DEFAULT_URLS, PROTOCOLS

__all__ = ["main", "build_parser"]  # the Python API is the package itself (pixelserve.client)

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2  # argparse's own
EXIT_UNREACHABLE = 3
EXIT_MODEL_NOT_READY = 4
EXIT_INTERRUPTED = 130

EPILOG = f"""\
Each file is sent as its own request. By default (--send encoded) that is the file's bytes as stored, to
{MODELS['encoded']}, which decodes JPEG and PNG on the server (EXIF orientation applied); a file
it cannot decode fails alone, with the server's reason. --send raw decodes here instead (any format Pillow
reads, e.g. GIF, WebP, TIFF; EXIF orientation applied) and sends [1, H, W, 3] uint8 RGB to
{MODELS['raw']}. --model overrides the model of the chosen mode.
Folders are searched recursively for image files (by extension; hidden entries skipped).
Scores are the model's logits.

Batch jobs (--output FILE): requests go over asyncio gRPC (--url is the gRPC port, default
localhost:8001), at most --concurrency in flight; each answer is appended to FILE as it arrives (JSONL,
or CSV when FILE ends in .csv), in completion order; --resume skips the files FILE already answered
and appends. A progress bar (images/s, ETA) is drawn on stderr when it is a terminal, unless --quiet;
a summary (counts, failures by reason, throughput, latency p50/p90/p99) ends the job. Unavailable
server or full queue: retried --retries times with exponential backoff; bad input and timeouts: not.
--shared-memory system puts each request's tensor (encoded bytes or pixels) in shared memory instead of
the request body. --shared-memory cuda sends raw pixels (it implies --send raw): the server decodes
encoded bytes on the CPU, so bytes placed in GPU memory would only be copied back to the host.

--json prints one list: {{"file", "predictions": [{{"index", "label", "score"}}]}} per input,
in input order; inputs that failed have "predictions": [] and an "error" message.

exit status:
  {EXIT_OK}    every image classified
  {EXIT_SOME_FAILED}    some inputs failed (not an image, missing, or an error from the server for that image);
       the others were still classified
  {EXIT_USAGE}    bad command line
  {EXIT_UNREACHABLE}    cannot reach the Triton server
  {EXIT_MODEL_NOT_READY}    the model is not ready (or not found) on the server
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
    batch.add_argument("--retries", type=_non_negative_int, default=3, metavar="N",
                       help="tries after a transient error (default: %(default)s)")
    batch.add_argument("--shared-memory", choices=SHARED_MEMORY, default="none",
                       help="send images through shared memory (server on this host; cuda needs a GPU and "
                            "implies --send raw)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
                if not outcome.ok:
                    failures += 1
                    _error(f"{outcome.item}: {_reason(outcome)}")
                report.add(str(outcome.item), outcome.predictions, None if outcome.ok else _reason(outcome))
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
    from .batch import BatchOptions, Result, ResultFile, classify_files
    from .progress import progress_bar

    files = _inputs(args.paths, args.list_file)
    try:
        output = ResultFile(args.output, resume=args.resume)
    except FileExistsError as exc:
        _error(str(exc))
        return EXIT_USAGE
    options = BatchOptions(url=args.url or DEFAULT_URLS["grpc"], model=args.model or "", top_k=args.top_k,
                           concurrency=args.concurrency, timeout=args.timeout, retries=args.retries,
                           shared_memory=args.shared_memory, send=args.send)  # fmt: skip
    todo = sum(str(f) not in output.answered for f in files)
    try:
        with progress_bar(todo, enabled=not args.quiet and sys.stderr.isatty()) as advance:
            def on_result(result: Result) -> None:
                output.write(result)
                advance()

            summary = classify_files(files, options, on_result, skip=output.answered)
    except ServerUnreachable as exc:
        _error(f"{exc} (results so far are in {args.output}; continue with --resume)")
        return EXIT_UNREACHABLE
    except ModelNotReady as exc:
        _error(str(exc))
        return EXIT_MODEL_NOT_READY
    finally:
        output.close()
    print(summary.text(), flush=True)
    return EXIT_SOME_FAILED if summary.failures else EXIT_OK


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
    error = outcome.error
    return error.detail if isinstance(error, ImageReadError) else str(error)


def _error(message: str) -> None:
    sys.stdout.flush()  # keep the order of results and errors on a shared terminal
    print(f"pixelserve-classify: {message}", file=sys.stderr, flush=True)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0: {text!r}")
    return int(text)


Number = TypeVar("Number", int, float)


def _positive(kind: Callable[[str], Number]) -> Callable[[str], Number]:
    def convert(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return convert


if __name__ == "__main__":
    sys.exit(main())
