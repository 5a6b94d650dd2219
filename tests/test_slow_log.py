"""The slow-execute log: threshold parsing, which executions are logged, and its rate limit."""
import pytest

from pixelserve.model_runtime.phases import EXECUTE_PHASE, PhaseTimer
from pixelserve.model_runtime.slow_log import SlowLog, threshold_from_parameters


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_threshold_parameter():
    assert threshold_from_parameters({"slow_log_ms": "250"}) == 0.25
    assert threshold_from_parameters({}) == 0.0
    for bad in ("-1", "nan", "fast"):
        with pytest.raises(ValueError, match="slow_log_ms"):
            threshold_from_parameters({"slow_log_ms": bad})


def test_logs_slow_execute_with_its_phases_and_rate_limit():
    clock, lines = Clock(), []
    log = SlowLog("preprocess", 0.1, lines.append, every_s=1.0, clock=clock)
    log.start()
    log.phase("decode", 0.02)
    clock.now += 0.05
    assert log.finish(3) is None and lines == []  # 50 ms: under the limit

    log.start()
    log.phase("decode", 0.150)
    log.phase("kernel", 0.001)
    clock.now += 0.2
    assert log.finish(2) == pytest.approx(0.2)
    assert len(lines) == 1
    assert "preprocess: slow execute()" in lines[0] and "200.0 ms for 2 request(s)" in lines[0]
    assert "decode 150.0, kernel 1.0 ms" in lines[0] and "outside the timed phases 49.0 ms" in lines[0]

    for _ in range(3):  # within a second of the last line: counted, not written
        log.start()
        clock.now += 0.2
        assert log.finish(1) is None
    assert len(lines) == 1
    clock.now += 1.0
    log.start()
    clock.now += 0.3
    log.finish(1)
    assert len(lines) == 2 and "3 slow execute() left out" in lines[1]


def test_off_by_default_and_fed_by_the_phase_timer():
    lines = []
    off = SlowLog("classifier", 0.0, lines.append)
    off.start()
    off.phase("infer", 5.0)
    assert off.finish(1) is None and lines == []

    clock = Clock()
    log = SlowLog("classifier", 0.001, lines.append, clock=clock)
    timer = PhaseTimer("classifier", slow_log=log)
    with timer.execute(4):
        with timer.phase("infer"):
            clock.now += 0.01
    assert len(lines) == 1 and "infer" in lines[0] and "for 4 request(s)" in lines[0]


def test_the_whole_execute_is_a_phase_that_holds_the_others():
    timer = PhaseTimer("preprocess")
    for _ in range(2):
        with timer.execute(1):
            with timer.phase("decode"):
                sum(range(20000))
            sum(range(20000))  # between the phases: in execute() only
    totals = timer.totals()
    assert totals[EXECUTE_PHASE][1] == 2 and totals["decode"][1] == 2
    assert totals[EXECUTE_PHASE][0] > totals["decode"][0] > 0
    with pytest.raises(RuntimeError):
        with timer.execute(1):
            raise RuntimeError("a failed execute() is timed too")
    assert timer.totals()[EXECUTE_PHASE][1] == 3


def test_image_size_parameter():
    from pixelserve.model_runtime.parameters import image_size_parameter

    assert image_size_parameter({"reserve_image_size": "1080x1920"}, "reserve_image_size") == (1080, 1920)
    assert image_size_parameter({"reserve_image_size": "0"}, "reserve_image_size") is None
    assert image_size_parameter({}, "reserve_image_size") is None
    for bad in ("1080", "0x5", "axb", "1080x1920x3"):
        with pytest.raises(ValueError, match="reserve_image_size"):
            image_size_parameter({"reserve_image_size": bad}, "reserve_image_size")


def test_watching_logs_an_execute_that_raised():
    clock, lines = Clock(), []
    log = SlowLog("classifier", 0.01, lines.append, clock=clock)
    with pytest.raises(RuntimeError):
        with log.watching(2):
            clock.now += 0.5
            raise RuntimeError("the batch failed")
    assert len(lines) == 1 and "500.0 ms for 2 request(s)" in lines[0]
