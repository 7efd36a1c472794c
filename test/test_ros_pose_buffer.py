"""find_ros.ros.pose_buffer: camera poses by stamp, looked up for a frame (pure; real geometry_msgs / nav_msgs)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.pose_buffer import POSE_BUFFER, PoseBuffer, stamp_s  # noqa: E402


def _T(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def test_stamp_s_of_a_header():
    assert stamp_s(Header(stamp=Time(sec=12, nanosec=500_000_000))) == pytest.approx(12.5)


def test_nearest_pose_within_slop():
    b = PoseBuffer(wait_s=0.0)
    assert b.lookup(1.0, slop_s=0.05) is None  # empty
    for k in range(5):
        b.add(1.0 + 0.1 * k, _T(k))
    assert len(b) == 5
    assert b.lookup(1.21, slop_s=0.05)[0, 3] == 2  # nearest: 1.2
    assert b.lookup(1.34, slop_s=0.05)[0, 3] == 3
    assert b.lookup(1.65, slop_s=0.05) is None  # nearest is 0.25 s away
    assert b.lookup(1.0, slop_s=0.0)[0, 3] == 0  # a zero slop still matches an exact stamp
    b.clear()
    assert len(b) == 0 and b.lookup(1.0, slop_s=1.0) is None


def test_bounded_newest_kept():
    b = PoseBuffer(wait_s=0.0)
    for k in range(POSE_BUFFER + 10):
        b.add(float(k), _T(k))
    assert len(b) == POSE_BUFFER
    assert b.lookup(5.0, slop_s=0.1) is None  # dropped
    assert b.lookup(float(POSE_BUFFER + 9), slop_s=0.1)[0, 3] == POSE_BUFFER + 9


def test_odometry_pose_through_conversions():
    """What the camera/odom callback stores: the Odometry header stamp and its pose as a matrix."""
    msg = Odometry(header=Header(stamp=Time(sec=3, nanosec=0), frame_id="odom"))
    msg.pose.pose.position.x, msg.pose.pose.orientation.w = 1.5, 1.0
    b = PoseBuffer(wait_s=0.0)
    b.add(stamp_s(msg.header), conv.pose_to_matrix(msg.pose.pose))
    assert b.lookup(3.0, slop_s=0.01)[0, 3] == pytest.approx(1.5)


def test_lagging_stream_is_waited_for():
    """A dense, live stream just behind the frame: the lookup waits (bounded) until the frame's pose arrives."""
    b = PoseBuffer(wait_s=2.0)
    for k in range(5):
        b.add(10.0 + 0.02 * k, _T(k))  # newest 10.08, frame at 10.2: behind by more than the slop
    late = threading.Timer(0.2, lambda: b.add(10.2, _T(99)))
    late.start()
    try:
        t0 = time.monotonic()
        T = b.lookup(10.2, slop_s=0.01)
        waited = time.monotonic() - t0
    finally:
        late.cancel()
        late.join()
    assert T is not None and T[0, 3] == 99 and 0.1 < waited < 1.9


def test_no_wait_for_a_stopped_sparse_or_absent_stream():
    for stamps, t in (([0.0, 0.02, 0.04], 10.0),  # newest older than alive_s: stopped
                      ([9.0, 9.5, 9.9], 10.0),  # 0.5 s apart: none would land within the slop
                      ([], 10.0)):  # no pose at all
        b = PoseBuffer(wait_s=1.0)
        for s in stamps:
            b.add(s, _T(s))
        t0 = time.monotonic()
        assert b.lookup(t, slop_s=0.01) is None
        assert time.monotonic() - t0 < 0.5, stamps


def test_wait_is_bounded():
    b = PoseBuffer(wait_s=0.15)
    for k in range(5):
        b.add(10.0 + 0.02 * k, _T(k))
    t0 = time.monotonic()
    assert b.lookup(10.2, slop_s=0.01) is None
    assert 0.1 < time.monotonic() - t0 < 1.0
