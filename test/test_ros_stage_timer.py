"""StageTimer: rolling per-stage medians with bounded memory, a context manager that also times failures."""
import threading

import pytest

from find_ros.ros.stage_timer import StageTimer


def test_medians_per_stage_in_first_recorded_order():
    t = StageTimer(window=10)
    for ms in (3.0, 1.0, 2.0):
        t.record("model_forward", ms)
    t.record("convert_in", 0.5)
    assert t.medians() == {"model_forward": 2.0, "convert_in": 0.5}
    assert list(t.medians()) == ["model_forward", "convert_in"]


def test_window_bounds_memory_and_forgets_the_oldest():
    t = StageTimer(window=3)
    for ms in (100.0, 100.0, 100.0, 1.0, 2.0, 3.0):
        t.record("s", ms)
    assert t.counts() == {"s": 3} and t.medians() == {"s": 2.0}


def test_stage_context_times_the_block_with_the_clock_even_when_it_raises():
    now = [10.0]
    t = StageTimer(clock=lambda: now[0])
    with t.stage("overlay"):
        now[0] += 0.004
    with pytest.raises(RuntimeError):
        with t.stage("overlay"):
            now[0] += 0.006
            raise RuntimeError("boom")
    assert t.medians() == {"overlay": pytest.approx(5.0)}


def test_record_many_reset_and_bad_window():
    t = StageTimer()
    t.record_many({"a": 1.0, "b": 2.0})
    assert t.medians() == {"a": 1.0, "b": 2.0}
    t.reset()
    assert t.medians() == {} and t.counts() == {}
    with pytest.raises(ValueError, match="window=0"):
        StageTimer(window=0)


def test_threads_record_while_another_reads():
    t = StageTimer(window=50)

    def work():
        for i in range(2000):
            t.record("s", float(i % 7))

    th = [threading.Thread(target=work) for _ in range(4)]
    for x in th:
        x.start()
    for _ in range(200):
        t.medians()
    for x in th:
        x.join()
    assert t.counts() == {"s": 50}
