"""Plot throughput per GPU count against ideal linear scaling: PNG via matplotlib, else a hand-written SVG."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence
from xml.sax.saxutils import escape


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
    """Write ``stem``.png with matplotlib, or ``stem``.svg where matplotlib is not installed; return the path."""
    try:
        import matplotlib
    except ImportError:
        path = stem.with_suffix(".svg")
        path.write_text(svg_plot(points, efficiency, title))
        return path
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


def svg_plot(points: Sequence[Point], efficiency: dict[int, float], title: str = "scaling") -> str:
    """A self-contained SVG line chart: measured and ideal throughput per GPU count, efficiency labels."""
    width, height, left, right, top, bottom = 640, 400, 70, 20, 40, 50
    counts, measured, ideal = _series(points)
    top_value = max(measured + (ideal or []) + [1.0]) * 1.1
    span = max(counts[-1] - counts[0], 1) if counts else 1

    def x(n: int) -> float:  # 40 px inside the axes, so edge labels stay clear of them
        return left + 40 + (n - (counts[0] if counts else 0)) / span * (width - left - right - 80)

    def y(value: float) -> float:
        return height - bottom - value / top_value * (height - top - bottom)

    def polyline(values: list[float], style: str) -> str:
        coords = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in zip(counts, values))
        return f'<polyline fill="none" points="{coords}" {style}/>'

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}: throughput per GPU count</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">GPUs</text>',
        f'<text x="16" y="{height / 2}" text-anchor="middle" transform="rotate(-90 16 {height / 2})">inferences/s</text>',
    ]
    for step in range(5):
        value = top_value * step / 4
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.0f}</text>')
    for n in counts:
        parts.append(f'<text x="{x(n):.1f}" y="{height - bottom + 18}" text-anchor="middle">{n}</text>')
    if ideal:
        parts.append(polyline(ideal, 'stroke="gray" stroke-dasharray="6 4"'))
    parts.append(polyline(measured, 'stroke="steelblue" stroke-width="2"'))
    for n, value in zip(counts, measured):
        label = f"{value:.0f}" + (f" ({100 * efficiency[n]:.0f}%)" if n in efficiency else "")
        parts.append(f'<circle cx="{x(n):.1f}" cy="{y(value):.1f}" r="4" fill="steelblue"/>')
        parts.append(f'<text x="{x(n):.1f}" y="{y(value) - 9:.1f}" text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<text x="{left + 10}" y="{top + 12}" fill="steelblue">measured (efficiency in %)</text>')
    parts.append(f'<text x="{left + 10}" y="{top + 28}" fill="gray">ideal: N x 1 GPU</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"
