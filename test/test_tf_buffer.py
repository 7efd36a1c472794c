"""find_ros.ros.tf_buffer (pure, no rclpy): chains, static + timed edges, interpolation, errors, bounded memory."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from find_ros.geometry import matrix_to_pose, pose_to_matrix
from find_ros.ros.tf_buffer import TfBuffer, TfInputError, TfLookupError, slerp

S = 1_000_000_000  # ns per s


def _T(yaw: float = 0.0, t=(0.0, 0.0, 0.0)) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def _add(buf: TfBuffer, parent: str, child: str, stamp_ns: int, T: np.ndarray, *, static: bool = False) -> None:
    p, q = matrix_to_pose(T)
    buf.add(parent, child, stamp_ns, p, q, static=static)


OPTICAL_IN_LINK = np.array([[0.0, 0, 1, 0.02], [-1, 0, 0, 0.0], [0, -1, 0, 0.0], [0, 0, 0, 1]])


def _robot(buf: TfBuffer, stamps=(10, 11, 12)) -> None:
    """map -> odom (timed) -> base_link (timed) -> camera_link (static) -> camera_color_optical_frame (static)."""
    for k in stamps:
        _add(buf, "map", "odom", k * S, _T(0.0, (0.1 * k, 0.0, 0.0)))
        _add(buf, "odom", "base_link", k * S, _T(0.1 * k, (k, 2.0, 0.0)))
    _add(buf, "base_link", "camera_link", 0, _T(0.0, (0.3, 0.0, 1.2)), static=True)
    _add(buf, "/camera_link", "camera_color_optical_frame", 0, OPTICAL_IN_LINK, static=True)


def _expected(k: float) -> np.ndarray:
    return _T(0.0, (0.1 * k, 0, 0)) @ _T(0.1 * k, (k, 2.0, 0)) @ _T(0.0, (0.3, 0, 1.2)) @ OPTICAL_IN_LINK


def test_a_chain_of_timed_and_static_edges_composes_at_the_stamp():
    buf = TfBuffer()
    _robot(buf)
    np.testing.assert_allclose(buf.lookup("map", "camera_color_optical_frame", 11 * S), _expected(11), atol=1e-12)
    # the target need not be the root: odom -> optical, and the inverse direction
    T_odom = _T(0.1 * 11, (11, 2.0, 0)) @ _T(0.0, (0.3, 0, 1.2)) @ OPTICAL_IN_LINK
    np.testing.assert_allclose(buf.lookup("odom", "camera_color_optical_frame", 11 * S), T_odom, atol=1e-12)
    np.testing.assert_allclose(buf.lookup("camera_color_optical_frame", "/map", 11 * S), np.linalg.inv(_expected(11)),
                               atol=1e-12)
    # siblings through their common ancestor; a frame to itself is the identity
    _add(buf, "base_link", "lidar", 0, _T(0.0, (0.0, 0.0, 2.0)), static=True)
    np.testing.assert_allclose(buf.lookup("lidar", "camera_link", 11 * S), _T(0.0, (0.3, 0.0, -0.8)), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "map", 0), np.eye(4))


def test_between_two_samples_translation_is_interpolated_and_rotation_slerped():
    buf = TfBuffer()
    _add(buf, "map", "cam", 10 * S, _T(0.0, (0.0, 0.0, 0.0)))
    _add(buf, "map", "cam", 12 * S, _T(1.0, (2.0, -4.0, 6.0)))
    T = buf.lookup("map", "cam", 11 * S + S // 2)  # 3/4 of the way
    np.testing.assert_allclose(T, _T(0.75, (1.5, -3.0, 4.5)), atol=1e-12)
    q = slerp(np.array([0, 0, 0, 1.0]), -matrix_to_pose(_T(0.5))[1], 0.5)  # the shorter arc, whatever the sign
    np.testing.assert_allclose(pose_to_matrix(np.zeros(3), q), _T(0.25), atol=1e-12)


def test_outside_the_span_the_nearest_end_counts_within_slop_else_a_clear_error():
    buf = TfBuffer(wait_s=0.0)
    _robot(buf)
    np.testing.assert_allclose(buf.lookup("map", "camera_color_optical_frame", 12 * S + S // 100, slop_ns=S // 50),
                               _expected(12), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "camera_color_optical_frame", 10 * S - S // 100, slop_ns=S // 50),
                               _expected(10), atol=1e-12)
    with pytest.raises(TfLookupError, match=r"no transform map -> camera_color_optical_frame at t=13\.000: edge "
                                            r"odom -> base_link has 3 samples over \[10\.000, 12\.000\], 1\.000 s into the "
                                            r"future") as e:
        buf.lookup("map", "camera_color_optical_frame", 13 * S, slop_ns=S // 50)
    assert e.value.kind == "extrapolation"
    with pytest.raises(TfLookupError, match="into the past") as e:  # a stale stamp, older than the buffer
        buf.lookup("map", "camera_color_optical_frame", 5 * S, slop_ns=S // 50)
    assert e.value.kind == "extrapolation"


def test_missing_frames_and_edges_name_the_frames():
    buf = TfBuffer(wait_s=0.0)
    _robot(buf)
    with pytest.raises(TfLookupError, match=r"no transform map -> camera_depth_frame: frame 'camera_depth_frame' "
                                            r"has never been received") as e:
        buf.lookup("map", "camera_depth_frame", 11 * S)
    assert e.value.kind == "unknown_frame"
    _add(buf, "world", "other", 11 * S, _T())
    with pytest.raises(TfLookupError, match=r"no transform other -> camera_color_optical_frame: the frames are in "
                                            r"different trees \(roots 'world' and 'map'\)") as e:
        buf.lookup("other", "camera_color_optical_frame", 11 * S)
    assert e.value.kind == "not_connected"
    with pytest.raises(TfLookupError, match="never been received"):
        TfBuffer().lookup("map", "cam", 0)


def test_static_edges_hold_for_any_stamp_and_a_reparented_child_forgets_its_history():
    buf = TfBuffer(wait_s=0.0)
    _add(buf, "map", "cam", 0, _T(0.3, (1, 2, 3)), static=True)
    for t in (0, 5 * S, 10**6 * S):
        np.testing.assert_allclose(buf.lookup("map", "cam", t), _T(0.3, (1, 2, 3)), atol=1e-12)
    _add(buf, "odom", "cam", 7 * S, _T(0.0, (9, 0, 0)))  # now a timed edge under another parent
    assert buf.frames() == {"odom", "cam"} and len(buf) == 1
    np.testing.assert_allclose(buf.lookup("odom", "cam", 7 * S), _T(0.0, (9, 0, 0)), atol=1e-12)
    with pytest.raises(TfLookupError, match="frame 'map' has never been received"):
        buf.lookup("map", "cam", 7 * S)


def test_memory_is_bounded_per_edge_by_count_and_cache_time_and_in_edges():
    buf = TfBuffer(cache_s=2.0, max_per_edge=50, max_edges=3, wait_s=0.0)
    for i in range(1000):  # 100 Hz for 10 s, out of order in pairs
        k = i ^ 1
        _add(buf, "map", "cam", k * S // 100, _T(0.0, (k, 0, 0)))
    assert len(buf) == 50  # the newest 50 (count bound below the 2 s cache)
    np.testing.assert_allclose(buf.lookup("map", "cam", 999 * S // 100)[:3, 3], (999, 0, 0))
    with pytest.raises(TfLookupError, match="into the past"):
        buf.lookup("map", "cam", 949 * S // 100)
    buf = TfBuffer(cache_s=2.0, max_per_edge=1000, max_edges=3, wait_s=0.0)
    for k in range(100):  # 10 Hz for 10 s: the cache time bounds it (2 s behind the newest)
        _add(buf, "map", "cam", k * S // 10, _T())
    assert len(buf) == 21
    _add(buf, "map", "a", 0, _T())
    _add(buf, "map", "b", 0, _T())
    with pytest.raises(TfInputError, match="max_edges=3"):
        _add(buf, "map", "c", 0, _T())
    _add(buf, "map", "cam", 200 * S, _T())  # an existing edge still takes new samples


@pytest.mark.parametrize("parent, child, t, q, match", [
    ("map", "map", (0, 0, 0), (0, 0, 0, 1), "two different, non-empty frames"),
    ("", "cam", (0, 0, 0), (0, 0, 0, 1), "two different, non-empty frames"),
    ("map", "cam", (np.nan, 0, 0), (0, 0, 0, 1), r"map -> cam is unusable: translation \[nan"),
    ("map", "cam", (0, 0, 0), (0, 0, 0, 0), r"quaternion \[0\.0, 0\.0, 0\.0, 0\.0\]"),
])
def test_bad_transforms_are_refused_with_the_values(parent, child, t, q, match):
    buf = TfBuffer()
    with pytest.raises(TfInputError, match=match):
        buf.add(parent, child, 0, t, q)
    assert len(buf) == 0


def test_a_lookup_waits_briefly_for_a_lagging_edge():
    """The transform is published just after the image: the lookup waits (wait_s) for it instead of failing."""
    buf = TfBuffer(wait_s=2.0)
    _add(buf, "map", "cam", 10 * S + S // 2, _T())  # the edge is alive: its newest sample within alive_s (1 s)
    threading.Timer(0.2, lambda: _add(buf, "map", "cam", 11 * S, _T(0.0, (1, 0, 0)))).start()
    t0 = time.monotonic()
    T = buf.lookup("map", "cam", 11 * S)
    assert 0.1 < time.monotonic() - t0 < 1.5 and T[0, 3] == 1.0
    # a stopped edge (newest sample older than alive_s before the stamp): no waiting
    t0 = time.monotonic()
    with pytest.raises(TfLookupError, match="into the future"):
        buf.lookup("map", "cam", 20 * S)
    assert time.monotonic() - t0 < 0.5
