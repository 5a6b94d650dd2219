"""Read perf_analyzer's ``-f`` CSV (with ``--verbose-csv``) and render its key numbers as a table."""
from __future__ import annotations

import csv
from pathlib import Path

# Summary columns: (our name, perf_analyzer CSV header, divisor turning its microseconds into ms).
SUMMARY_COLUMNS = (
    ("concurrency", "Concurrency", None),
    ("throughput_infer_s", "Inferences/Second", None),
    ("p50_ms", "p50 latency", 1000.0),
    ("p90_ms", "p90 latency", 1000.0),
    ("p99_ms", "p99 latency", 1000.0),
    ("avg_ms", "Avg latency", 1000.0),
    ("server_queue_ms", "Server Queue", 1000.0),
    ("server_compute_ms", "Server Compute Infer", 1000.0),
)


def read_perf_csv(path: str | Path) -> list[dict[str, float]]:
    """The measurement rows of a perf_analyzer CSV, one per concurrency, values as floats, by concurrency.

    perf_analyzer writes its rows ordered by throughput, not by concurrency.
    """
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Concurrency", "").strip()]
    parsed = [{key.strip(): float(value) for key, value in row.items() if key and value not in (None, "")} for row in rows]
    return sorted(parsed, key=lambda row: row["Concurrency"])


def read_summary_csv(path: str | Path) -> list[dict[str, object]]:
    """The rows of a summary CSV written by run_perf (or scaling's levels): numbers as floats, blanks left out."""

    def value(text: str) -> object:
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as handle:
        return [{key: value(text) for key, text in row.items() if key and text not in (None, "")} for row in csv.DictReader(handle)]


def is_perf_analyzer_csv(path: str | Path) -> bool:
    """Whether ``path`` is perf_analyzer's own ``-f`` CSV (rather than a summary of ours)."""
    with open(path, newline="") as handle:
        return "Inferences/Second" in handle.readline().split(",")


def summarize(row: dict[str, float]) -> dict[str, float]:
    """The columns we report, converted to ms; a column perf_analyzer did not write is left out."""
    summary = {}
    for name, header, divisor in SUMMARY_COLUMNS:
        if header in row:
            summary[name] = row[header] / divisor if divisor else row[header]
    return summary


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns`` (floats with 2 decimals, ints as ints)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() and abs(value) < 1e9 else f"{value:.2f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)
