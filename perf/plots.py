"""Throughput against concurrency and p50/p90/p99 latency against throughput, every measured model in one PNG.

Usage:
  python -m pixelserve.perf.plots perf/results/RUN.csv [...]       # RUN.png beside each CSV
  python -m pixelserve.perf.plots a.csv b.csv -o served.png         # runs measured separately, in one figure

A CSV is a summary written by run_perf (one series per model and shared-memory mode: ours and its peers)
or by scaling (one series per GPU count), or perf_analyzer's own ``-f`` CSV (one series per file).
run_perf and scaling write these plots themselves, beside their CSVs.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import perf_csv

PERCENTILES = (("p50_ms", "p50", "-"), ("p90_ms", "p90", "--"), ("p99_ms", "p99", ":"))
# Row keys that tell series apart, and how a series label shows each.
SERIES_KEYS = {"model": "{}", "shared_memory": "shm {}", "gpus": "{:g} GPU(s)"}
CACHE_FLAG = " [response cache hits]"
# run_perf's name for perf_analyzer's CSV of one measurement: <run>.<model>-<shared memory>-c<concurrency>.csv
_PA_CSV_NAME = re.compile(r"\.(?P<model>[^.]+)-(?P<shared_memory>none|system|cuda)-c[0-9-]+$")


@dataclass
class Series:
    """One line per plot: the rows (perf_csv.summarize names) of one model/mode/GPU count, by concurrency."""

    label: str
    rows: list[dict]

    def values(self, key: str) -> list[float]:
        """Column ``key`` of every row, in concurrency order."""
        return [float(row[key]) for row in self.rows]


def load_rows(path: Path) -> list[dict]:
    """Summary rows from a run_perf/scaling summary CSV or from perf_analyzer's own CSV (named after the file)."""
    if not perf_csv.is_perf_analyzer_csv(path):
        return perf_csv.read_summary_csv(path)
    match = _PA_CSV_NAME.search(path.stem)
    names = match.groupdict() if match else {"model": path.stem}
    return [{**names, **perf_csv.summarize(row)} for row in perf_csv.read_perf_csv(path)]


def split_series(rows: Sequence[dict]) -> list[Series]:
    """Rows grouped by the SERIES_KEYS whose values differ between rows, in first-seen order, labelled with the
    model and those values; a series with response-cache hits is flagged in its label (its numbers are cache lookups)."""
    varying = [key for key in SERIES_KEYS if len({row.get(key) for row in rows}) > 1]
    shown = ["model"] * any("model" in row for row in rows) + [key for key in varying if key != "model"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(key) for key in shown), []).append(row)
    series = []
    for values, members in groups.items():
        label = ", ".join(SERIES_KEYS[key].format(value) for key, value in zip(shown, values) if value is not None)
        if any(float(row.get("cache_hits") or 0) > 0 for row in members):
            label += CACHE_FLAG
        series.append(Series(label or "measured", sorted(members, key=lambda row: float(row["concurrency"]))))
    return series


def figure(series: Sequence[Series], title: str = "") -> Figure:
    """Left: throughput against concurrency; right: p50/p90/p99 latency against throughput; one colour per series."""
    fig = Figure(figsize=(12, 5))
    left, right = fig.subplots(1, 2)
    for index, one in enumerate(series):
        color = f"C{index % 10}"
        throughput = one.values("throughput_infer_s")
        left.plot(one.values("concurrency"), throughput, "o-", color=color, label=one.label)
        for key, name, style in PERCENTILES:
            if all(key in row for row in one.rows):
                right.plot(throughput, one.values(key), marker="o", linestyle=style, color=color, label=f"{one.label} {name}")
    left.set(xlabel="concurrency (requests in flight)", ylabel="throughput (inferences/s)", title="throughput")
    right.set(xlabel="throughput (inferences/s)", ylabel="latency (ms)", title="latency p50 (solid), p90 (dashed), p99 (dotted)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (left, right):
        lines = axes.get_lines()
        if lines:  # from zero, with room for the markers and the legend beyond the largest point
            axes.set_xlim(0, max(max(line.get_xdata()) for line in lines) * 1.08 or 1)
            axes.set_ylim(0, max(max(line.get_ydata()) for line in lines) * 1.25 or 1)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG."""
    fig.savefig(path, format="png", dpi=110)
    return path


def write_plot(csv_paths: Sequence[Path], output: Path | None = None, title: str = "") -> Path:
    """Plot every series of ``csv_paths`` in one figure, saved as ``output`` (default: the first CSV's .png)."""
    rows = [row for path in csv_paths for row in load_rows(Path(path))]
    return save(figure(split_series(rows), title or Path(csv_paths[0]).stem), output or Path(csv_paths[0]).with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: write the PNG(s); 1 when a CSV holds no measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", nargs="+", type=Path, help="summary or perf_analyzer CSV files")
    parser.add_argument("-o", "--output", type=Path, help="one PNG of all the CSVs (default: a PNG beside each)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    empty = [path for path in args.csv if not load_rows(path)]
    if empty:
        print(f"no measurements in {', '.join(map(str, empty))}", file=sys.stderr)
        return 1
    groups = [args.csv] if args.output else [[path] for path in args.csv]
    for group in groups:
        print(f"wrote {write_plot(group, args.output, args.title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
