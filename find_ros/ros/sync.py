"""Approximate-time matching of camera streams by stamp, newest frame wins (pure python, no rclpy).

The perception node uses ``message_filters.ApproximateTimeSynchronizer`` when it is importable and this class
otherwise. Semantics: each stream keeps the last ``queue_size`` messages; whenever a message arrives, the newest
set with one message per stream whose stamps all lie within ``slop_s`` of each other and that is newer than the
last emitted set is passed to ``callback`` (a dict stream -> message). Anything at or before the emitted stamp is
discarded, so a late or missing frame never blocks newer ones and nothing queues behind the consumer.
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any, Callable, Iterable

__all__ = ["ApproximateSync", "SyncError", "DEFAULT_STREAMS"]

DEFAULT_STREAMS: tuple[str, ...] = ("color", "depth", "camera_info")


class SyncError(ValueError):
    """Bad synchroniser configuration or input (unknown stream, non-finite stamp, bad slop)."""


class ApproximateSync:
    """Newest-frame-wins approximate-time matcher.

    Args:
        slop_s: largest allowed difference (s) between the earliest and latest stamp of a matched set (>= 0).
        callback: called with ``{stream: msg}`` for every matched set, in increasing stamp order.
        streams: names of the streams to match; add ``"pose"`` to require a camera pose per set.
        queue_size: messages kept per stream (>= 1); older ones are dropped, so memory stays bounded.
    """

    def __init__(self, *, slop_s: float, callback: Callable[[dict[str, Any]], None],
                 streams: Iterable[str] = DEFAULT_STREAMS, queue_size: int = 4) -> None:
        if not (isinstance(slop_s, (int, float)) and math.isfinite(slop_s) and slop_s >= 0):
            raise SyncError(f"slop_s must be a finite number >= 0, got {slop_s!r}")
        if queue_size < 1:
            raise SyncError(f"queue_size must be >= 1, got {queue_size}")
        self.streams: tuple[str, ...] = tuple(streams)
        if len(self.streams) < 1 or len(set(self.streams)) != len(self.streams):
            raise SyncError(f"streams must be distinct and non-empty, got {self.streams}")
        self.slop_s = float(slop_s)
        self.queue_size = int(queue_size)
        self._callback = callback
        self._buffers: dict[str, deque[tuple[float, Any]]] = {s: deque(maxlen=self.queue_size) for s in self.streams}
        self._last_emitted = -math.inf
        self.matched = 0  #: number of sets passed to the callback
        self.discarded = 0  #: messages dropped as stale (at or before the last emitted set)

    def add(self, stream: str, stamp_s: float, msg: Any) -> bool:
        """Add one message; returns True when it completed a set (the callback has then been called)."""
        buf = self._buffers.get(stream)
        if buf is None:
            raise SyncError(f"unknown stream {stream!r}; this synchroniser matches {self.streams}")
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            raise SyncError(f"stamp of stream {stream!r} is not finite: {stamp_s}")
        if stamp_s <= self._last_emitted:
            self.discarded += 1
            return False
        # keep each buffer sorted by stamp (out-of-order arrivals are inserted in place)
        if buf and stamp_s < buf[-1][0]:
            items = sorted([*buf, (stamp_s, msg)], key=lambda t: t[0])[-self.queue_size:]
            buf.clear()
            buf.extend(items)
        else:
            buf.append((stamp_s, msg))
        return self._try_match()

    def _try_match(self) -> bool:
        if any(not b for b in self._buffers.values()):
            return False
        best: tuple[float, float, tuple] | None = None  # (newest stamp, -spread, candidate)
        # buffers are tiny (queue_size each): a full search over combinations is cheap and exact
        for combo in itertools.product(*(list(b) for b in self._buffers.values())):
            stamps = [c[0] for c in combo]
            lo, hi = min(stamps), max(stamps)
            if hi - lo > self.slop_s:
                continue
            key = (lo, lo - hi)
            if best is None or key > best[:2]:
                best = (key[0], key[1], combo)
        if best is None:
            return False
        combo = best[2]
        self._last_emitted = max(c[0] for c in combo)
        for b in self._buffers.values():
            while b and b[0][0] <= self._last_emitted:
                b.popleft()
        self.matched += 1
        self._callback({s: c[1] for s, c in zip(self.streams, combo)})
        return True

    def buffered(self) -> dict[str, int]:
        """Messages currently held per stream (each <= queue_size)."""
        return {s: len(b) for s, b in self._buffers.items()}

    def reset(self) -> None:
        """Forget buffered messages and the last emitted stamp (e.g. after a time jump)."""
        for b in self._buffers.values():
            b.clear()
        self._last_emitted = -math.inf
