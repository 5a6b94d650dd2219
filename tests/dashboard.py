"""The Grafana dashboard under deploy/grafana, and the metric names its PromQL queries read."""
from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "pixelserve-dashboard.json"

# Triton's GPU metrics (server docs, metrics.md): exported only where a GPU is visible, so not on CPU hosts.
GPU_METRICS = {"nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage",
               "nv_gpu_power_limit", "nv_energy_consumption"}  # fmt: skip

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions, keywords, label matchers,
    strings, durations or grouping labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):  # not the exponent of 1e6
        following = text[match.end():].lstrip()
        word = match.group()
        if following.startswith("(") or word in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def metric_selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, its label matchers with braces, or "" where it has none) for every metric an expression reads."""
    found: list[str] = []

    def hold(match: re.Match) -> str:
        found.append(match.group())
        return f"\0{len(found) - 1}\0"

    held = re.sub(r"\{[^}]*\}", hold, expr)
    return [(match.group(1), found[int(match.group(2))] if match.group(2) else "")
            for name in sorted(metric_names(expr))
            for match in re.finditer(rf"(?<![\w.])({re.escape(name)})(?:\0(\d+)\0)?(?![\w:])", held)]  # fmt: skip
