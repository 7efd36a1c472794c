"""Camera transforms on ``/tf``: TransformStamped / TFMessage building, and the ``/tf`` publisher of a camera node.

A real camera stack publishes the camera's transform on ``/tf``; the sim camera and the replay node do the same
through :class:`find_ros.ros.sim_camera_node.RgbdPublisher`: ``world_frame -> optical frame`` with each frame's
stamp, next to the ``camera/pose`` / ``camera/odom`` topics (which stay). So RViz with Fixed Frame ``map`` (and any
tf2 listener) places the camera and the optical-frame outputs.

``tf2_msgs`` is imported lazily: a ROS install has it; a venv of PyPI ROS wheels gets the TFMessage-only fallback
in ``interfaces/tf2_msgs`` from ``scripts/setup.sh``. Where it is not importable, :func:`create_tf_publisher`
logs one line saying so and returns None (the pose topics still carry the camera pose).

Listening (the ``camera_pose_source: tf`` fallback where tf2_ros is not importable): :func:`add_tf_message` puts a
``/tf`` or ``/tf_static`` message into a :class:`find_ros.ros.tf_buffer.TfBuffer`; the subscriptions use tf2's
listener QoS (:data:`TF_QOS`, :data:`TF_STATIC_QOS`).

The building functions are pure (message types only); :func:`create_tf_publisher` takes the node.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped, Vector3
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

from find_ros.ros import conversions as conv
from find_ros.ros.tf_buffer import TfBuffer, TfInputError
from find_ros.stamps import stamp_to_ns

__all__ = ["TF_TOPIC", "TF_QOS", "TF_STATIC_TOPIC", "TF_STATIC_QOS", "TfUnavailableError", "tf_message_type",
           "transform_stamped", "tf_message", "transform_to_matrix", "create_tf_publisher", "add_tf_message"]

TF_TOPIC = "/tf"
"""The dynamic transform topic (absolute, as tf2 uses it: a namespaced robot remaps it)."""

TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
"""tf2_ros's ``DynamicBroadcasterQoS``: reliable, keep last 100, volatile (what tf2 listeners and RViz expect); also
its ``DynamicListenerQoS``, the subscription of the ``/tf`` fallback listener."""

TF_STATIC_TOPIC = "/tf_static"
"""The static transform topic (latched: transient local)."""

TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""tf2_ros's ``StaticListenerQoS``: reliable, keep last 100, transient local (a late subscriber gets the static
transforms published before it)."""


class TfUnavailableError(ImportError):
    """``tf2_msgs`` is not importable here (no ROS install, and the fallback of scripts/setup.sh not built)."""


def tf_message_type() -> type | None:
    """``tf2_msgs.msg.TFMessage``, or None when tf2_msgs is not importable."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


def transform_stamped(T_parent_child: np.ndarray, *, stamp: Time, parent_frame: str,
                      child_frame: str) -> TransformStamped:
    """The transform ``parent_frame -> child_frame`` (child points into the parent frame: ``p_parent = T p_child``).

    For a camera: ``T_world_cam`` with ``parent_frame`` the world frame and ``child_frame`` the optical frame.
    Raises :class:`find_ros.ros.conversions.ConversionError` for a non-finite or non-rigid ``T_parent_child`` and
    ``ValueError`` for an empty or equal frame name (tf2 rejects both).
    """
    if not parent_frame or not child_frame or parent_frame == child_frame:
        raise ValueError(f"a transform needs two different, non-empty frames; got parent {parent_frame!r} and "
                         f"child {child_frame!r}")
    pose = conv.matrix_to_pose(T_parent_child)
    p, q = pose.position, pose.orientation
    return TransformStamped(
        header=Header(stamp=stamp, frame_id=parent_frame), child_frame_id=child_frame,
        transform=Transform(translation=Vector3(x=p.x, y=p.y, z=p.z),
                            rotation=Quaternion(x=q.x, y=q.y, z=q.z, w=q.w)))


def tf_message(transforms: Sequence[TransformStamped]) -> Any:
    """A ``tf2_msgs/TFMessage`` holding ``transforms``; raises :class:`TfUnavailableError` without tf2_msgs."""
    TFMessage = tf_message_type()
    if TFMessage is None:
        raise TfUnavailableError("tf2_msgs is not importable: no TFMessage (install ROS 2's tf2_msgs, or run "
                                 "scripts/setup.sh, which builds the fallback in interfaces/tf2_msgs)")
    return TFMessage(transforms=list(transforms))


def transform_to_matrix(t: TransformStamped | Transform) -> np.ndarray:
    """4x4 float64 matrix of a (stamped) transform: the inverse of :func:`transform_stamped`'s conversion."""
    tr = t.transform if isinstance(t, TransformStamped) else t
    v, q = tr.translation, tr.rotation
    return conv.pose_to_matrix(Pose(position=Point(x=v.x, y=v.y, z=v.z), orientation=q))


def create_tf_publisher(node: Any) -> Any | None:
    """A ``/tf`` publisher (:data:`TF_QOS`) on ``node``; None, with one info line in the node's log, when tf2_msgs
    is not importable."""
    TFMessage = tf_message_type()
    if TFMessage is None:
        node.get_logger().info(
            "not publishing the camera transform on /tf: tf2_msgs is not importable (a ROS install has it; in a "
            "venv, scripts/setup.sh builds the fallback in interfaces/tf2_msgs); camera/pose still carries it")
        return None
    return node.create_publisher(TFMessage, TF_TOPIC, TF_QOS)


def add_tf_message(buffer: TfBuffer, msg: Any, *, static: bool) -> list[str]:
    """Put every transform of a ``TFMessage`` into ``buffer``; returns one line per transform refused (empty or equal
    frames, non-finite values, a full tree), the others are kept."""
    refused = []
    for t in msg.transforms:
        v, q = t.transform.translation, t.transform.rotation
        try:
            buffer.add(t.header.frame_id, t.child_frame_id, stamp_to_ns(t.header.stamp), (v.x, v.y, v.z),
                       (q.x, q.y, q.z, q.w), static=static)
        except TfInputError as e:
            refused.append(str(e))
    return refused
