"""Read a Prometheus text exposition (Triton's /metrics) into {(name, labels): value} for tests; run a real
Prometheus on the shipped config and query its HTTP API."""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import yaml

from pixelserve.build import classifier_config
from pixelserve.triton_local import free_port
from waiting import wait_until

PROMETHEUS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
MODEL_COUNTER_PREFIX = "pixelserve_"  # the series the models count and send (pixelserve.model_runtime.counters)

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


# Beyond a flush interval between two scrapes: the time a flush of every model takes to reach the server.
FLUSH_MARGIN_S = 0.5


def _model_counters(samples: dict[tuple[str, frozenset], float]) -> dict[tuple[str, frozenset], float]:
    return {key: value for key, value in samples.items() if key[0].startswith(MODEL_COUNTER_PREFIX)}


def counters_sent(metrics_url: str, timeout: float = 60.0) -> dict[tuple[str, frozenset], float]:
    """The server's samples once the models have sent what they counted so far: scraped until two scrapes a flush
    interval apart (``metrics_interval_ms`` in preprocess's config.pbtxt, which every model follows) agree on the
    models' counters, so that the flushes between them had nothing left to send."""
    interval = float(classifier_config.metrics_interval_ms()) / 1e3 + FLUSH_MARGIN_S
    deadline = time.monotonic() + timeout
    last = _model_counters(scrape(metrics_url))
    while True:
        time.sleep(interval)  # every model flushes between the last scrape and the next
        samples = scrape(metrics_url)
        moved = {key for key, value in _model_counters(samples).items() if last.get(key) != value}
        if not moved:
            return samples
        if time.monotonic() >= deadline:
            names = sorted(f"{name}{dict(labels)}" for name, labels in moved)[:5]
            raise AssertionError(f"the models' counters still moved after {timeout:.0f} s, e.g. {names}")
        last = _model_counters(samples)


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


def shipped_config(metrics_url: str, **labels: str) -> dict:
    """deploy/prometheus/prometheus.yml scraping ``metrics_url`` and evaluating the rules every second, its
    target carrying the shipped labels plus ``labels`` (say namespace and pod, as Kubernetes discovery adds)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (scrape,) = config["scrape_configs"]
    (target,) = scrape["static_configs"]
    target.update(targets=[urllib.parse.urlsplit(metrics_url).netloc], labels={**target.get("labels", {}), **labels})
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    return config


@contextlib.contextmanager
def running_prometheus(config: dict, workdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """A real Prometheus on ``config`` with fresh storage under ``workdir``, on a free loopback port; yields the
    base URL of its HTTP API once it is ready."""
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["prometheus", f"--config.file={workdir / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.25)
            yield base
        finally:
            process.terminate()
            process.wait(30)


def query(base: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """Every (labels, value) of an instant query through Prometheus' HTTP API."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return [(result["metric"], float(result["value"][1])) for result in body["data"]["result"]]


def query_one(base: str, expr: str) -> float | None:
    """The value of a query that returns one series (None when it returns none)."""
    results = query(base, expr)
    assert len(results) <= 1, f"{expr}: {results}"
    return results[0][1] if results else None


def wait_for(base: str, expr: str, accept: Callable[[float], bool], timeout: float = 60.0) -> float:
    """``query_one(expr)`` once ``accept`` takes it."""
    value = wait_until(lambda: query_one(base, expr), lambda v: v is not None and accept(v), expr, timeout, poll_s=0.5)
    assert value is not None  # for the type checker: accepted values are not None
    return value
