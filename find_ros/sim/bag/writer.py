"""Writing RGB-D streams as rosbag2 recordings with ``rosbags``: :class:`RgbdBagWriter`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from find_ros.sim.bag.config import CAMERA_INFO_TYPE, IMAGE_TYPE, POSE_TYPES, TF_TYPE, BagConfig, topic_name
from find_ros.sim.bag.decode import default_typestore, matrix_to_pose
from find_ros.stamps import ns_to_sec_nanosec

__all__ = ["RgbdBagWriter"]


class RgbdBagWriter:
    """Write an RGB-D stream as a rosbag2 (``storage`` sqlite3 or mcap, format version 9) with the ``rosbags``
    writer: colour (rgb8), depth (16UC1 mm or 32FC1 m), camera_info and optionally the camera pose as
    PoseStamped (``pose="pose"``), Odometry (``"odom"``) or ``/tf`` (``"tf"``: ``world_frame`` -> ``frame_id``).
    ``reliability`` is recorded as the topics' offered QoS (``reliable`` or ``best_effort``, keep last 1,
    volatile), as a recorder notes the camera's QoS. A context manager; :meth:`write_raw` adds arbitrary bytes
    on a topic (tests use it to put malformed messages in)."""

    def __init__(self, path: str | Path, *, storage: str = "sqlite3", reliability: str = "reliable",
                 pose: str | None = "pose", depth_encoding: str = "16UC1", config: BagConfig | None = None,
                 frame_id: str = "camera_color_optical_frame", world_frame: str = "map") -> None:
        from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                        QosTime)
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in ("sqlite3", "mcap"):
            raise ValueError(f"storage must be sqlite3 or mcap, got {storage!r}")
        if reliability not in ("reliable", "best_effort"):
            raise ValueError(f"reliability must be reliable or best_effort, got {reliability!r}")
        if pose not in (None, "pose", "odom", "tf"):
            raise ValueError(f"pose must be None, 'pose', 'odom' or 'tf', got {pose!r}")
        if depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got {depth_encoding!r}")
        cfg = config or BagConfig()
        self.typestore = default_typestore()
        self.depth_encoding, self.frame_id, self.world_frame, self.pose = depth_encoding, frame_id, world_frame, pose
        rel = QosReliability.RELIABLE if reliability == "reliable" else QosReliability.BEST_EFFORT
        forever = QosTime(9223372036, 854775807)  # what ROS 2 records for "infinite"
        qos = [Qos(QosHistory.KEEP_LAST, 1, rel, QosDurability.VOLATILE, forever, forever, QosLiveliness.AUTOMATIC,
                   forever, False)]
        self._writer = Writer(Path(path), version=9,
                              storage_plugin=StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP)
        self._writer.open()
        self.connections: dict[str, Any] = {}
        topics = {"color": (cfg.color_topic, IMAGE_TYPE), "depth": (cfg.depth_topic, IMAGE_TYPE),
                  "camera_info": (cfg.camera_info_topic, CAMERA_INFO_TYPE)}
        if pose == "pose":
            topics["pose"] = ("/camera/pose" if cfg.pose_topic == "auto" else cfg.pose_topic, POSE_TYPES[0])
        elif pose == "odom":
            topics["pose"] = ("/camera/odom" if cfg.pose_topic == "auto" else cfg.pose_topic, POSE_TYPES[2])
        elif pose == "tf":
            topics["pose"] = ("/tf" if cfg.pose_topic in ("auto", "") else cfg.pose_topic, TF_TYPE)
        for stream, (topic, msgtype) in topics.items():
            self.connections[stream] = self._writer.add_connection(
                topic_name(topic), msgtype, typestore=self.typestore, offered_qos_profiles=qos)
        self.frames_written = 0

    def _msg(self, name: str, **kw: Any) -> Any:
        return self.typestore.types[name](**kw)

    def _header(self, stamp: int, frame_id: str) -> Any:
        sec, nanosec = ns_to_sec_nanosec(stamp)
        t = self._msg("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)
        return self._msg("std_msgs/msg/Header", stamp=t, frame_id=frame_id)

    def image_msg(self, arr: np.ndarray, encoding: str, *, stamp: int, frame_id: str | None = None) -> Any:
        """A rosbags ``sensor_msgs/Image`` of ``arr`` (C-contiguous, little endian)."""
        a = np.ascontiguousarray(arr)
        h, w = a.shape[:2]
        return self._msg(IMAGE_TYPE, header=self._header(stamp, self.frame_id if frame_id is None else frame_id),
                         height=h, width=w, encoding=encoding, is_bigendian=0, step=a.nbytes // h,
                         data=a.reshape(-1).view(np.uint8))

    def serialize(self, msg: Any) -> bytes:
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))

    def write_message(self, stream: str, msg: Any, *, log_ns: int) -> None:
        self._writer.write(self.connections[stream], int(log_ns), self.serialize(msg))

    def write_raw(self, stream: str, data: bytes, *, log_ns: int) -> None:
        """Bytes as they are on ``stream``'s topic (``color``, ``depth``, ``camera_info``, ``pose``)."""
        self._writer.write(self.connections[stream], int(log_ns), bytes(data))

    def write_frame(self, *, color: np.ndarray, depth_m: np.ndarray, K: np.ndarray,
                    T_world_cam: np.ndarray | None, stamp_ns: int, log_ns: int | None = None) -> None:
        """One frame, every message stamped ``stamp_ns`` and recorded at ``log_ns`` (default: the stamp); the
        pose first (as a recorder sees a mocap stream ahead of the images), then colour, depth, camera_info."""
        log = int(stamp_ns if log_ns is None else log_ns)
        stamp = int(stamp_ns)
        if T_world_cam is not None and self.pose is not None:
            position, orientation = matrix_to_pose(T_world_cam)
            (x, y, z), (qx, qy, qz, qw) = position.tolist(), orientation.tolist()
            pose = self._msg("geometry_msgs/msg/Pose",
                             position=self._msg("geometry_msgs/msg/Point", x=x, y=y, z=z),
                             orientation=self._msg("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw))
            if self.pose == "pose":
                msg = self._msg(POSE_TYPES[0], header=self._header(stamp, self.world_frame), pose=pose)
            elif self.pose == "odom":
                cov = np.zeros(36)
                msg = self._msg(POSE_TYPES[2], header=self._header(stamp, self.world_frame),
                                child_frame_id=self.frame_id,
                                pose=self._msg("geometry_msgs/msg/PoseWithCovariance", pose=pose, covariance=cov),
                                twist=self._msg("geometry_msgs/msg/TwistWithCovariance", twist=self._msg(
                                    "geometry_msgs/msg/Twist",
                                    linear=self._msg("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0),
                                    angular=self._msg("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)),
                                    covariance=cov))
            else:
                tr = self._msg("geometry_msgs/msg/Transform",
                               translation=self._msg("geometry_msgs/msg/Vector3", x=x, y=y, z=z),
                               rotation=pose.orientation)
                msg = self._msg(TF_TYPE, transforms=[self._msg(
                    "geometry_msgs/msg/TransformStamped", header=self._header(stamp, self.world_frame),
                    child_frame_id=self.frame_id, transform=tr)])
            self.write_message("pose", msg, log_ns=log)
        color = np.ascontiguousarray(color, dtype=np.uint8)
        H, W = color.shape[:2]
        self.write_message("color", self.image_msg(color, "rgb8", stamp=stamp), log_ns=log)
        d = np.asarray(depth_m, dtype=np.float32)
        valid = np.isfinite(d) & (d > 0)
        if self.depth_encoding == "16UC1":
            d_img = np.clip(np.where(valid, np.rint(d * 1000.0), 0), 0, 65535).astype(np.uint16)
        else:
            d_img = np.where(valid, d, np.nan).astype(np.float32)
        self.write_message("depth", self.image_msg(d_img, self.depth_encoding, stamp=stamp), log_ns=log)
        self.write_message("camera_info", self.camera_info_msg(K, W, H, stamp=stamp), log_ns=log)
        self.frames_written += 1

    def camera_info_msg(self, K: np.ndarray, width: int, height: int, *, stamp: int) -> Any:
        K = np.asarray(K, dtype=np.float64)
        P = np.zeros((3, 4))
        P[:, :3] = K
        roi = self._msg("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0,
                        do_rectify=False)
        return self._msg(CAMERA_INFO_TYPE, header=self._header(stamp, self.frame_id), height=int(height),
                         width=int(width), distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1),
                         r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "RgbdBagWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
