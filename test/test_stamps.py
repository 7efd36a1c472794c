"""find_ros.stamps: the one builtin_interfaces/Time <-> nanoseconds / seconds implementation, and its ROS users."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from find_ros.stamps import NS_PER_S, ns_to_sec_nanosec, stamp_to_ns, stamp_to_s

_CASES = [(0, 0), (12, 500_000_000), (1_700_000_000, 123_456_789), (2**31 - 1, 999_999_999), (1, 1)]


@pytest.mark.parametrize("sec, nanosec", _CASES)
def test_stamp_to_ns_is_exact_and_inverts(sec, nanosec):
    ns = stamp_to_ns(SimpleNamespace(sec=sec, nanosec=nanosec))
    assert isinstance(ns, int) and ns == sec * NS_PER_S + nanosec
    assert ns_to_sec_nanosec(ns) == (sec, nanosec)
    assert all(type(v) is int for v in ns_to_sec_nanosec(ns))


@pytest.mark.parametrize("sec, nanosec", _CASES)
def test_stamp_to_s_is_sec_plus_nanosec(sec, nanosec):
    s = stamp_to_s(SimpleNamespace(sec=sec, nanosec=nanosec))
    assert s == sec + nanosec * 1e-9  # the formula every caller used, to the last bit
    assert s == pytest.approx(stamp_to_ns(SimpleNamespace(sec=sec, nanosec=nanosec)) / NS_PER_S, rel=1e-15)


def test_negative_and_float_nanoseconds_floor():
    assert ns_to_sec_nanosec(-1) == (-1, 999_999_999)
    assert ns_to_sec_nanosec(2.5e9) == (2, 500_000_000)


def test_ros_types_and_callers_share_it():
    pytest.importorskip("rclpy")
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from find_ros.ros import conversions as conv
    from find_ros.ros.pose_buffer import stamp_s
    from find_ros.sim.bag import stamp_ns

    assert conv.stamp_to_ns is stamp_to_ns and conv.stamp_to_s is stamp_to_s
    for sec, nanosec in _CASES:
        t = conv.stamp_from_ns(sec * NS_PER_S + nanosec)
        assert isinstance(t, Time) and (t.sec, t.nanosec) == (sec, nanosec)
        assert conv.stamp_to_ns(t) == sec * NS_PER_S + nanosec
        h = Header(stamp=t)
        assert stamp_s(h) == conv.stamp_to_s(t) == sec + nanosec * 1e-9
        assert stamp_ns(h) == conv.stamp_to_ns(t)
