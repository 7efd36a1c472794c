"""The camera poses of the perception node, buffered by stamp and looked up for a frame's stamp.

``camera/pose`` (``PoseStamped``) and ``camera/odom`` (``Odometry``) callbacks put poses in with :meth:`PoseBuffer.add`
(``stamp_s(msg.header)``, ``conversions.pose_to_matrix(pose)``); the grounding worker asks :meth:`PoseBuffer.lookup`
for the pose nearest a frame's stamp, within ``slop_s``. When the pose stream is alive but behind the frame (its
newest pose is older than the frame by more than ``slop_s`` but less than ``alive_s``, and its poses are dense enough
for one to land within ``slop_s``), the lookup waits (at most ``wait_s``) for :meth:`add` to bring it.

Pure: no node, no rclpy; thread-safe (one condition guards the buffer).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

from find_ros.stamps import stamp_to_s

__all__ = ["PoseBuffer", "stamp_s", "POSE_BUFFER", "POSE_WAIT_S", "POSE_STREAM_ALIVE_S"]

POSE_BUFFER = 64
"""Poses kept (the newest)."""
POSE_WAIT_S = 0.1
"""Longest wait of the worker for a camera pose stamped like its frame when the pose stream lags the images."""
POSE_STREAM_ALIVE_S = 1.0
"""A pose stream whose newest pose is older than this (relative to the frame) has stopped: no waiting."""


def stamp_s(header: Any) -> float:
    """A ``std_msgs/Header``'s stamp in seconds (:func:`find_ros.stamps.stamp_to_s` of ``header.stamp``)."""
    return stamp_to_s(header.stamp)


class PoseBuffer:
    """The newest ``maxlen`` (stamp in s, 4x4 T_world_cam) pairs; :meth:`lookup` by stamp (see the module docstring)."""

    def __init__(self, *, maxlen: int = POSE_BUFFER, wait_s: float = POSE_WAIT_S,
                 alive_s: float = POSE_STREAM_ALIVE_S) -> None:
        self._poses: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=int(maxlen))
        self._cv = threading.Condition()
        self.wait_s = float(wait_s)
        self.alive_s = float(alive_s)

    def __len__(self) -> int:
        with self._cv:
            return len(self._poses)

    def add(self, stamp: float, T_world_cam: np.ndarray) -> None:
        """Keep a pose (the oldest goes when full) and wake a lookup waiting for it."""
        with self._cv:
            self._poses.append((float(stamp), T_world_cam))
            self._cv.notify_all()

    def clear(self) -> None:
        with self._cv:
            self._poses.clear()

    def _behind(self, t: float, slop: float) -> bool:
        """The stream is alive but its newest pose is still older than ``t - slop`` (call with the lock held)."""
        stamps = sorted(p[0] for p in self._poses)
        if not stamps:
            return False
        # poses spaced too far apart for one to land within slop of the frame anyway: waiting would not help
        dense = len(stamps) < 3 or float(np.median(np.diff(stamps[-9:]))) <= 2.0 * slop
        return dense and t - self.alive_s < stamps[-1] < t - slop

    def lookup(self, t: float, *, slop_s: float) -> np.ndarray | None:
        """The pose within ``slop_s`` of ``t`` (the nearest), waiting up to ``wait_s`` for a lagging stream; None
        when there is none."""
        slop = max(float(slop_s), 1e-6)
        deadline = time.monotonic() + self.wait_s
        with self._cv:
            while True:
                best = min(self._poses, key=lambda p: abs(p[0] - t), default=None)
                left = deadline - time.monotonic()
                if (best is not None and abs(best[0] - t) <= slop) or not self._behind(t, slop) or left <= 0:
                    break
                self._cv.wait(left)
        if best is None or abs(best[0] - t) > slop:
            return None
        return best[1]
