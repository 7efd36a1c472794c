"""The perception node's camera side: subscriptions, arrival checks, stamp matching and camera poses.

Owned by the node (created at configure with its parameters and its ``count`` / ``warn`` callables):

- ``activate()`` subscribes colour, depth and camera_info (best effort by default, ``sensor_reliability``:
  :func:`find_ros.ros.qos.sensor_subscription_qos`) and the camera pose of ``camera_pose_source`` (``camera/pose``,
  ``camera/odom``, or ``tf``: tf2_ros where importable, else ``/tf`` + ``/tf_static`` into a
  :class:`find_ros.ros.tf_buffer.TfBuffer` with tf2's listener QoS), and builds the stamp matcher
  (``message_filters`` when importable, else :class:`find_ros.ros.sync.ApproximateSync`);
- each camera message is checked on arrival from its header (:func:`find_ros.ros.frame_checks.precheck`), dropped when
  stamped more than ``max_stamp_age_s`` ahead of the node clock (a colour frame also when that much older), then
  matched; a matched set goes to ``on_frame_set(color, depth, info)``. No callback raises: a bad message is counted
  (``invalid_input``, ``future``, ``stale``, ``out_of_order``, ``waiting_camera_info``) and warned about by kind;
- the worker asks :meth:`CameraInputs.lookup_pose` for the camera pose at a frame's stamp and
  :meth:`CameraInputs.is_stale` whether a set aged while it waited;
- ``deactivate()`` drops the subscriptions and the matcher.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from geometry_msgs.msg import Pose, PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image

from find_ros.ros import conversions as conv
from find_ros.ros.endpoints import destroy_endpoints
from find_ros.ros import frame_checks as checks
from find_ros.ros.frame_checks import FrameRejected
from find_ros.ros.pose_buffer import PoseBuffer
from find_ros.ros.qos import sensor_subscription_qos
from find_ros.ros.tf import (TF_QOS, TF_STATIC_QOS, TF_STATIC_TOPIC, TF_TOPIC, TfUnavailableError, add_tf_message,
                             tf_message_type, transform_to_matrix)
from find_ros.ros.tf_buffer import TfBuffer, TfLookupError
from find_ros.stamps import stamp_to_ns, stamp_to_s

try:  # message_filters is not installable from PyPI; use it where a ROS install provides it
    import message_filters as _mf
except ImportError:  # pragma: no cover - depends on the install
    _mf = None

try:  # camera_pose_source 'tf': tf2_ros where a ROS install provides it, else the TfBuffer fallback
    import tf2_ros as _tf2_ros
except ImportError:  # pragma: no cover - depends on the install
    _tf2_ros = None

__all__ = ["CameraInputs", "COLOR_TOPIC", "DEPTH_TOPIC", "INFO_TOPIC", "TF_FALLBACK_NEEDS", "tf_available"]

TF_FALLBACK_NEEDS = ("camera_pose_source='tf' without tf2_ros needs tf2_msgs to subscribe /tf, and it is not "
                     "importable here (a ROS install has it; in a venv, scripts/setup.sh builds the fallback in "
                     "interfaces/tf2_msgs); or use 'pose' (camera/pose) or 'odom' (camera/odom)")


def tf_available() -> bool:
    """``camera_pose_source: tf`` can work here: tf2_ros, or tf2_msgs for the :class:`TfBuffer` fallback."""
    return _tf2_ros is not None or tf_message_type() is not None

COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC = "camera/color/image_raw", "camera/depth/image_raw", "camera/color/camera_info"
_STREAMS = (("color", Image, COLOR_TOPIC), ("depth", Image, DEPTH_TOPIC), ("camera_info", CameraInfo, INFO_TOPIC))


class CameraInputs:
    """Camera subscriptions, checks, matching and poses of one node (see the module docstring)."""

    def __init__(self, *, node: Any, params: dict[str, Any], count: Callable[[str], None],
                 warn: Callable[..., None], on_frame_set: Callable[[Image, Image, CameraInfo], None]) -> None:
        self._node = node
        self._p = params
        self._count = count
        self._warn = warn
        self._on_frame_set = on_frame_set
        self._subs: list[Any] = []
        self._sync: Any = None
        self._mf_sync: Any = None
        self._mf_relays: dict | None = None
        self._tf_buffer: Any = None
        self._tf_listener: Any = None
        self._seen: set[str] = set()
        self.poses = PoseBuffer()  # camera poses by stamp (camera/pose, camera/odom)
        self.tf = TfBuffer()  # camera_pose_source 'tf' without tf2_ros: /tf and /tf_static (find_ros.ros.tf_buffer)

    # ------------------------------------------------------------------ lifecycle
    def activate(self) -> None:
        """Forget earlier streams and poses; build the matcher; subscribe the camera and its pose."""
        self._seen.clear()
        self.poses.clear()
        n = self._node
        if _mf is not None:  # relays: only messages that passed the arrival checks reach the synchroniser
            self._mf_relays = {k: _mf.SimpleFilter() for k, _, _ in _STREAMS}
            self._mf_sync = _mf.ApproximateTimeSynchronizer(
                [self._mf_relays[k] for k, _, _ in _STREAMS], 2, max(self._p["sync_slop_s"], 1e-6))
            self._mf_sync.registerCallback(self._on_frame_set)
        else:
            from find_ros.ros.sync import ApproximateSync

            self._sync = ApproximateSync(slop_s=self._p["sync_slop_s"], callback=lambda m: self._on_frame_set(
                m["color"], m["depth"], m["camera_info"]))
        # best effort by default: matches best-effort (SensorDataQoS) and reliable cameras (find_ros.ros.qos)
        qos = sensor_subscription_qos(self._p["sensor_reliability"])
        for stream, mtype, topic in _STREAMS:
            self._subs.append(n.create_subscription(mtype, topic, lambda m, s=stream: self._on_input(s, m), qos))
        src = self._p["camera_pose_source"]
        if src == "pose":
            self._subs.append(n.create_subscription(PoseStamped, "camera/pose",
                                                    lambda m: self._store_pose(m.header, m.pose), qos))
        elif src == "odom":
            self._subs.append(n.create_subscription(Odometry, "camera/odom",
                                                    lambda m: self._store_pose(m.header, m.pose.pose), qos))
        elif src == "tf" and _tf2_ros is not None:  # pragma: no cover - tf2_ros is not installable here
            self._tf_buffer = _tf2_ros.Buffer()
            self._tf_listener = _tf2_ros.TransformListener(self._tf_buffer, n)
        elif src == "tf":  # the fallback: /tf and /tf_static into a TfBuffer, with tf2's listener QoS
            TFMessage = tf_message_type()
            if TFMessage is None:
                raise TfUnavailableError(TF_FALLBACK_NEEDS)
            self.tf.clear()
            self._subs.append(n.create_subscription(TFMessage, TF_TOPIC, lambda m: self._store_tf(m, False), TF_QOS))
            self._subs.append(n.create_subscription(TFMessage, TF_STATIC_TOPIC, lambda m: self._store_tf(m, True),
                                                    TF_STATIC_QOS))

    def deactivate(self) -> None:
        """Drop the subscriptions, the matcher and the tf listener (any state, repeatedly)."""
        destroy_endpoints(self._node, subscriptions=self._subs)
        self._subs = []
        self._sync = self._mf_sync = self._mf_relays = None
        self._tf_listener = self._tf_buffer = None

    # ------------------------------------------------------------------ arrival
    def _on_input(self, stream: str, msg: Any) -> None:
        """Subscription callback of colour / depth / camera_info: never raises (that would stop the executor)."""
        try:
            self._take_input(stream, msg)
        except FrameRejected as e:
            self._count("invalid_input")
            self._warn(e.kind, str(e))
        except Exception as e:  # noqa: BLE001 - whatever the message, the node keeps running
            self._count("invalid_input")
            self._warn("input_error", f"{stream} message dropped: {type(e).__name__}: {e}", level="error")

    def _take_input(self, stream: str, msg: Any) -> None:
        if stream == "color":
            self._count("frames_in")
        checks.precheck(stream, msg, max_pixels=self._p["max_image_pixels"])  # header only: cheap for any size
        if self._is_future(stream, msg):
            return
        self._seen.add(stream)
        if stream == "color":
            missing = [s for s in ("depth", "camera_info") if s not in self._seen]
            if "camera_info" in missing:
                self._count("waiting_camera_info")
            if missing:
                self._warn(f"missing_{'_'.join(missing)}",
                           f"colour frames arrive but no {' and no '.join(missing)} has been received yet "
                           f"(topics {DEPTH_TOPIC}, {INFO_TOPIC}): frames wait")
        if stream == "color" and self.is_stale(msg):
            return
        if self._mf_relays is not None:  # message_filters (a ROS install): its exceptions land in _on_input
            self._mf_relays[stream].signalMessage(msg)
        elif self._sync is not None:
            before = self._sync.discarded
            self._sync.add(stream, stamp_to_s(msg.header.stamp), msg)
            if self._sync.discarded > before:
                self._count("out_of_order")
                self._warn("out_of_order", f"{stream} message stamped {stamp_to_s(msg.header.stamp):.3f} is not "
                                           "newer than the last matched frame set: dropped (clock jump or replay restart?)")

    def _now_s(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def _is_future(self, stream: str, msg: Any) -> bool:
        """Drop (counted, logged) a message stamped more than max_stamp_age_s ahead of the node clock: it would
        otherwise be matched and make every later, correctly stamped frame look out of order."""
        ahead = checks.seconds_ahead(stamp_to_s(msg.header.stamp), self._now_s(), self._p["max_stamp_age_s"])
        if ahead is None:
            return False
        self._count("future")
        self._warn("future_stamp", f"{stream} message stamped {ahead:.2f} s in the future (> max_stamp_age_s="
                                   f"{self._p['max_stamp_age_s']}): dropped; check clocks / use_sim_time")
        return True

    def is_stale(self, color: Image) -> bool:
        """Drop (counted, logged) a colour frame older than max_stamp_age_s; 0 disables the check."""
        age = checks.seconds_stale(stamp_to_s(color.header.stamp), self._now_s(), self._p["max_stamp_age_s"])
        if age is None:
            return False
        self._count("stale")
        self._warn("stale_frame", f"frame {age:.2f} s old (> max_stamp_age_s={self._p['max_stamp_age_s']}): "
                                  "dropped; check clocks / use_sim_time")
        return True

    # ------------------------------------------------------------------ camera pose
    def _store_pose(self, header: Any, pose: Pose) -> None:
        try:
            T = conv.pose_to_matrix(pose)
        except conv.ConversionError as e:  # NaN position, zero quaternion: never raise in a callback
            self._count("invalid_input")
            self._warn("pose_invalid", f"camera pose dropped: {e}")
            return
        if header.frame_id and header.frame_id != self._p["world_frame"]:
            self._warn("pose_frame", f"camera pose is in frame {header.frame_id!r} but world_frame is "
                                     f"{self._p['world_frame']!r}; using it as the world frame")
        self.poses.add(stamp_to_s(header.stamp), T)

    def _store_tf(self, msg: Any, static: bool) -> None:
        """``/tf`` / ``/tf_static`` callback of the fallback: never raises; refused transforms are counted."""
        try:
            refused = add_tf_message(self.tf, msg, static=static)
        except Exception as e:  # noqa: BLE001 - whatever the message, the node keeps running
            refused = [f"{type(e).__name__}: {e}"]
        for line in refused:
            self._count("invalid_input")
            self._warn("tf_invalid", f"transform dropped: {line}")

    def lookup_pose(self, color: Image) -> np.ndarray | None:
        """T_world_cam at the colour frame's stamp (within ``sync_slop_s``), None without one (warned)."""
        src = self._p["camera_pose_source"]
        if src == "none":
            return None
        t = stamp_to_s(color.header.stamp)
        if src == "tf" and self._tf_buffer is not None:  # pragma: no cover - tf2_ros is not installable here
            try:
                tr = self._tf_buffer.lookup_transform(self._p["world_frame"], color.header.frame_id,
                                                      color.header.stamp)
            except Exception as e:
                self._warn("pose_missing", f"no tf {self._p['world_frame']} -> {color.header.frame_id}: {e}")
                return None
            return transform_to_matrix(tr)
        if src == "tf":
            try:
                return self.tf.lookup(self._p["world_frame"], color.header.frame_id, stamp_to_ns(color.header.stamp),
                                      slop_ns=int(self._p["sync_slop_s"] * 1e9))
            except TfLookupError as e:
                self._warn("pose_missing", f"{e}: grounded without world poses")
                return None
        T = self.poses.lookup(t, slop_s=self._p["sync_slop_s"])
        if T is None:
            self._warn("pose_missing", f"no camera pose within sync_slop_s={self._p['sync_slop_s']} of the "
                                       f"frame at t={t:.3f}: grounded without world poses")
        return T
