"""Measure a model of the repository with perf_analyzer on real photos; print and save the results.

Usage:
  python -m pixelserve.perf.run_perf --config cpu_smoke                 # a named run from perf/configs/
  python -m pixelserve.perf.run_perf --config h100_preprocess --url 127.0.0.1:8001   # against a running server
  python -m pixelserve.perf.run_perf --model preprocess --sizes 480x640 --concurrency 1,4 --shared-memory none,system
  python -m pixelserve.perf.run_perf --config h100_preprocess --peers preprocess_torch,preprocess_opencv --url 127.0.0.1:8001

Without --url it starts tritonserver 2.51 (triton_local) on model_repository/ plus any --repository,
without the response cache. It runs perf_analyzer once per (model, shared-memory mode, concurrency entry)
for the model and each of its --peers (same inputs and settings), prints throughput and latency per
concurrency, and writes <results-dir>/<name>-<timestamp>.{md,csv,png,log} (the summary; the PNG plots
throughput against concurrency and p50/p90/p99 latency against throughput, every model in one figure) beside
perf_analyzer's own CSV of each measurement, <results-dir>/<name>-<timestamp>.<model>-<shm>-c<concurrency>.csv.

Every measurement reads the measured model's response-cache hits (Triton's statistics) before and after:
hits are written as the cache_hits column and printed as a WARNING on stderr, since with --url the server may
answer perf_analyzer's repeated inputs from its cache.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from pixelserve.triton_local import access

from . import machine_info, make_inputs, perf_config, perf_csv, plots

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "perf" / "results"
TABLE_COLUMNS = ["model", "shared_memory", "concurrency", "throughput_infer_s", "p50_ms", "p99_ms", "avg_ms",
                 "server_compute_ms", "cache_hits"]  # fmt: skip


def perf_analyzer_args(config: perf_config.RunConfig, url: str, input_file: Path, shared_memory: str,
                       concurrency: str, csv_path: Path, admin_key: str | None = None,
                       model: str | None = None) -> list[str]:  # fmt: skip
    """perf_analyzer arguments for one (shared-memory mode, concurrency range) measurement of ``model``
    (default: the config's).

    Registering shared memory is a restricted API (triton_local/access.py): with shared memory the
    arguments carry the admin key, ``admin_key`` or else ``$PIXELSERVE_ADMIN_KEY``, as ``-H`` headers.
    """
    headers = access.perf_analyzer_header_args(admin_key) if shared_memory != "none" else []
    return [
        "-m", model or config.model,
        "-u", url,
        "-i", config.protocol,
        "-b", str(config.batch_size),
        "--input-data", str(input_file),
        "--concurrency-range", concurrency,
        "--shared-memory", shared_memory,
        "--measurement-interval", str(config.measurement_interval_ms),
        "--stability-percentage", f"{config.stability_percentage:g}",
        "--max-trials", str(config.max_trials),
        "-f", str(csv_path),
        "--verbose-csv",
        *headers,
        *config.perf_args,
    ]  # fmt: skip


def make_inputs_args(config: perf_config.RunConfig, output: Path) -> list[str]:
    """make_inputs.py arguments that write this run's input data to ``output``."""
    args = ["-o", str(output), "--photos", ",".join(config.inputs.photos), "--encoding", config.inputs.encoding]
    args += [item for size in config.inputs.sizes for item in ("--size", size)]
    args += ["--input-name", config.input_name]
    if config.inputs.count:
        args += ["--count", str(config.inputs.count)]
    return args


def has_cuda_gpu() -> bool:
    """Whether CUDA shared memory can work here (nvidia-smi lists a GPU)."""
    return bool(machine_info.gpu_names())


def server_version(url: str, protocol: str) -> str:
    """The version string the server reports in its metadata."""
    if protocol == "grpc":
        import tritonclient.grpc as client_module

        return client_module.InferenceServerClient(url).get_server_metadata().version
    import tritonclient.http as client_module

    return client_module.InferenceServerClient(url).get_server_metadata()["version"]


def _client(url: str, protocol: str):
    """A tritonclient client of ``protocol`` for the server at ``url``."""
    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    return client_module.InferenceServerClient(url)


def cache_counters(url: str, protocol: str, model: str) -> tuple[int, int] | None:
    """(requests answered, of which from Triton's response cache) so far by ``model`` and, for an ensemble, its
    steps; None when the server does not tell (statistics or config unavailable)."""
    as_json = {"as_json": True} if protocol == "grpc" else {}
    try:
        with contextlib.closing(_client(url, protocol)) as client:
            return _cache_counters(client, model, as_json)
    except Exception:  # noqa: BLE001 - any client or server error means "unknown", reported by the caller
        return None


def _cache_counters(client, model: str, as_json: dict) -> tuple[int, int]:
    """cache_counters through ``client``."""
    try:
        config = client.get_model_config(model, **as_json)
        config = config.get("config", config)  # gRPC's JSON wraps the config
        steps = [step["model_name"] for step in config.get("ensemble_scheduling", {}).get("step", [])]
    except Exception:  # noqa: BLE001 - a server may restrict the config API: the model's own counters still tell
        steps = []
    answered = hits = 0
    for name in [model, *steps]:
        stats = client.get_inference_statistics(name, **as_json)
        for version in stats.get("model_stats", []):
            inference = version["inference_stats"]
            hits += int(inference.get("cache_hit", {}).get("count", 0))  # JSON leaves zero counts out
            answered += int(inference.get("success", {}).get("count", 0)) if name == model else 0
    return answered, hits


def cache_warning(model: str, where: str, before: tuple[int, int], after: tuple[int, int]) -> str | None:
    """The warning for response-cache hits between two cache_counters readings; None without hits."""
    answered, hits = after[0] - before[0], after[1] - before[1]
    if hits <= 0:
        return None
    return (f"{model} ({where}): {hits} of {answered} requests were answered from Triton's response cache: "
            "these numbers time cache lookups, not inference. Measure a server without the response cache "
            "(no --cache-config; pixelserve-server --no-response-cache).")  # fmt: skip


def run_perf_analyzer(args: list[str]) -> tuple[int, str, str]:
    """Run perf_analyzer with ``args``; return (exit status, combined output, the command as a shell line)."""
    from pixelserve.triton_local import perf_analyzer_command

    argv, env = perf_analyzer_command(args)
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shown = shlex.join(["perf_analyzer", *access.redact_headers(argv[1:])])
    return result.returncode, result.stdout, shown


def perf_analyzer_csv(stem: Path, model: str, shared_memory: str, concurrency: str) -> Path:
    """Where perf_analyzer's own CSV (``-f``) of one measurement is kept, beside the run's summary ``stem``."""
    return stem.parent / f"{stem.name}.{model}-{shared_memory}-c{concurrency.replace(':', '-')}.csv"


def measure(config: perf_config.RunConfig, url: str, input_file: Path, stem: Path, log,
            admin_key: str | None = None) -> tuple[list[dict], list[str], list[str], int]:  # fmt: skip
    """Run every measurement of ``config`` (its model and peers), keeping perf_analyzer's CSVs beside ``stem``;
    return (summary rows, commands run, notes on skips/failures/cache hits, failures)."""
    failures = 0
    rows: list[dict] = []
    commands: list[str] = []
    notes: list[str] = []
    shared_memory_modes = list(config.shared_memory)
    if "cuda" in shared_memory_modes and not has_cuda_gpu():
        shared_memory_modes.remove("cuda")
        notes.append("shared_memory cuda skipped: no CUDA GPU on this machine")
        print("skipping --shared-memory cuda: no CUDA GPU here", flush=True)
    for model in config.models():
        for shared_memory in shared_memory_modes:
            for concurrency in config.concurrency_ranges():
                where = f"shared memory {shared_memory}, concurrency {concurrency}"
                csv_path = perf_analyzer_csv(stem, model, shared_memory, concurrency)
                args = perf_analyzer_args(config, url, input_file, shared_memory, concurrency, csv_path, admin_key, model)
                print(f"perf_analyzer: {model}, {where}", flush=True)
                before = cache_counters(url, config.protocol, model)
                status, output, shown = run_perf_analyzer(args)
                after = cache_counters(url, config.protocol, model)
                commands.append(shown)
                log.write(f"$ {shown}\n{output}\n(exit status {status})\n\n")
                log.flush()
                hits = after[1] - before[1] if before and after else None
                warning = cache_warning(model, where, before, after) if before and after else None
                if warning:
                    notes.append(f"WARNING: {warning}")
                    print(f"WARNING: {warning}", file=sys.stderr, flush=True)
                elif hits is None:
                    notes.append(f"{model} ({where}): the server's statistics were unreadable, cache hits unknown")
                if status != 0 or not csv_path.exists():
                    failures += 1
                    tail = "\n".join(output.strip().splitlines()[-5:])
                    notes.append(f"{model}, {where}: perf_analyzer exit {status}: {tail}")
                    print(f"perf_analyzer failed (exit {status}):\n{tail}", file=sys.stderr, flush=True)
                    continue
                for row in perf_csv.read_perf_csv(csv_path):
                    rows.append({"model": model, "protocol": config.protocol, "shared_memory": shared_memory,
                                 **perf_csv.summarize(row), "cache_hits": hits})  # fmt: skip
    return rows, commands, notes, failures


def write_results(stem: Path, config: perf_config.RunConfig, rows: list[dict], facts: dict[str, str],
                  commands: list[str], notes: list[str]) -> tuple[Path, Path, Path | None]:  # fmt: skip
    """Write ``stem``.csv (all summary rows), ``stem``.png (plots.py; with rows) and ``stem``.md (settings,
    machine, exact commands, table, plot)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_suffix(".csv")
    fields = ["model", "protocol", "shared_memory"] + [name for name, _, _ in perf_csv.SUMMARY_COLUMNS] + ["cache_hits"]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# perf: {config.name}", ""]
    if config.description:
        lines += [config.description.strip(), ""]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "## Results (latency in ms, throughput in inferences/s)", "", perf_csv.markdown_table(rows, TABLE_COLUMNS), ""]
    plot_path = plots.write_plot([csv_path], stem.with_suffix(".png"), f"{config.name}: {', '.join(config.models())}") if rows else None
    if plot_path:
        lines += [f"![throughput against concurrency, latency against throughput]({plot_path.name})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["## Commands", "", "```"] + commands + ["```", ""]
    md_path = stem.with_suffix(".md")
    md_path.write_text("\n".join(lines))
    return md_path, csv_path, plot_path


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def apply_overrides(config: perf_config.RunConfig, args: argparse.Namespace) -> perf_config.RunConfig:
    """Command-line values replace the config's; the result is validated again."""
    if args.model:
        config.model = args.model
    if args.peers is not None:
        config.peers = _split(args.peers)
    if args.protocol:
        config.protocol = args.protocol
    if args.concurrency:
        config.concurrency = args.concurrency if ":" in args.concurrency else [int(c) for c in _split(args.concurrency)]
    if args.shared_memory:
        config.shared_memory = _split(args.shared_memory)
    if args.measurement_interval:
        config.measurement_interval_ms = args.measurement_interval
    if args.sizes:
        config.inputs.sizes = _split(args.sizes)
    if args.encoding:
        config.inputs.encoding = args.encoding
    if args.repository:  # paths on the command line are relative to the current directory
        config.extra_repositories = config.extra_repositories + [str(Path(r).resolve()) for r in args.repository]
    return config.validate()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"named config ({', '.join(perf_config.named_configs())}) or a YAML path")
    parser.add_argument("--model")
    parser.add_argument("--peers", help="comma list of other models to measure in the same run, on the same inputs")
    parser.add_argument("--protocol", choices=perf_config.PROTOCOLS)
    parser.add_argument("--concurrency", help="comma list (one run each, e.g. 1,8,16) or one range start:end[:step]")
    parser.add_argument("--shared-memory", help="comma list of none,system,cuda")
    parser.add_argument("--measurement-interval", type=int, help="ms per measurement window")
    parser.add_argument("--sizes", help="comma list of HxW input sizes, e.g. 1080x1920,480x640")
    parser.add_argument("--encoding", choices=make_inputs.ENCODINGS)
    parser.add_argument("--repository", action="append", help="extra model repository to serve (repeatable)")
    parser.add_argument("--url", help="measure an already running server at host:port (of --protocol) instead")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-save", action="store_true", help="print only, write no result files")
    parser.add_argument("--dry-run", action="store_true", help="print the perf_analyzer commands and exit")
    return parser.parse_args(argv)


@contextlib.contextmanager
def serving(config: perf_config.RunConfig, url: str | None):
    """Yield (URL to measure, admin key): ``url`` as given (key from $PIXELSERVE_ADMIN_KEY), or a local server started for the run."""
    if url:
        yield url, None
        return
    from pixelserve.triton_local import LocalTritonServer

    # Relative paths in a config file are relative to the repository root.
    repositories = [REPO_ROOT / "model_repository"] + [REPO_ROOT / r for r in config.extra_repositories]
    print(f"starting tritonserver on {', '.join(map(str, repositories))} ...", flush=True)
    # No response cache: perf_analyzer repeats a few inputs, and the run measures compute, not cache lookups.
    with LocalTritonServer(repositories, extra_args=config.server_args, response_cache=False) as server:
        print(f"server ready (log: {server.log_path})", flush=True)
        yield (server.grpc_url if config.protocol == "grpc" else server.http_url), server.admin_key


def _cache_fact(rows: list[dict]) -> str:
    """The results' line on response-cache hits during the measurements."""
    hits = [row["cache_hits"] for row in rows if row.get("cache_hits") is not None]
    if len(hits) < len(rows):
        return "unknown for some measurements (statistics unreadable)"
    hit = sorted({row["model"] for row in rows if row["cache_hits"]})
    return f"YES on {', '.join(hit)}: see the warnings, those numbers are cache lookups" if hit else "none"


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns 0 when every measurement succeeded."""
    args = parse_args(argv)
    config = perf_config.load_config(args.config) if args.config else perf_config.RunConfig()
    config = apply_overrides(config, args)
    with tempfile.TemporaryDirectory(prefix="pixelserve-perf-") as tmp:
        workdir = Path(tmp)
        input_file = workdir / "inputs.json"
        inputs_args = make_inputs_args(config, input_file)
        if args.dry_run:
            print(shlex.join(["python", "-m", "pixelserve.perf.make_inputs", *make_inputs_args(config, Path("inputs.json"))]))
            for model in config.models():
                for mode in config.shared_memory:
                    for conc in config.concurrency_ranges():
                        pa_args = perf_analyzer_args(config, args.url or "SERVER", Path("inputs.json"), mode, conc,
                                                     Path("out.csv"), model=model)  # fmt: skip
                        print(shlex.join(["perf_analyzer", *pa_args]))
            return 0
        make_inputs.main(inputs_args)
        started = dt.datetime.now().astimezone()
        stem = (args.results_dir if not args.no_save else workdir) / f"{config.name}-{started:%Y%m%d-%H%M%S}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        with serving(config, args.url) as (url, admin_key), open(stem.with_suffix(".log"), "w") as log:
            version = server_version(url, config.protocol)
            rows, commands, notes, failures = measure(config, url, input_file, stem, log, admin_key)
        facts = {
            "date": started.isoformat(timespec="seconds"),
            "run": shlex.join(["python", "-m", "pixelserve.perf.run_perf", *(sys.argv[1:] if argv is None else argv)]),
            **machine_info.describe(),
            "server": f"tritonserver {version} at {url}" + (" (started by run_perf, triton_local)" if not args.url else ""),
            "model": config.model + (f" (peers: {', '.join(config.peers)})" if config.peers else ""),
            "response cache hits": _cache_fact(rows),
            "protocol": config.protocol,
            "batch size": str(config.batch_size),
            "inputs": shlex.join(["python", "-m", "pixelserve.perf.make_inputs", *inputs_args]).replace(str(input_file), "inputs.json"),
            "window": f"{config.measurement_interval_ms} ms, stability {config.stability_percentage:g} %, max trials {config.max_trials}",
        }
        commands = [c.replace(str(input_file), "inputs.json").replace(str(stem.parent) + "/", "") for c in commands]
        print()
        print(perf_csv.markdown_table(rows, TABLE_COLUMNS))
        for note in notes:
            print(f"note: {note}")
        if not args.no_save:
            md_path, csv_path, plot_path = write_results(stem, config, rows, facts, commands, notes)
            print(f"\nwrote {md_path.relative_to(REPO_ROOT) if md_path.is_relative_to(REPO_ROOT) else md_path}, "
                  f"{csv_path.name}, {plot_path.name + ', ' if plot_path else ''}{stem.with_suffix('.log').name}")  # fmt: skip
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
