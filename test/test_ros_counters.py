"""find_ros.ros.counters: the node's status counters and per-kind warning throttle (pure)."""
from __future__ import annotations

import threading

from find_ros.ros.counters import Counters, NodeCounters


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_count_snapshot_reset():
    c = NodeCounters()
    c.count("frames_in")
    c.count("frames_in", 2)
    c.count("processed")
    snap = c.snapshot()
    assert snap["frames_in"] == 3 and snap["processed"] == 1 and snap["problems"] == {}
    assert set(snap) == {f for f in Counters.__dataclass_fields__}
    snap["problems"]["x"] = 1  # a copy
    assert c.snapshot()["problems"] == {}
    c.reset()
    assert c.snapshot() == Counters().__dict__


def test_warnings_due_once_per_period_per_kind_every_one_counted():
    clock = _Clock()
    c = NodeCounters(clock=clock)
    assert c.problem("color_image", period_s=5.0) == 1  # first: due, with its count
    assert c.problem("color_image", period_s=5.0) is None
    assert c.problem("size_mismatch", period_s=5.0) == 1  # another kind has its own throttle
    clock.t += 4.9
    assert c.problem("color_image", period_s=5.0) is None
    clock.t += 0.2
    assert c.problem("color_image", period_s=5.0) == 4  # due again: the count says how many were seen
    assert c.snapshot()["problems"] == {"color_image": 4, "size_mismatch": 1}
    c.reset()  # counters go, the throttle remembers: a reactivation does not re-log at once
    assert c.problem("color_image", period_s=5.0) is None and c.snapshot()["problems"] == {"color_image": 1}
    assert c.problem("color_image", period_s=0.0) == 2  # period 0: every one logged


def test_counting_from_threads():
    c = NodeCounters()

    def work():
        for _ in range(1000):
            c.count("frame_sets")
            c.problem("x", period_s=60.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = c.snapshot()
    assert snap["frame_sets"] == 4000 and snap["problems"] == {"x": 4000}
