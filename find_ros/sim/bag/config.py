"""What a bag's RGB-D stream is made of: the message types read, :class:`BagConfig` (topics, pairing), the
errors, and the records a pass yields (:class:`BagFrame`) and counts (:class:`BagCounts`). No rosbags import."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["BagConfig", "BagConfigError", "BagError", "MalformedMessage", "BagFrame", "BagCounts", "COLOR_ENCODINGS",
           "DEPTH_ENCODINGS", "POSE_TYPES", "AUTO_POSE_TOPICS", "IMAGE_TYPE", "COMPRESSED_TYPE", "CAMERA_INFO_TYPE",
           "TF_TYPE", "config_fields", "topic_name"]

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
"""Colour image encodings read from a bag."""
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
"""Depth image encodings read from a bag (REP 118)."""

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry", TF_TYPE)
"""Message types a camera pose topic may have."""
AUTO_POSE_TOPICS = ("/camera/pose", "/camera/odom")
"""Topics ``pose_topic: auto`` takes the camera pose from, the first one recorded (the package's own names)."""



class BagError(ValueError):
    """The bag cannot be read as an RGB-D recording (missing, unreadable, no colour topic, wrong topic types)."""


class BagConfigError(ValueError):
    """A :class:`BagConfig` field outside its allowed values; the message names the field and the value."""


class MalformedMessage(ValueError):
    """One message that cannot be used; ``kind`` (``undecodable``, ``encoding``, ``size``, ``camera_info``,
    ``pose``, ``size_mismatch``) keys the count."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _field(default: Any, help_: str, **limits: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_, **limits})


@dataclasses.dataclass(frozen=True)
class BagConfig:
    """Which topics of a bag make up the RGB-D stream and how its messages are paired (one default, range and
    description per field; the replay node's parameters and ``find-ros run``'s options are derived from it)."""

    color_topic: str = _field("/camera/color/image_raw", "colour topic (sensor_msgs/Image or CompressedImage)")
    depth_topic: str = _field("/camera/depth/image_raw", "depth topic (sensor_msgs/Image 16UC1 / mono16 or 32FC1)")
    camera_info_topic: str = _field("/camera/color/camera_info", "camera_info topic of the colour camera")
    pose_topic: str = _field(
        "auto", "camera pose topic: PoseStamped, PoseWithCovarianceStamped, Odometry (the optical frame in the "
                "world frame) or TFMessage (/tf, with /tf_static when recorded); 'auto' = /camera/pose or "
                "/camera/odom when recorded; '' = none")
    tf_world_frame: str = _field("map", "world frame of the camera pose when pose_topic is a TFMessage topic")
    tf_camera_frame: str = _field("", "camera frame looked up in tf; '' = the colour image's frame_id")
    sync_slop_s: float = _field(0.02, "largest stamp difference (s) of colour, depth and camera_info of a frame",
                                range=(0.0, 1.0))
    pose_slop_s: float = _field(0.05, "largest stamp difference (s) between a frame and its camera pose",
                                range=(0.0, 10.0))
    depth_scale: float = _field(0.001, "metres per unit of 16UC1 / mono16 depth (0.001 = millimetres)",
                                range=(1e-6, 10.0))
    window_s: float = _field(1.0, "log time (s) a colour message waits for its depth, camera_info and pose",
                             range=(0.0, 60.0))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise BagConfigError(f"{f.name}={value!r} must be a finite number")
                lo, hi = f.metadata["range"]
                if not lo <= value <= hi:
                    raise BagConfigError(f"{f.name}={value!r} is outside [{lo:g}, {hi:g}]")
                object.__setattr__(self, f.name, float(value))
            elif not isinstance(value, str):
                raise BagConfigError(f"{f.name}={value!r} must be a string")
        if not self.color_topic or not self.depth_topic or not self.camera_info_topic:
            raise BagConfigError(f"color_topic, depth_topic and camera_info_topic must be set, got "
                                 f"{self.color_topic!r}, {self.depth_topic!r}, {self.camera_info_topic!r}")


def config_fields() -> list[tuple[str, Any, str]]:
    """``(name, default, description)`` of every :class:`BagConfig` field, in declaration order."""
    out = []
    for f in dataclasses.fields(BagConfig):
        help_ = f.metadata["help"]
        if "range" in f.metadata:
            help_ += " in [%g, %g]" % f.metadata["range"]
        out.append((f.name, f.default, help_))
    return out


@dataclasses.dataclass
class BagFrame:
    """One RGB-D frame of a bag: colour, depth, intrinsics and camera pose paired by stamp."""

    color: np.ndarray
    """(H, W, 3) uint8 RGB."""
    depth: np.ndarray
    """(H, W) float32 metres, 0.0 = invalid."""
    depth_encoding: str
    """Encoding the depth was recorded in (16UC1, mono16 or 32FC1)."""
    K: np.ndarray
    """(3, 3) float64 intrinsics from camera_info."""
    T_world_cam: np.ndarray | None
    """(4, 4) float64 camera optical frame -> world, or None when no pose was found for the frame."""
    stamp_ns: int
    """Header stamp of the colour message (nanoseconds), exactly as recorded."""
    log_time_ns: int
    """Time the colour message was recorded (bag timestamp, nanoseconds): what playback timing follows."""
    frame_id: str
    """Frame id of the colour message (the optical frame)."""
    world_frame: str
    """Frame of ``T_world_cam`` ('' when there is no pose)."""
    index: int
    """Position among the frames of one pass over the bag."""


@dataclasses.dataclass
class BagCounts:
    """What one pass over a bag read and skipped."""

    messages: dict = dataclasses.field(default_factory=dict)
    """Stream (color, depth, camera_info, pose) -> messages read."""
    frames: int = 0
    """Frames yielded."""
    malformed: dict = dataclasses.field(default_factory=dict)
    """``<stream>_<kind>`` -> messages skipped as malformed."""
    unpaired: dict = dataclasses.field(default_factory=dict)
    """``no_depth`` / ``no_camera_info`` -> colour messages skipped for want of a partner."""
    no_pose: int = 0
    """Frames yielded without a camera pose although a pose topic is configured."""

    @property
    def malformed_total(self) -> int:
        return int(sum(self.malformed.values()))

    def as_dict(self) -> dict:
        return {"messages": dict(self.messages), "frames": self.frames, "malformed": dict(self.malformed),
                "malformed_total": self.malformed_total, "unpaired": dict(self.unpaired), "no_pose": self.no_pose}



def topic_name(name: str) -> str:
    """``name`` with a leading slash, as rosbag2 records topic names."""
    return name if name.startswith("/") else "/" + name
