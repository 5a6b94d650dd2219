"""Plot throughput per GPU count against ideal linear scaling (PNG via matplotlib, a pinned dependency)."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence


class Point(Protocol):
    """What the plot needs of a measurement (scaling_report.ScalingPoint has it)."""

    gpus: int
    throughput: float


def _series(points: Sequence[Point]) -> tuple[list[int], list[float], list[float] | None]:
    ordered = sorted(points, key=lambda p: p.gpus)
    counts = [p.gpus for p in ordered]
    measured = [p.throughput for p in ordered]
    single = next((p.throughput for p in ordered if p.gpus == 1), None)
    return counts, measured, [single * n for n in counts] if single else None


def write_plot(stem: Path, points: Sequence[Point], efficiency: dict[int, float], title: str = "scaling") -> Path:
    """Write ``stem``.png with matplotlib and return its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    counts, measured, ideal = _series(points)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    if ideal:
        left.plot(counts, ideal, "--", color="gray", label="ideal (N x 1 GPU)")
    left.plot(counts, measured, "o-", color="tab:blue", label="measured")
    for n, value in zip(counts, measured):
        left.annotate(f"{value:.0f}", (n, value), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    left.set(xlabel="GPUs", ylabel="inferences/s", title="throughput", xticks=counts)
    left.set_ylim(0, max(measured + (ideal or [])) * 1.15)  # room for the value labels
    left.legend()
    if efficiency:
        values = [100 * efficiency[n] for n in counts if n in efficiency]
        right.bar([str(n) for n in counts if n in efficiency], values, color="tab:green")
        for index, value in enumerate(values):
            right.annotate(f"{value:.0f}%", (index, value), textcoords="offset points", xytext=(0, 3), ha="center")
        right.axhline(100, linestyle="--", color="gray")
        right.set_ylim(0, max(110, max(values) + 10))
    right.set(xlabel="GPUs", ylabel="% of ideal", title="scaling efficiency")
    figure.suptitle(title)
    figure.tight_layout()
    path = stem.with_suffix(".png")
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
