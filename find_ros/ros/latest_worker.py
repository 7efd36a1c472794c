"""A one-slot mailbox read by one worker thread: the newest item wins, the producer never blocks on the work.

The perception node hands matched frame sets to its grounding worker this way, and the field bridge hands grounded
frames to its fusion thread: a camera callback (or the grounding worker) calls :meth:`LatestWorker.put`, which
replaces an item the thread has not taken yet (``put`` returns True then: the caller counts a dropped frame); the
thread calls ``handle(item)`` for each item it takes (after ``on_start()``, when given, in the same thread: a warm-up
there also warms the thread's own allocator arena). ``handle`` should catch its own errors (the owners count and
log them); one that escapes is logged here and the thread keeps running. Pure threading: no node, no rclpy.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Generic, TypeVar

__all__ = ["LatestWorker"]

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class LatestWorker(Generic[T]):
    """One daemon thread calling ``handle`` on the newest :meth:`put` item (see the module docstring)."""

    def __init__(self, handle: Callable[[T], None], *, name: str, poll_s: float = 0.5,
                 on_start: Callable[[], None] | None = None) -> None:
        self._handle = handle
        self._on_start = on_start  # run in the thread before its first item (e.g. a warm-up of the work's path)
        self.name = name
        self._poll_s = float(poll_s)
        self._cv = threading.Condition()
        self._item: T | None = None
        self._busy = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def start(self) -> None:
        """Start the thread (again after :meth:`stop`); nothing when it runs already."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Drop the waiting item, stop the thread and join it (up to ``timeout`` s; not from the thread itself).
        Safe to call in any state, repeatedly."""
        self._stop.set()
        with self._cv:
            self._item = None
            self._cv.notify_all()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=timeout)

    def put(self, item: T) -> bool:
        """Leave ``item`` for the thread; True when it replaced one the thread had not taken (a dropped item)."""
        with self._cv:
            replaced = self._item is not None
            self._item = item
            self._cv.notify_all()
        return replaced

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once no item waits and none is being handled; False after ``timeout`` s."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._item is not None or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(timeout=left)
        return True

    def _loop(self) -> None:
        if self._on_start is not None:
            with self._cv:
                self._busy = True
            try:
                self._on_start()
            except Exception:  # noqa: BLE001 - a failed warm-up costs speed, not the thread
                LOG.exception("%s: on_start failed", self.name)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
        while not self._stop.is_set():
            with self._cv:
                while self._item is None and not self._stop.is_set():
                    self._cv.wait(timeout=self._poll_s)
                item, self._item = self._item, None
                self._busy = item is not None
            if item is None:
                continue
            try:
                self._handle(item)
            except Exception:  # noqa: BLE001 - the owner's handle should have caught it; the thread keeps running
                LOG.exception("%s: item dropped", self.name)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
