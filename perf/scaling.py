"""Multi-GPU scaling of one Triton server: throughput with 1..N GPUs visible, and efficiency against one GPU.

Usage:
  python -m pixelserve.perf.scaling --max-gpus 8                        # GPU counts 1,2,4,8
  python -m pixelserve.perf.scaling --max-gpus 8 --dry-run              # the plan and generated configs, nothing started
  python -m pixelserve.perf.scaling --max-gpus 4 --counts 1,2,3,4 --concurrency-per-gpu 32,64 --model image_classifier

For each GPU count n: build/place_instances.py places the instances on GPUs 0..n-1 in a copy of the
repository; tritonserver starts on it with CUDA_VISIBLE_DEVICES set to the first n visible GPUs, loading
only --model; perf_analyzer (run_perf.py's machinery) drives it over gRPC with CUDA shared memory and real
1080p photos at concurrency n x --concurrency-per-gpu (several levels: the best is kept). Writes
perf/results/scaling-<timestamp>.{md,csv,png,log} with throughput, throughput per GPU and scaling efficiency
throughput_n / (n x throughput_1) per GPU count, plus the exact commands, and scaling-<timestamp>.levels.{csv,png}
with every level measured (throughput against concurrency, p50/p90/p99 latency against throughput per GPU count).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from pixelserve.build import build_classifier, build_repository, model_config, place_instances
from pixelserve.triton_local.build_manifest import MANIFEST_NAME, read_manifest

from . import machine_info, make_inputs, perf_config, perf_csv, run_perf, scaling_report

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parent

FRAME_SIZE = "1080x1920"
# perf_analyzer is a single client: its CUDA shared-memory regions sit on one GPU, and the Python backend
# hands a GPU input to the model on the device it arrived on, so instances on other GPUs read across the link.
TRANSPORT_NOTE = (
    "inputs travel in CUDA shared memory that the one perf_analyzer process allocates on one GPU; instances "
    "on the other GPUs read them across NVLink/PCIe, so the efficiency includes that traffic"
)


@dataclass
class Step:
    """Everything one GPU count needs: its devices, placed repository, server arguments and perf config."""

    gpus: int
    devices: str
    repository: Path
    placements: dict[str, dict[int, int]]
    messages: list[str]
    config: perf_config.RunConfig


def default_counts(max_gpus: int) -> list[int]:
    """1, 2, 4, ... up to ``max_gpus``, plus ``max_gpus`` itself."""
    counts = [1]
    while counts[-1] * 2 <= max_gpus:
        counts.append(counts[-1] * 2)
    return counts if counts[-1] == max_gpus else counts + [max_gpus]


def parse_int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4] (argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def nvidia_smi_gpus() -> list[str]:
    """The lines ``nvidia-smi -L`` prints, one per GPU; empty without a working NVIDIA driver."""
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.startswith("GPU ")]


def visible_devices(listed: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Device ids this process may use: CUDA_VISIBLE_DEVICES's entries when set, else 0..len(listed)-1."""
    setting = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if setting is None:
        return [str(index) for index in range(len(listed))]
    devices = []
    for entry in (part.strip() for part in setting.split(",")):
        if not entry or entry.startswith("-"):
            break  # CUDA ignores everything from the first invalid entry on
        devices.append(entry)
    return devices


def check_counts(counts: list[int], max_gpus: int) -> None:
    """Raise ValueError unless 1 <= counts <= max_gpus, distinct, including 1 (the efficiency baseline)."""
    if max_gpus < 1:
        raise ValueError(f"--max-gpus must be >= 1, got {max_gpus}")
    if len(set(counts)) != len(counts):
        raise ValueError(f"--counts has duplicates: {counts}")
    beyond = [n for n in counts if not 1 <= n <= max_gpus]
    if beyond:
        raise ValueError(f"--counts {beyond} outside 1..{max_gpus} (--max-gpus)")
    if 1 not in counts:
        raise ValueError("--counts must include 1: efficiency is measured against one GPU")


def refuse_beyond_visible(max_gpus: int, listed: list[str], devices: list[str]) -> None:
    """Raise ValueError when more GPUs are asked for than this machine shows."""
    if max_gpus <= len(devices):
        return
    message = f"--max-gpus {max_gpus} asks for more GPUs than visible: `nvidia-smi -L` lists {len(listed)} GPU(s)"
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        message += f", CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} leaves {len(devices)}"
    raise ValueError(message + " (--dry-run shows the plan without GPUs)")


def server_args(model: str, gpus: int, pool_mb: int) -> list[str]:
    """tritonserver arguments: load only ``model`` (and what it composes), a CUDA memory pool on each GPU."""
    pools = [f"--cuda-memory-pool-byte-size={gpu}:{pool_mb << 20}" for gpu in range(gpus)]
    return ["--model-control-mode=explicit", f"--load-model={model}", *pools]


def run_config(args: argparse.Namespace, gpus: int) -> perf_config.RunConfig:
    """The run_perf configuration measuring ``gpus`` GPUs: CUDA shm, 1080p photos, n x per-GPU concurrency."""
    return perf_config.RunConfig(
        name=f"scaling-{gpus}gpu",
        model=args.model,
        protocol="grpc",
        concurrency=[level * gpus for level in args.concurrency_per_gpu],
        shared_memory=["cuda"],
        measurement_interval_ms=args.measurement_interval,
        inputs=perf_config.Inputs(sizes=[FRAME_SIZE], encoding="b64"),
        server_args=server_args(args.model, gpus, args.cuda_pool_mb),
    ).validate()


def prepare_step(args: argparse.Namespace, gpus: int, devices: list[str], workdir: Path, per_gpu: dict[str, int]) -> Step:
    """The repository for GPUs 0..gpus-1 in ``workdir``, validated (PlacementError if invalid): a GPU build of
    pixelserve-build placed again for that count (``--per-gpu`` overriding its instances), as a user's host with
    that many GPUs serves it; a repository without a GPU build has its config.pbtxt files placed."""
    repository = workdir / f"repository-{gpus}gpu"
    manifest = read_manifest(args.repository)
    if manifest is not None and manifest.config_name is not None:
        place_instances.copy_repository(args.repository, repository)
        shutil.copy2(Path(args.repository) / MANIFEST_NAME, repository / MANIFEST_NAME)
        try:
            placed = build_repository.replace_for_gpus(repository, gpus, args.per_gpu)
        except build_classifier.BuildError as exc:
            raise place_instances.PlacementError(str(exc)) from None
        messages = [f"{model}: {placement[0]} instance(s) on each of {gpus} GPU(s)" for model, placement in placed.instances.items()]
        return Step(gpus, ",".join(devices[:gpus]), repository, placed.instances, messages, run_config(args, gpus))
    results = place_instances.place_repository(args.repository, list(range(gpus)), per_gpu, output=repository)
    placements = place_instances.validate_placement(repository, gpus, per_gpu)
    messages = [f"{r.model}: {r.message}" for r in results]
    return Step(gpus, ",".join(devices[:gpus]), repository, placements, messages, run_config(args, gpus))


def served_config(step: Step, model: str) -> Path:
    """The config Triton loads for ``model`` in the step's repository: the build's per-host one where it has one."""
    manifest = read_manifest(step.repository)
    if manifest is not None and manifest.config_name is not None:
        per_host = step.repository / model / "configs" / f"{manifest.config_name}.pbtxt"
        if per_host.is_file():
            return per_host
    return step.repository / model / place_instances.CONFIG_NAME


def instance_group_text(step: Step, model: str) -> str:
    """The instance_group entries of ``model``'s generated config.pbtxt, in config text."""
    config = model_config.read_config(served_config(step, model))
    groups = type(config)()
    groups.instance_group.extend(config.instance_group)
    return model_config.config_text(groups, []).rstrip("\n")


def placement_command(step: Step) -> str:
    """The command that places the step's repository: pixelserve-build --place-only for a GPU build, else
    place_instances on the config.pbtxt files."""
    name = step.repository.name
    manifest = read_manifest(step.repository)
    if manifest is not None and manifest.config_name is not None:
        return shlex.join(["pixelserve-build", "--place-only", "--gpus", str(step.gpus), "--repository", name])
    gpus = ",".join(map(str, range(step.gpus)))
    return shlex.join(["python", "-m", "pixelserve.build.place_instances", "--gpus", gpus, "--output", name])


def step_commands(step: Step, input_file: Path) -> list[str]:
    """The placement, server and perf_analyzer command lines of one step (paths shown relative)."""
    name = step.repository.name
    lines = [
        placement_command(step),
        f"CUDA_VISIBLE_DEVICES={step.devices} "
        + shlex.join(["tritonserver", f"--model-repository={name}", *step.config.server_args]),
    ]
    for level in step.config.concurrency_ranges():
        args = run_perf.perf_analyzer_args(step.config, "SERVER", input_file, "cuda", level, Path(f"{step.gpus}gpu.csv"))
        lines.append(shlex.join(["perf_analyzer", *args]))
    return lines


def print_plan(steps: list[Step], inputs_command: str) -> None:
    """Print what a run would do for every GPU count, with the generated instance groups."""
    print(f"inputs: {inputs_command}")
    for step in steps:
        levels = ", ".join(step.config.concurrency_ranges())
        print(f"\n== {step.gpus} GPU(s): CUDA_VISIBLE_DEVICES={step.devices}, concurrency {levels}")
        for message in step.messages:
            print(f"  {message}")
        print("  validated: " + (place_instances.describe(step.placements).replace("\n", "; ") or "no GPU models"))
        for command in step_commands(step, Path("inputs.json")):
            print(f"  $ {command}")
        for model in step.placements:
            print(f"  {model}/config.pbtxt:")
            print("    " + instance_group_text(step, model).replace("\n", "\n    "))


def loaded_placement(url: str, models: list[str]) -> str:
    """Instance groups as the running server reports them: ``preprocess: KIND_GPU 0 x4, KIND_GPU 1 x4``."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    parts = []
    for model in models:
        try:
            groups = client.get_model_config(model, as_json=True)["config"].get("instance_group", [])
        except Exception:  # noqa: BLE001 - a model this run did not load has no config to report
            continue
        cells = [f"{g.get('kind', '?')} {','.join(map(str, g.get('gpus', []))) or '-'} x{g.get('count', '?')}" for g in groups]
        parts.append(f"{model}: " + ", ".join(cells))
    return "; ".join(parts)


def measure_step(step: Step, input_file: Path, workdir: Path, log, start_timeout: float):
    """Serve ``step`` and measure it; return (best ScalingPoint or None, commands, notes, server version, every
    level's summary row with ``gpus``)."""
    from pixelserve.triton_local import LocalTritonServer

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": step.devices}
    server = LocalTritonServer([step.repository], extra_args=step.config.server_args, env=env, response_cache=False,
                               log_path=workdir / f"server-{step.gpus}gpu.log")  # fmt: skip
    print(f"\n== {step.gpus} GPU(s): starting tritonserver (CUDA_VISIBLE_DEVICES={step.devices}) ...", flush=True)
    try:
        server.start(timeout=start_timeout)
    except (RuntimeError, TimeoutError) as exc:
        log.write(f"== {step.gpus} GPU(s): server failed\n{exc}\n\n")
        return None, [], [f"{step.gpus} GPU(s): tritonserver did not become ready: {str(exc).splitlines()[0]}"], "", []
    try:
        version = run_perf.server_version(server.grpc_url, "grpc")
        placement = loaded_placement(server.grpc_url, list(step.placements) or [step.config.model])
        measure_dir = workdir / f"{step.gpus}gpu"
        measure_dir.mkdir(exist_ok=True)
        log.write(f"== {step.gpus} GPU(s), CUDA_VISIBLE_DEVICES={step.devices}, loaded: {placement}\n")
        rows, commands, notes, _ = run_perf.measure(step.config, server.grpc_url, input_file, measure_dir, log,
                                                     server.admin_key)
    finally:
        server.stop()
    notes = [f"{step.gpus} GPU(s): {note}" for note in notes]
    if not rows:
        log.write(f"server log tail:\n{server.log_tail(80)}\n\n")
        return None, commands, notes + [f"{step.gpus} GPU(s): no measurement"], version, []
    best = max(rows, key=lambda row: row.get("throughput_infer_s", 0.0))
    point = scaling_report.ScalingPoint(
        gpus=step.gpus, throughput=best["throughput_infer_s"], concurrency=int(best["concurrency"]),
        p50_ms=best.get("p50_ms"), p99_ms=best.get("p99_ms"), cuda_visible_devices=step.devices, placement=placement,
    )  # fmt: skip
    print(f"{step.gpus} GPU(s): {point.throughput:.1f} inferences/s at concurrency {point.concurrency}", flush=True)
    return point, commands, notes, version, [{"gpus": step.gpus, **row} for row in rows]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-gpus", type=int, required=True, help="the most GPUs to use (must be visible)")
    parser.add_argument("--counts", type=parse_int_list, help="GPU counts to measure (default 1,2,4,.. up to --max-gpus)")
    parser.add_argument("--concurrency-per-gpu", type=parse_int_list, default=[32],
                        help="requests in flight per GPU; a comma list measures each and keeps the best (default 32)")  # fmt: skip
    parser.add_argument("--model", default="preprocess",
                        help="model to load and measure (image_classifier where a TensorRT classifier is built)")  # fmt: skip
    parser.add_argument("--measurement-interval", type=int, default=5000, help="ms per perf_analyzer window")
    parser.add_argument("--per-gpu", type=place_instances.parse_per_gpu, default={},
                        help="model=count,... instances per GPU (default: build/placement.yaml)")  # fmt: skip
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--cuda-pool-mb", type=int, default=1024, help="CUDA memory pool per GPU (MiB)")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds for the server and its instances")
    parser.add_argument("--results-dir", type=Path, default=run_perf.RESULTS_DIR)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and generated configs, start nothing")
    return parser.parse_args(argv)


def inputs_plan(config: perf_config.RunConfig, workdir: Path) -> tuple[Path, list[str], str]:
    """(input file, make_inputs.py arguments, the command as shown) for the photos every step sends."""
    input_file = workdir / "inputs.json"
    inputs_args = run_perf.make_inputs_args(config, input_file)
    shown = shlex.join(["python", "-m", "pixelserve.perf.make_inputs", *inputs_args]).replace(str(input_file), "inputs.json")
    return input_file, inputs_args, shown


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 when every GPU count was measured (or planned, with --dry-run); 2 on a refused request."""
    args = parse_args(argv)
    counts = sorted(args.counts or default_counts(args.max_gpus))
    listed = nvidia_smi_gpus()
    devices = visible_devices(listed)
    try:
        check_counts(counts, args.max_gpus)
        if not args.concurrency_per_gpu or min(args.concurrency_per_gpu) < 1:
            raise ValueError(f"--concurrency-per-gpu must be >= 1, got {args.concurrency_per_gpu}")
        if not args.dry_run:
            refuse_beyond_visible(args.max_gpus, listed, devices)
        per_gpu = {**place_instances.load_per_gpu(), **args.per_gpu}
    except (ValueError, place_instances.PlacementError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(devices) < args.max_gpus:  # a dry run on a smaller machine: show the ids a full one would use
        print(f"(this machine shows {len(devices)} GPU(s); the plan is for one with {args.max_gpus})")
        devices = [str(index) for index in range(args.max_gpus)]
    with tempfile.TemporaryDirectory(prefix="pixelserve-scaling-") as tmp:
        workdir = Path(tmp)
        try:
            steps = [prepare_step(args, n, devices, workdir, per_gpu) for n in counts]
        except place_instances.PlacementError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.dry_run:
            print_plan(steps, inputs_plan(steps[0].config, workdir)[2])
            return 0
        facts = {
            "run": shlex.join(["python", "-m", "pixelserve.perf.scaling", *(sys.argv[1:] if argv is None else argv)]),
            **machine_info.describe(),
            "nvidia-smi -L": f"{len(listed)} GPU(s)",
            "model": args.model,
            "transport": "gRPC, CUDA shared memory, batch 1",
            "instances per GPU": ", ".join(f"{model} {count}" for model, count in per_gpu.items()),
            "concurrency": f"{', '.join(map(str, args.concurrency_per_gpu))} per GPU (the best level is kept)",
            "window": f"{args.measurement_interval} ms, stability {steps[0].config.stability_percentage:g} %, "
                      f"max trials {steps[0].config.max_trials}",
        }  # fmt: skip
        return run_steps(steps, workdir, facts, args)


def run_steps(steps: list[Step], workdir: Path, facts: dict[str, str], args: argparse.Namespace) -> int:
    """Measure every step, write perf/results/scaling-<timestamp>.*; 0 when every GPU count gave a number."""
    input_file, inputs_args, inputs_command = inputs_plan(steps[0].config, workdir)
    make_inputs.main(inputs_args)
    started = dt.datetime.now().astimezone()
    stem = args.results_dir / f"scaling-{started:%Y%m%d-%H%M%S}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    points, commands, notes, versions, levels = [], [inputs_command], [TRANSPORT_NOTE], set(), []
    with open(stem.with_suffix(".log"), "w") as log:
        for step in steps:
            point, step_cmds, step_notes, version, rows = measure_step(step, input_file, workdir, log, args.start_timeout)
            points += [point] if point else []
            levels += rows
            notes += step_notes
            versions.add(version)
            shown = step_commands(step, input_file)[:2] + step_cmds
            commands += [c.replace(str(input_file), "inputs.json").replace(str(workdir) + "/", "") for c in shown]
    servers = ", ".join(f"tritonserver {version}" for version in sorted(versions) if version) or "tritonserver"
    facts = {"date": started.isoformat(timespec="seconds"), **facts, "inputs": inputs_command,
             "server": f"{servers} (triton_local), a fresh server per GPU count"}  # fmt: skip
    paths = scaling_report.write_results(stem, points, facts, commands, notes, title=f"scaling: {args.model}", levels=levels)
    print("\n" + perf_csv.markdown_table(scaling_report.table_rows(points), scaling_report.COLUMNS))
    for note in notes:
        print(f"note: {note}")
    shown_paths = [p.relative_to(REPO_ROOT) if p.is_relative_to(REPO_ROOT) else p for p in paths + [stem.with_suffix(".log")]]
    print("wrote " + ", ".join(map(str, shown_paths)))
    return 0 if len(points) == len(steps) else 1


if __name__ == "__main__":
    sys.exit(main())
