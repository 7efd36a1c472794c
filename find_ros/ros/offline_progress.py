"""The progress bar of a ``find-ros run`` (:mod:`find_ros.ros.offline`): one line on stderr, redrawn in place."""
from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A one-line text progress bar on a stream (stderr), redrawn at most 10 times a second."""

    def __init__(self, total: int, *, stream: Any = None, enabled: bool = True, width: int = 30) -> None:
        self.total, self.stream, self.enabled, self.width = max(int(total), 1), stream or sys.stderr, enabled, width
        self._last = 0.0
        self._t0 = time.monotonic()
        self._drawn = False

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        fill = int(round(frac * self.width))
        rate = done / max(now - self._t0, 1e-9)
        self.stream.write(f"\rrun [{'#' * fill}{'.' * (self.width - fill)}] {done}/{self.total} frames "
                          f"{rate:5.1f}/s, {extra}\033[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
