"""The same repository served twice, with the server's environment as shipped (A) and with a change (B), measured
in turns in one run and printed side by side: throughput, p99, host CPU and page faults per inference.

For server settings that live in the environment (the malloc settings of triton_local/malloc_tuning.py, say):
  python -m pixelserve.perf.env_ab --b PIXELSERVE_MALLOC_TUNING=0 --point noop_files:none:4 \\
      --point image_classifier_encoded:none:2 --rounds 2 --output perf/results/cpu/malloc.md

Each round starts server A, measures every point (model:shared-memory mode:concurrency, as profile_ensemble),
stops it, then does the same with server B; A and B never run at once, so they do not compete for the host.
The servers load the models the points name from model_repository/ and perf/floor_models/ (explicit model
control, no response cache). Each model gets what it takes (profile_ensemble.input_encoding): JPEG files of the
six-size mix or raw frames of it. Each point's profile_ensemble report is kept beside the output.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pixelserve.triton_local import LocalTritonServer
from pixelserve.triton_local.__main__ import mps_choice
from pixelserve.triton_local.access import KEY_ENV
from pixelserve.triton_local.build_manifest import repository_manifest

from . import process_cpu, profile_ensemble

REPO_ROOT = Path(__file__).resolve().parent.parent
REPOSITORIES = (REPO_ROOT / "model_repository", REPO_ROOT / "perf" / "floor_models")
SERVER_ROLES = ("tritonserver", "Python-backend stubs")


def parse_assignment(text: str) -> tuple[str, str]:
    """NAME=VALUE of --b, checked."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_point(text: str) -> tuple[str, str, int]:
    """MODEL:MODE:CONCURRENCY of --point, checked."""
    parts = text.split(":")
    if len(parts) != 3 or parts[1] not in ("none", "system", "cuda") or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"expected MODEL:none|system|cuda:CONCURRENCY, got {text!r}")
    return parts[0], parts[1], int(parts[2])


def measure(side: str, env: dict[str, str], points: list[tuple[str, str, int]], inputs: dict[str, Path],
            interval: int, workdir: Path, mps: bool) -> list[dict]:
    """Start a server with ``env``, profile every point on it, stop it."""
    models = sorted({model for model, _, _ in points})
    server = LocalTritonServer(REPOSITORIES, env=env, mps=mps,
                               extra_args=["--model-control-mode=explicit", *(f"--load-model={m}" for m in models)])
    server.start(timeout=600)
    key_before = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = server.admin_key  # shared-memory points register regions, a restricted API
    try:
        results = []
        for model, mode, concurrency in points:
            args = argparse.Namespace(model=model, interval=interval, grpc=server.grpc_url,
                                      metrics=server.metrics_url.removeprefix("http://").removesuffix("/metrics"))
            csv_path = workdir / f"{side}-{model}-{mode}-c{concurrency}.csv"
            result = profile_ensemble.profile_point(args, inputs[profile_ensemble.input_encoding(model)], mode, concurrency, csv_path)
            (workdir / f"{side}-{model}-{mode}-c{concurrency}.md").write_text(profile_ensemble.render([result]))
            results.append(result)
        return results
    finally:
        server.stop()
        if key_before is None:
            del os.environ[KEY_ENV]
        else:
            os.environ[KEY_ENV] = key_before


def row(result: dict) -> list[str]:
    """Throughput, p99, server CPU us and page faults per inference (tritonserver + stubs), or the failure."""
    if "failed" in result:
        return ["failed", "-", "-", "-"]
    summary, used, inferences = result["summary"], result["process_cpu"], result["inferences"]
    server = [used.get(role, process_cpu.Usage(0.0, 0)) for role in SERVER_ROLES]
    seconds, faults = sum(use.seconds for use in server), sum(use.faults for use in server)
    per = (lambda value: f"{value / inferences:.0f}" if inferences else "n/a")
    return [f"{summary['throughput_infer_s']:.0f}", f"{summary['p99_ms']:.2f}",
            per(seconds * 1e6), per(faults)]


def render(title: str, changes: list[tuple[str, str]], points: list[tuple[str, str, int]],
           rounds: list[tuple[list[dict], list[dict]]]) -> str:
    """Markdown: one line per round and point, A and B side by side."""
    change = " ".join(f"{name}={value}" for name, value in changes)
    lines = [f"## {title}" if title else "## A/B of the server's environment", "",
             f"A: the environment as shipped. B: A with `{change}`. Server CPU and faults: tritonserver and the "
             "Python-backend stubs, over each point's whole perf_analyzer run, per inference.", "",
             "| round | point | A infer/s | B infer/s | A p99 ms | B p99 ms | A server CPU us | B server CPU us "
             "| A server faults | B server faults |", "|---|---|---|---|---|---|---|---|---|---|"]
    for number, (a_results, b_results) in enumerate(rounds, 1):
        for (model, mode, concurrency), a, b in zip(points, a_results, b_results):
            cells = [cell for pair in zip(row(a), row(b)) for cell in pair]
            lines.append(f"| {number} | {model} {mode} c{concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve A and B in turns, measure every point on each, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--b", type=parse_assignment, action="append", required=True,
                        help="NAME=VALUE in B's environment (repeat for several)")
    parser.add_argument("--point", type=parse_point, action="append", required=True,
                        help="MODEL:MODE:CONCURRENCY to measure on both (repeat for several)")
    parser.add_argument("--rounds", type=int, default=2, help="A then B, this many times (default 2)")
    parser.add_argument("--interval", type=int, default=3000, help="perf_analyzer measurement window, ms")
    parser.add_argument("--mps", action=argparse.BooleanOptionalAction, default=None,
                        help="serve both under a CUDA MPS daemon of their own (default: as the build asks, as "
                             "pixelserve-server does)")
    parser.add_argument("--title", default="")
    parser.add_argument("--output", type=Path, required=True, help="the markdown table; reports go beside it")
    args = parser.parse_args(argv)
    mps, why = mps_choice(args.mps, repository_manifest(list(REPOSITORIES)))
    print(f"MPS {'on' if mps else 'off'}: {why}", flush=True)
    a_env = dict(os.environ)
    b_env = {**a_env, **dict(args.b)}
    workdir = args.output.with_suffix("")
    workdir.mkdir(parents=True, exist_ok=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="pixelserve-env-ab-") as tmp:
        inputs = {}
        for encoding in sorted({profile_ensemble.input_encoding(model) for model, _, _ in args.point}):
            inputs[encoding] = Path(tmp) / f"inputs-{encoding}.json"
            profile_ensemble.write_inputs(inputs[encoding], encoding, profile_ensemble.SIX_SIZES)
        for number in range(1, args.rounds + 1):
            pair = []
            for side, env in (("A", a_env), ("B", b_env)):
                results = measure(f"r{number}-{side}", env, args.point, inputs, args.interval, workdir, mps)
                for (model, mode, concurrency), result in zip(args.point, results):
                    shown = row(result)
                    print(f"round {number} {side} {model} {mode} c{concurrency}: {shown[0]} infer/s, p99 {shown[1]} ms, "
                          f"server CPU {shown[2]} us and {shown[3]} faults per inference", flush=True)
                pair.append(results)
            rounds.append((pair[0], pair[1]))
    text = render(args.title, args.b, args.point, rounds)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
