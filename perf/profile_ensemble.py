"""Where a request's time goes: perf_analyzer load on a running server, with Triton's per-model
statistics and the models' own phase timers (pixelserve_phase_seconds_total) read before and after.

Usage (server already running, e.g. started by perf/run_device.sh):
  python -m pixelserve.perf.profile_ensemble --model image_classifier --grpc 127.0.0.1:8001 --metrics 127.0.0.1:8002 \
      --points none:1,system:1,system:32 --sizes 480x640,1080x1920 --output perf/results/h100/profile.md

For every point (shared-memory mode : concurrency) it writes perf_analyzer's CSV beside the output
(<stem>-<mode>-c<N>.csv) and one markdown table: per composing model the executions, mean batch, and
microseconds per request of queue / compute input / compute infer / compute output; per phase of
each model.py the microseconds per execute() call. Set PIXELSERVE_PROFILE_SYNC=1 in the server's
environment to charge queued GPU work to the phase that queued it. Shared-memory points register
regions, a restricted API: perf_analyzer gets the admin key from $PIXELSERVE_ADMIN_KEY (as -H headers).
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from pixelserve.model_runtime.phases import EXECUTE_PHASE

from . import make_inputs, perf_config, perf_csv, process_cpu, run_perf

PHASE_RE = re.compile(r'^pixelserve_phase_(seconds|calls)_total\{model="([^"]+)",phase="([^"]+)"\} (\S+)$', re.M)
GPU_UTIL_RE = re.compile(r'^nv_gpu_utilization\{[^}]*\} (\S+)$', re.M)
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
SIX_SIZES = ("480x640", "720x1280", "1080x1920", "1920x1080", "600x800", "1080x1080")  # the served photo mix


def input_encoding(model: str) -> str:
    """What the model takes: JPEG files (the encoded product, the files floor noop_files) or raw frames (b64 JSON)."""
    return "jpeg" if model.endswith("_encoded") or model == "noop_files" else "b64"


def write_inputs(path: Path, encoding: str, sizes: Sequence[str]) -> None:
    """perf_analyzer input data at ``path``: 12 distinct photos at ``sizes``, as files or raw frames."""
    make_inputs.main(["-o", str(path), "--encoding", encoding, "--count", "12",
                      *[item for size in sizes for item in ("--size", size)]])


def scrape(metrics_url: str) -> str:
    """The text of the Prometheus endpoint."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5) as response:
        return response.read().decode()


def phase_totals(text: str) -> dict[tuple[str, str], list[float]]:
    """{(model, phase): [seconds, calls]} from the metrics text."""
    totals: dict[tuple[str, str], list[float]] = {}
    for kind, model, phase, value in PHASE_RE.findall(text):
        totals.setdefault((model, phase), [0.0, 0.0])[0 if kind == "seconds" else 1] += float(value)
    return totals


def model_stats(grpc_url: str) -> dict[str, dict[str, float]]:
    """Per loaded model: inference and execution counts and summed ns of each stage."""
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(grpc_url).get_inference_statistics(as_json=True)
    result = {}
    for entry in stats.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        row = {"inferences": float(entry.get("inference_count", 0)), "executions": float(entry.get("execution_count", 0))}
        for stage in STAGES:
            row[f"{stage}_ns"] = float(inference.get(stage, {}).get("ns", 0))
            row[f"{stage}_count"] = float(inference.get(stage, {}).get("count", 0))
        result[entry["name"]] = row
    return result


class GpuUtilisationSampler(threading.Thread):
    """Reads nv_gpu_utilization (mean over GPUs) once a second while a measurement runs."""

    def __init__(self, metrics_url: str) -> None:
        super().__init__(daemon=True)
        self.metrics_url, self.samples, self._done = metrics_url, [], threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            values = [float(v) for v in GPU_UTIL_RE.findall(scrape(self.metrics_url))]
            if values:
                self.samples.append(statistics.fmean(values))

    def stop(self) -> float | None:
        """Stop sampling; the median utilisation seen (0-1), None without GPU metrics."""
        self._done.set()
        self.join()
        return statistics.median(self.samples) if self.samples else None


def profile_point(args, input_file: Path, mode: str, concurrency: int, csv_path: Path) -> dict:
    """Run one perf_analyzer measurement and return its summary, stage deltas and phase deltas."""
    config = perf_config.RunConfig(model=args.model, measurement_interval_ms=args.interval)
    before_stats, before_phases = model_stats(args.grpc), phase_totals(scrape(args.metrics))
    sampler = GpuUtilisationSampler(args.metrics)
    sampler.start()
    cpu_before, started = process_cpu.snapshot(), time.monotonic()
    pa_args = run_perf.perf_analyzer_args(config, args.grpc, input_file, mode, str(concurrency), csv_path)
    status, output, shown = run_perf.run_perf_analyzer(pa_args)
    cpu_after, wall = process_cpu.snapshot(), time.monotonic() - started
    host, stolen = process_cpu.host_busy(cpu_before, cpu_after), process_cpu.host_stolen(cpu_before, cpu_after)
    utilisation = sampler.stop()
    after_stats, after_phases = model_stats(args.grpc), phase_totals(scrape(args.metrics))
    if status != 0 or not csv_path.exists():
        tail = " / ".join(line.strip() for line in output.strip().splitlines()[-2:])
        return {"mode": mode, "concurrency": concurrency, "failed": f"perf_analyzer exit {status}: {tail}",
                "command": shown}
    summary = perf_csv.summarize(perf_csv.read_perf_csv(csv_path)[0])
    stages = {}
    for model, after in after_stats.items():
        delta = {k: after[k] - before_stats.get(model, {}).get(k, 0.0) for k in after}
        if delta["executions"] > 0:
            stages[model] = delta
    phases = {}
    for key, (seconds, calls) in after_phases.items():
        s0, c0 = before_phases.get(key, [0.0, 0.0])
        if calls - c0 > 0:
            phases[key] = ((seconds - s0) / (calls - c0) * 1e6, calls - c0)
    return {"mode": mode, "concurrency": concurrency, "summary": summary, "stages": stages, "phases": phases,
            "model": args.model, "gpu_util": utilisation, "cpu_busy": host, "cpu_stolen": stolen, "command": shown,
            "process_cpu": process_cpu.usage_by_role(cpu_before, cpu_after), "wall_s": wall,
            "inferences": stages.get(args.model, {}).get("inferences", 0.0)}


def render(points: list[dict]) -> str:
    """Markdown: one section per point with the end-to-end numbers, the per-model stages and the phases."""
    lines = []
    for p in points:
        if "failed" in p:
            lines += [f"### {p['mode']} shared memory, concurrency {p['concurrency']}", "", p["failed"], "",
                      f"`{p['command']}`", ""]
            continue
        s = p["summary"]
        util = "n/a" if p["gpu_util"] is None else f"{p['gpu_util'] * 100:.0f} %"
        cpu = "n/a" if p.get("cpu_busy") is None else f"{p['cpu_busy'] * 100:.0f} %"
        stolen = "" if p.get("cpu_stolen") is None else f", stolen by the hypervisor {p['cpu_stolen'] * 100:.1f} %"
        lines += [f"### {p['mode']} shared memory, concurrency {p['concurrency']}", "",
                  f"{s['throughput_infer_s']:.0f} images/s, p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
                  f"GPU utilisation (median of 1 s samples) {util}, host CPU busy (all cores, perf_analyzer "
                  f"included) {cpu}{stolen}", "",
                  "| model | executions | mean batch | queue us/req | compute input us/req | compute infer us/req | compute output us/req |",
                  "|---|---|---|---|---|---|---|"]
        for model, d in sorted(p["stages"].items()):
            per = [d[f"{stage}_ns"] / d[f"{stage}_count"] / 1e3 if d[f"{stage}_count"] else 0.0 for stage in STAGES]
            lines.append(f"| {model} | {d['executions']:.0f} | {d['inferences'] / d['executions']:.2f} | "
                         + " | ".join(f"{v:.0f}" for v in per) + " |")
        if p["phases"]:
            lines += ["", "| model.py phase | us per execute() | calls |", "|---|---|---|"]
            for (model, phase), (us, calls) in sorted(p["phases"].items()):
                lines.append(f"| {model}: {phase} | {us:.0f} | {calls:.0f} |")
            lines += ["", "| model | compute infer us/req | execute() us | in its phases | in execute(), between the "
                      "phases | the Python backend around execute() |", "|---|---|---|---|---|---|"]
            for model, d in sorted(p["stages"].items()):
                timed = sum(us for (m, phase), (us, _) in p["phases"].items() if m == model and phase != EXECUTE_PHASE)
                whole = p["phases"].get((model, EXECUTE_PHASE), (None, 0))[0]
                if timed and d["compute_infer_count"]:
                    infer = d["compute_infer_ns"] / d["compute_infer_count"] / 1e3
                    between = "n/a" if whole is None else f"{whole - timed:.0f}"
                    around = infer - (timed if whole is None else whole)
                    lines.append(f"| {model} | {infer:.0f} | {'n/a' if whole is None else f'{whole:.0f}'} | {timed:.0f} "
                                 f"| {between} | {around:.0f} |")
        lines += ["", f"Host CPU by process over perf_analyzer's whole run ({p['wall_s']:.1f} s, "
                  f"{p['inferences']:.0f} inferences of {p['model']}):", "",
                  process_cpu.describe(p["process_cpu"], p["wall_s"], p["inferences"])]
        lines += ["", f"`{p['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: profile each point, print and write the markdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="image_classifier")
    parser.add_argument("--grpc", default="127.0.0.1:8001")
    parser.add_argument("--metrics", default="127.0.0.1:8002")
    parser.add_argument("--points", default="system:1,system:32", help="comma list of mode:concurrency")
    parser.add_argument("--sizes", default=",".join(SIX_SIZES))
    parser.add_argument("--encoding", choices=make_inputs.ENCODINGS,
                        help="input data: b64 (raw pixels, image_classifier) or jpeg (image_classifier_encoded); "
                             "default: what --model takes (jpeg for *_encoded and noop_files)")
    parser.add_argument("--interval", type=int, default=3000, help="perf_analyzer measurement window, ms")
    parser.add_argument("--title", default="")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    points = []
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pixelserve-profile-") as tmp:
        input_file = Path(tmp) / "inputs.json"
        write_inputs(input_file, args.encoding or input_encoding(args.model), args.sizes.split(","))
        for point in args.points.split(","):
            mode, concurrency = point.split(":")
            csv_path = args.output.with_name(f"{args.output.stem}-{mode}-c{concurrency}.csv")
            points.append(profile_point(args, input_file, mode, int(concurrency), csv_path))
            if "failed" in points[-1]:
                print(f"{args.model} {mode} c{concurrency}: {points[-1]['failed']}", flush=True)
                continue
            s = points[-1]["summary"]
            cpu = points[-1]["cpu_busy"]
            print(f"{args.model} {mode} c{concurrency}: {s['throughput_infer_s']:.0f}/s p50 {s['p50_ms']:.2f} "
                  f"p99 {s['p99_ms']:.2f} ms" + ("" if cpu is None else f", CPU {cpu * 100:.0f}%"), flush=True)
    text = render(points)
    args.output.write_text((f"## {args.title}\n\n" if args.title else "") + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
