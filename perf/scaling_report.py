"""Scaling results: throughput per GPU count, efficiency against one GPU, and the md/csv/plot files; beside them
every concurrency level measured per GPU count (``.levels.csv``/``.levels.png``, plots.py)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import perf_csv, plots, scaling_plot

# Every level measured: the GPU count, then run_perf's summary columns.
LEVEL_COLUMNS = ["gpus", "model", "protocol", "shared_memory"] + [name for name, _, _ in perf_csv.SUMMARY_COLUMNS] + ["cache_hits"]
COLUMNS = ["gpus", "cuda_visible_devices", "concurrency", "throughput_infer_s", "per_gpu_infer_s", "ideal_infer_s",
           "efficiency", "p50_ms", "p99_ms", "placement"]  # fmt: skip


@dataclass
class ScalingPoint:
    """The measurement kept for one GPU count (the best of its concurrency levels)."""

    gpus: int
    throughput: float
    concurrency: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    cuda_visible_devices: str = ""
    placement: str = ""


def efficiencies(points: Sequence[ScalingPoint]) -> dict[int, float]:
    """Scaling efficiency per GPU count: throughput_n / (n * throughput_1); empty without a 1-GPU point."""
    single = [p.throughput for p in points if p.gpus == 1]
    if not single or single[0] <= 0:
        return {}
    return {p.gpus: p.throughput / (p.gpus * single[0]) for p in points}


def table_rows(points: Sequence[ScalingPoint]) -> list[dict[str, object]]:
    """One dict per GPU count with every column of COLUMNS (efficiency None without a 1-GPU baseline)."""
    efficiency = efficiencies(points)
    single = next((p.throughput for p in points if p.gpus == 1), None)
    rows = []
    for point in sorted(points, key=lambda p: p.gpus):
        rows.append({
            "gpus": point.gpus,
            "cuda_visible_devices": point.cuda_visible_devices,
            "concurrency": point.concurrency,
            "throughput_infer_s": point.throughput,
            "per_gpu_infer_s": point.throughput / point.gpus,
            "ideal_infer_s": single * point.gpus if single else None,
            "efficiency": efficiency.get(point.gpus),
            "p50_ms": point.p50_ms,
            "p99_ms": point.p99_ms,
            "placement": point.placement,
        })  # fmt: skip
    return rows


def write_csv(path: Path, points: Sequence[ScalingPoint]) -> Path:
    """Write the table as CSV (full float precision) to ``path``."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table_rows(points))
    return path


def write_levels(stem: Path, levels: Sequence[dict]) -> list[Path]:
    """Write ``stem``.levels.csv (every measured level, by GPU count) and its plots.py figure; return their paths."""
    csv_path = stem.with_name(stem.name + ".levels.csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LEVEL_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(levels)
    return [csv_path, plots.write_plot([csv_path], csv_path.with_suffix(".png"), f"{stem.name}: every concurrency level")]


def markdown(points: Sequence[ScalingPoint], facts: dict[str, str], commands: Sequence[str], notes: Sequence[str],
             plot_name: str, title: str = "scaling", levels_plot: str | None = None) -> str:  # fmt: skip
    """The markdown report: settings and machine, the table, the plot, notes, and the exact commands."""
    rows = table_rows(points)
    lines = [f"# perf: {title}", ""] + [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "## Throughput per GPU count (inferences/s; efficiency = throughput_N / (N x throughput_1))", ""]
    lines += [perf_csv.markdown_table(rows, COLUMNS), "", f"![throughput per GPU count]({plot_name})", ""]
    if levels_plot:
        lines += ["## Every concurrency level", "", f"![throughput and latency per GPU count]({levels_plot})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    lines += ["## Commands", "", "```"] + list(commands) + ["```", ""]
    return "\n".join(lines)


def write_results(stem: Path, points: Sequence[ScalingPoint], facts: dict[str, str], commands: Sequence[str],
                  notes: Sequence[str], title: str = "scaling", levels: Sequence[dict] = ()) -> list[Path]:  # fmt: skip
    """Write ``stem``.csv, the plot (``stem``.png), with ``levels`` (summary rows with ``gpus``) write_levels' two
    files, and ``stem``.md; return their paths (md, csv, png, then the levels' csv and png)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(stem.with_suffix(".csv"), points)
    plot_path = scaling_plot.write_plot(stem, points, efficiencies(points), title)
    level_paths = write_levels(stem, levels) if levels else []
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(points, facts, commands, notes, plot_path.name, title, level_paths[1].name if levels else None))
    return [md_path, csv_path, plot_path, *level_paths]
