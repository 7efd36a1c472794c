"""Per-stage wall time of the perception node's frame path, as rolling medians for ``find/status``.

:class:`StageTimer` keeps the last ``window`` durations of each named stage (a bounded deque per stage, so memory
does not grow with the run) and reports their medians in milliseconds (:meth:`StageTimer.medians`). The worker
thread records, the status timer reads: both under one lock. Pure: no node, no rclpy.

    timer = StageTimer(window=200)
    with timer.stage("convert_in"):
        rgb = image_to_rgb(msg)
    timer.record("model_forward", 43.1)
    timer.medians()  # {"convert_in": 0.8, "model_forward": 43.1}
"""
from __future__ import annotations

import collections
import contextlib
import statistics
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Callable

__all__ = ["StageTimer"]


class StageTimer:
    """Rolling per-stage durations (ms): the last ``window`` values of each stage, thread-safe.

    ``clock`` returns seconds (monotonic); stages are reported in the order they were first recorded.
    """

    def __init__(self, *, window: int = 200, clock: Callable[[], float] = time.perf_counter) -> None:
        if int(window) < 1:
            raise ValueError(f"StageTimer window={window!r} must be an integer >= 1")
        self.window = int(window)
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, collections.deque[float]] = {}

    def record(self, stage: str, ms: float) -> None:
        """Add one duration of ``stage`` in milliseconds (the oldest beyond ``window`` is forgotten)."""
        with self._lock:
            q = self._values.get(stage)
            if q is None:
                q = self._values[stage] = collections.deque(maxlen=self.window)
            q.append(float(ms))

    def record_many(self, stages_ms: Mapping[str, float]) -> None:
        """:meth:`record` each ``stage -> ms`` of a mapping (e.g. a core object's ``last_timings``)."""
        for stage, ms in stages_ms.items():
            self.record(stage, ms)

    @contextlib.contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """Time the ``with`` block as one duration of ``stage`` (also when it raises)."""
        t0 = self._clock()
        try:
            yield
        finally:
            self.record(stage, (self._clock() - t0) * 1e3)

    def medians(self, *, ndigits: int = 3) -> dict[str, float]:
        """Median (ms, rounded to ``ndigits``) of each stage's recorded window."""
        with self._lock:
            snap = {k: list(q) for k, q in self._values.items() if q}
        return {k: round(statistics.median(v), ndigits) for k, v in snap.items()}

    def counts(self) -> dict[str, int]:
        """How many values each stage's window holds (at most ``window``)."""
        with self._lock:
            return {k: len(q) for k, q in self._values.items()}

    def reset(self) -> None:
        """Forget every stage (at activation)."""
        with self._lock:
            self._values.clear()
