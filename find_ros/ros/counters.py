"""What the perception node has seen and done (``find/status``), and its throttled per-kind warnings.

:class:`Counters` is the status record; :class:`NodeCounters` counts into it from any thread and decides when a
warning of a kind is due (once per ``period_s`` per kind; every occurrence counted in ``problems``). The node logs
the due ones. Pure: no node, no rclpy.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable

__all__ = ["Counters", "NodeCounters"]


@dataclasses.dataclass
class Counters:
    """What the node has seen and done since activation (published on ``find/status``)."""

    frames_in: int = 0
    """Colour images received."""
    frame_sets: int = 0
    """Colour + depth + camera_info sets matched by stamp."""
    processed: int = 0
    """Frame sets grounded and published."""
    dropped: int = 0
    """Frame sets replaced in the mailbox by a newer one before the worker took them."""
    stale: int = 0
    """Colour frames older than max_stamp_age_s on arrival or when the worker took them."""
    future: int = 0
    """Camera messages stamped more than max_stamp_age_s after the node clock (dropped on arrival)."""
    invalid_input: int = 0
    """Camera / pose messages refused on arrival (encoding, size, step, data length, pixel limit, camera_info K)."""
    out_of_order: int = 0
    """Messages not newer than the last matched frame set (fallback synchroniser only)."""
    rejected: int = 0
    """Frame sets refused for bad content (encoding, sizes, depth, camera_info)."""
    idle: int = 0
    """Frame sets taken while no instruction was set (nothing published)."""
    waiting_camera_info: int = 0
    """Colour images received while no camera_info had arrived yet."""
    instructions: int = 0
    """Instructions accepted."""
    instructions_rejected: int = 0
    problems: dict = dataclasses.field(default_factory=dict)
    """Warning kind -> count."""


class NodeCounters:
    """Thread-safe :class:`Counters` plus the per-kind warning throttle (``clock``: seconds, monotonic)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._counters = Counters()
        self._last_warn: dict[str, float] = {}
        self._clock = clock

    def reset(self) -> None:
        """Zero the counters (at activation); the throttle keeps its memory, so a reactivation does not re-log."""
        with self._lock:
            self._counters = Counters()

    def count(self, name: str, k: int = 1) -> None:
        """Add ``k`` to the counter ``name`` (a :class:`Counters` field)."""
        with self._lock:
            setattr(self._counters, name, getattr(self._counters, name) + k)

    def problem(self, kind: str, *, period_s: float) -> int | None:
        """Count one ``kind`` problem; its count so far when a warning is due (the first, or ``period_s`` after the
        last one logged), else None."""
        now = self._clock()
        with self._lock:
            n = self._counters.problems[kind] = self._counters.problems.get(kind, 0) + 1
            last = self._last_warn.get(kind)
            if last is not None and now - last < period_s:
                return None
            self._last_warn[kind] = now
        return n

    def snapshot(self) -> dict:
        """The counters as a dict (a copy)."""
        with self._lock:
            return dataclasses.asdict(self._counters)
