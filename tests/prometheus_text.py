"""Read a Prometheus text exposition (Triton's /metrics) into {(name, labels): value} for tests."""
from __future__ import annotations

import re
import time
import urllib.request

from pixelserve.build import classifier_config

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample line of ``text``; comments and blank lines are skipped."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            name, labels, value = match.groups()
            samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read().decode())


def counters_sent() -> None:
    """Wait until the models have sent what they counted so far: their flush interval (``metrics_interval_ms``
    in preprocess's config.pbtxt, which the classifier's follows) and a margin."""
    time.sleep(float(classifier_config.metrics_interval_ms()) / 1e3 + 0.5)


def value(samples: dict, name: str, **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (0 when absent: counters appear on first use)."""
    wanted = set(labels.items())
    found = [v for (n, have), v in samples.items() if n == name and wanted <= have]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} series"
    return found[0] if found else 0.0


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of every series ``name`` whose labels include ``labels`` (PromQL's ``sum(name{labels})``)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)
