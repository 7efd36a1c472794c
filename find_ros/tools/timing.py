"""Timing one callable the way every benchmark of the project does (``find-ros bench``, ``find-ros eval``'s speed,
``python -m find_ros.tools.model_speed``): warm-up calls, then repeated timed calls, median / p95 in milliseconds and
the process's peak RSS over the timed calls."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["StageTiming", "time_stage", "peak_rss_mb", "reset_peak_rss"]


@dataclasses.dataclass
class StageTiming:
    """Timings of one callable, in milliseconds."""

    median_ms: float
    p95_ms: float
    n: int
    peak_rss_mb: float | None
    samples_ms: tuple[float, ...] = ()
    """Every timed call, in order (other percentiles)."""

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": round(self.median_ms, 4), "p95_ms": round(self.p95_ms, 4), "n": self.n,
                "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1)}


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux; silently nothing elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process since the last reset, MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def time_stage(fn: Callable[[], Any], *, warmup: int, repeat: int, min_s: float = 0.0,
               period_s: float = 0.0) -> StageTiming:
    """Call ``fn`` ``warmup`` times, then at least ``repeat`` times (and at least ``min_s`` seconds).

    ``period_s`` > 0 paces the calls as a camera would: each timed call starts ``period_s`` after the one before
    (the thread sleeps in between; a call longer than the period starts the next at once). On shared VMs a call
    after an idle gap can run slower than back to back; paced, it is timed as a node driven by a camera runs it."""
    if period_s < 0:
        raise ValueError(f"period_s must be >= 0, got {period_s}")
    for _ in range(warmup):
        fn()
    reset_peak_rss()
    times: list[float] = []
    t_end = time.perf_counter() + min_s
    next_start = time.perf_counter() + period_s  # paced: the first timed call, too, follows a gap
    while len(times) < repeat or time.perf_counter() < t_end:
        if period_s > 0:
            wait = next_start - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            next_start = max(next_start + period_s, time.perf_counter())
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 50 * max(repeat, 1):
            break
    arr = np.asarray(times)
    return StageTiming(float(np.median(arr)), float(np.percentile(arr, 95)), len(times), peak_rss_mb(),
                       tuple(times))
