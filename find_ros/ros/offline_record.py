"""The recording side of a ``find-ros run``: the node's output topics, the output bag's typestore (with
find_ros's own ``.msg`` definitions) and :class:`OutputRecorder`, which writes each output message into the
output rosbag2 as it arrives."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from find_ros.ros.offline_plan import RunError
from find_ros.sim.bag import default_typestore
from find_ros.stamps import stamp_to_ns

__all__ = ["OUTPUT_TOPICS", "FIELD_TOPIC", "find_ros_msg_dir", "output_typestore", "qos_record", "OutputRecorder"]

#: Output topic -> (message type name, transient local): what the run records.
OUTPUT_TOPICS: dict[str, tuple[str, bool]] = {
    "/find/grounding": ("find_ros/msg/Grounding", False),
    "/find/mask": ("sensor_msgs/msg/Image", False),
    "/find/overlay": ("sensor_msgs/msg/Image", False),
    "/find/target_pose": ("geometry_msgs/msg/PoseStamped", False),
    "/find/target_pose_world": ("geometry_msgs/msg/PoseStamped", False),
    "/find/markers": ("visualization_msgs/msg/MarkerArray", False),
}
FIELD_TOPIC = ("/find/field/cloud", ("sensor_msgs/msg/PointCloud2", True))
_FIND_ROS_MSGS = ("GroundedEntity", "Grounding", "InterleavedInstruction")


def find_ros_msg_dir() -> Path:
    """The folder of find_ros's ``.msg`` files: the install's ``share/find_ros/msg`` (ament prefixes, this
    interpreter's prefix) or the source checkout's ``msg/``."""
    candidates = [Path(p) / "share" / "find_ros" / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(
        os.pathsep) if p]
    candidates += [Path(sys.prefix) / "share" / "find_ros" / "msg", Path(__file__).resolve().parents[2] / "msg"]
    for c in candidates:
        if all((c / f"{name}.msg").is_file() for name in _FIND_ROS_MSGS):
            return c
    raise RunError("find_ros message definitions (Grounding.msg, ...) not found in "
                   + ", ".join(str(c) for c in candidates))


def output_typestore() -> Any:
    """The standard ROS 2 typestore plus find_ros's messages (from their ``.msg`` files)."""
    from rosbags.typesys import get_types_from_msg

    store = default_typestore()
    d = find_ros_msg_dir()
    types: dict = {}
    for name in _FIND_ROS_MSGS:
        types.update(get_types_from_msg((d / f"{name}.msg").read_text(), f"find_ros/msg/{name}"))
    store.register(types)
    return store


def qos_record(transient_local: bool) -> Any:
    """The offered QoS noted in the output bag: the node's OUTPUT_QOS (reliable, keep last 10, volatile), or
    LATCHED_QOS (keep last 1, transient local) for the field cloud."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    forever = QosTime(9223372036, 854775807)
    return Qos(QosHistory.KEEP_LAST, 1 if transient_local else 10, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE, forever, forever,
               QosLiveliness.AUTOMATIC, forever, False)



class OutputRecorder:
    """Subscribes to the node's outputs and writes each message into the output bag as it arrives (executor
    thread), recorded at its header stamp when that is a frame's recorded stamp (every per-frame output), else
    (the field cloud, stamped by the node's clock) at the latest frame's stamp, so the bag spans the input's time."""

    def __init__(self, node: Any, writer: Any, typestore: Any, topics: dict[str, tuple[str, bool]]) -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from find_ros.msg import Grounding

        classes = {"find_ros/msg/Grounding": Grounding, "sensor_msgs/msg/Image": Image,
                   "geometry_msgs/msg/PoseStamped": PoseStamped, "visualization_msgs/msg/MarkerArray": MarkerArray,
                   "sensor_msgs/msg/PointCloud2": PointCloud2}
        self.writer = writer
        self.counts: dict[str, int] = {t: 0 for t in topics}
        self.groundings: list[dict] = []
        self.last_stamp_ns = 0
        self.frame_stamps: set[int] = set()
        self._conns: dict[str, Any] = {}
        self._subs = []
        for topic, (mtype, latched) in topics.items():
            self._conns[topic] = writer.add_connection(topic, mtype, typestore=typestore,
                                                       offered_qos_profiles=[qos_record(latched)])
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1 if latched else 100,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self._subs.append(node.create_subscription(classes[mtype], topic.lstrip("/"),
                                                       lambda m, t=topic: self._on(t, m), qos))

    def _on(self, topic: str, msg: Any) -> None:
        from rclpy.serialization import serialize_message

        header = getattr(msg, "header", None)
        if header is None and getattr(msg, "markers", None):
            header = msg.markers[0].header
        stamp = 0 if header is None else stamp_to_ns(header.stamp)
        if stamp not in self.frame_stamps:
            stamp = self.last_stamp_ns
        self.writer.write(self._conns[topic], stamp, serialize_message(msg))
        self.counts[topic] += 1
        if topic == "/find/grounding":
            self.groundings.append({"stamp_ns": stamp, "instruction_id": msg.instruction_id,
                                    "found": [bool(e.found) for e in msg.entities],
                                    "phrases": [e.phrase for e in msg.entities],
                                    "processing_ms": float(msg.processing_ms)})

