"""When the models' counters reach Triton (pixelserve.model_runtime.metrics_flush): parsing the interval, flushing
on a timer thread while another thread adds, and flushing after every execute with an interval of 0."""
from __future__ import annotations

import threading
import time

import pytest

from pixelserve.build import classifier_config
from pixelserve.model_runtime.counters import CounterFamily
from pixelserve.model_runtime.metrics_flush import INTERVAL_PARAMETER, MetricsFlusher, interval_from_parameters


class Recorder:
    """pb_utils.MetricFamily's interface; records every increment sent (thread-safe, as Triton is)."""

    COUNTER = "counter"

    def __init__(self, name, description, kind):
        self.name, self.sent, self.lock = name, [], threading.Lock()

    def Metric(self, labels):  # noqa: N802 (Triton's name)
        recorder = self

        class Metric:
            def increment(self, amount):
                with recorder.lock:
                    recorder.sent.append((labels["k"], amount))

        return Metric()

    def total(self, key):
        with self.lock:
            return sum(amount for k, amount in self.sent if k == key)


def test_interval_is_read_in_milliseconds_and_bad_values_are_refused():
    assert interval_from_parameters({INTERVAL_PARAMETER: "1000"}) == 1.0
    assert interval_from_parameters({INTERVAL_PARAMETER: "0"}) == 0.0
    for bad in ("-5", "soon", "nan", ""):
        with pytest.raises(ValueError, match=INTERVAL_PARAMETER):
            interval_from_parameters({INTERVAL_PARAMETER: bad})
    with pytest.raises(ValueError, match="missing"):
        interval_from_parameters({})


def test_classifier_follows_the_preprocess_interval():
    preprocess = classifier_config.model_config.read_config(classifier_config.PREPROCESS_CONFIG)
    shipped = preprocess.parameters[INTERVAL_PARAMETER].string_value
    assert float(shipped) > 0  # shipped: off the request path
    for flavour in ("onnxruntime", "torch"):
        assert classifier_config.classifier_config(flavour).parameters[INTERVAL_PARAMETER].string_value == shipped


def test_interval_zero_flushes_after_every_execute_and_runs_no_thread():
    family = CounterFamily(Recorder, "x_total", "", ("k",))
    flusher = MetricsFlusher([family.flush], 0.0)
    family.add(2, "a")
    assert family._family.sent == []
    flusher.after_execute()
    assert family._family.total("a") == 2
    assert not any(t.name == "metrics-flush" for t in threading.enumerate())
    flusher.close()


def test_timer_thread_sends_every_addition_exactly_once_while_another_thread_adds():
    family = CounterFamily(Recorder, "x_total", "", ("k",))
    flusher = MetricsFlusher([family.flush], 0.002)
    added = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # the adder races the flusher for half a second
        family.add(1, "a")
        family.add(0.5, "b")
        added += 1
    assert family._family.total("a") > 0  # the thread sent some before close, on its own
    flusher.close()
    assert family._family.total("a") == added and family._family.total("b") == 0.5 * added
    assert family.pending() == {}
    flusher.after_execute()  # the timer thread owns flushing: nothing more is sent
    assert family._family.total("a") == added


def test_a_failing_flush_is_reported_and_the_others_still_run():
    family = CounterFamily(Recorder, "x_total", "", ("k",))
    errors: list[str] = []

    def broken():
        raise RuntimeError("server gone")

    flusher = MetricsFlusher([broken, family.flush], 0.01, on_error=errors.append)
    family.add(3, "a")
    deadline = time.monotonic() + 5
    while family._family.total("a") != 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    flusher.close()
    assert family._family.total("a") == 3
    assert errors and "server gone" in errors[0]


def test_fractional_sums_leave_nothing_pending_after_a_flush():
    family = CounterFamily(Recorder, "x_total", "", ("k",))
    for _ in range(3):
        for value in (0.1, 0.2, 0.7, 1e-9):  # sums that floating point cannot hold exactly
            family.add(value, "a")
        family.flush()
        assert family.pending() == {}
    sent = family._family.sent
    assert len(sent) == 3 and sum(amount for _, amount in sent) == pytest.approx(3 * (1.0 + 1e-9))
