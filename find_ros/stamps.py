"""``builtin_interfaces/Time`` stamps <-> integer nanoseconds and float seconds: the one implementation.

Typed on the two fields every stamp has (:class:`Stamp`), so rclpy messages (the ros layer, through
:mod:`find_ros.ros.conversions`) and rosbags messages (:mod:`find_ros.sim.bag`) share it; building an rclpy
``Time`` from nanoseconds is :func:`find_ros.ros.conversions.stamp_from_ns`. Like :mod:`find_ros.instruction` it
imports nothing of the package, so any layer may use it.
"""
from __future__ import annotations

from typing import Protocol

__all__ = ["NS_PER_S", "Stamp", "stamp_to_ns", "stamp_to_s", "ns_to_sec_nanosec"]

NS_PER_S = 1_000_000_000
"""Nanoseconds per second."""


class Stamp(Protocol):
    """What ``builtin_interfaces/Time`` (rclpy or rosbags) has: whole seconds and nanoseconds."""

    sec: int
    nanosec: int


def stamp_to_ns(stamp: Stamp) -> int:
    """Integer nanoseconds of a stamp (exact)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def stamp_to_s(stamp: Stamp) -> float:
    """Seconds of a stamp as a float (``sec + nanosec * 1e-9``)."""
    return stamp.sec + stamp.nanosec * 1e-9


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of ``ns`` nanoseconds, ``0 <= nanosec < 1e9`` (floor division, so negative times too)."""
    return int(ns // NS_PER_S), int(ns % NS_PER_S)
