"""RGB-D frames from a rosbag2 recording (sqlite3 or mcap), read with the pure-Python ``rosbags`` package.

No ROS install is needed (``ros2 bag`` and ``rosbag2_py`` are not available everywhere): messages are decoded
with a ``rosbags`` typestore, checked, and paired by header stamp into :class:`BagFrame` objects, the bag
counterpart of :class:`find_ros.sim.datasets.RGBDFrame`:

- colour: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or ``sensor_msgs/CompressedImage`` (jpeg/png);
- depth: ``sensor_msgs/Image`` 16UC1 / mono16 (units of ``depth_scale``, 0 = invalid) or 32FC1 (metres, NaN = invalid);
- camera_info: ``sensor_msgs/CameraInfo`` with the stamp of the frame, else the latest one (intrinsics are static);
- camera pose (optional): ``geometry_msgs/PoseStamped``, ``geometry_msgs/PoseWithCovarianceStamped``,
  ``nav_msgs/Odometry`` (the camera optical frame in the world frame) or ``tf2_msgs/TFMessage`` (the chain
  ``tf_world_frame`` -> camera frame through ``/tf`` and ``/tf_static``).

Messages are read in recording (log) order. A colour message waits ``window_s`` of log time for its partners,
then depth and camera_info within ``sync_slop_s`` of its stamp and a pose within ``pose_slop_s`` are taken; so
memory stays bounded however long the bag is. A malformed message (undecodable CDR, wrong encoding, data shorter
than its size, zero size, bad camera_info K, non-finite pose, depth/colour/camera_info size mismatch) is counted
in :attr:`BagCounts.malformed` by ``<stream>_<kind>``, logged (the first few of each kind, then every 100th) and
skipped; a colour frame left without depth or camera_info is counted in :attr:`BagCounts.unpaired`. Nothing
about a bad message is fatal; a bag that cannot be opened or lacks the colour topic raises :class:`BagError`.

:class:`RgbdBagWriter` writes such bags (from frames of :mod:`find_ros.sim.datasets` or the simulator), with the
reliability a recorder would note in the topic metadata.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger(__name__)

__all__ = [
    "BagConfig", "BagConfigError", "BagError", "MalformedMessage", "BagFrame", "BagCounts", "RgbdBag",
    "RgbdBagWriter", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "POSE_TYPES", "default_typestore", "decode_color",
    "decode_depth", "decode_camera_info", "pose_to_matrix", "matrix_to_pose", "TfTree", "stamp_ns",
    "config_fields", "resolve_bag_path",
]

COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
"""Colour image encodings read from a bag."""
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
"""Depth image encodings read from a bag (REP 118)."""

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
_TF = "tf2_msgs/msg/TFMessage"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry", _TF)
"""Message types a camera pose topic may have."""
AUTO_POSE_TOPICS = ("/camera/pose", "/camera/odom")
"""Topics ``pose_topic: auto`` takes the camera pose from, the first one recorded (the package's own names)."""

_LAYOUT: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3), "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4), "mono8": (np.dtype(np.uint8), 1), "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1), "32FC1": (np.dtype(np.float32), 1),
}
_LOG_FIRST = 3  # malformed messages of one kind logged one by one, then every _LOG_EVERY-th
_LOG_EVERY = 100


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


# ------------------------------------------------------------------------------------------- decoding
def stamp_ns(header: Any) -> int:
    """Nanoseconds of a (rosbags) ``std_msgs/Header`` stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _image_array(msg: Any, encodings: tuple[str, ...], what: str) -> np.ndarray:
    """(H, W, C) view of a ``sensor_msgs/Image`` in its encoding's dtype (native byte order)."""
    enc = str(msg.encoding)
    if enc not in encodings:
        raise MalformedMessage("encoding", f"{what} encoding {enc[:40]!r} is not one of {', '.join(encodings)}")
    dtype, ch = _LAYOUT[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MalformedMessage("size", f"{what} has zero size {w}x{h}")
    row = w * ch * dtype.itemsize
    if step < row:
        raise MalformedMessage("size", f"{what} {enc} {w}x{h}: step {step} < {row} bytes per row")
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if data.size < step * h:
        raise MalformedMessage("size", f"{what} {enc} {w}x{h} (step {step}) needs {step * h} bytes, data has "
                                       f"{data.size}")
    rows = np.ascontiguousarray(data[: step * h].reshape(h, step)[:, :row])
    arr = rows.view(dtype.newbyteorder(">" if msg.is_bigendian else "<")).reshape(h, w, ch)
    return arr.astype(dtype, copy=False)


def decode_color(msg: Any, msgtype: str = _IMAGE) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a ``sensor_msgs/Image`` (:data:`COLOR_ENCODINGS`) or ``CompressedImage``.

    Raises :class:`MalformedMessage` naming the encoding and sizes."""
    if msgtype == _COMPRESSED:
        import cv2

        buf = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if img is None:
            raise MalformedMessage("undecodable", f"compressed colour image ({str(msg.format)[:40]!r}, "
                                                  f"{buf.size} bytes) does not decode")
        return np.ascontiguousarray(img[:, :, ::-1])
    a = _image_array(msg, COLOR_ENCODINGS, "colour image")
    enc = str(msg.encoding)
    if enc == "mono8":
        return np.ascontiguousarray(np.repeat(a, 3, axis=2))
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(a[:, :, 2::-1])
    return np.ascontiguousarray(a[:, :, :3])


def decode_depth(msg: Any, *, depth_scale: float = 0.001) -> np.ndarray:
    """(H, W) float32 metres, 0.0 = invalid, from a 16UC1 / mono16 (x ``depth_scale``) or 32FC1 image."""
    a = _image_array(msg, DEPTH_ENCODINGS, "depth image")[:, :, 0]
    if a.dtype == np.float32:
        d = a.astype(np.float32, copy=True)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    return a.astype(np.float32) * np.float32(depth_scale)


def decode_camera_info(msg: Any) -> tuple[np.ndarray, int, int]:
    """``(K, width, height)`` of a ``sensor_msgs/CameraInfo``; :class:`MalformedMessage` for an unusable one."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.all(np.isfinite(k)):
        raise MalformedMessage("camera_info", f"camera_info K must be 9 finite values, got {k.tolist()}")
    K = k.reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise MalformedMessage("camera_info", f"camera_info K has focal lengths fx={K[0, 0]} fy={K[1, 1]}")
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise MalformedMessage("camera_info", f"camera_info has zero size {w}x{h}")
    return K, w, h


def pose_to_matrix(position: Any, orientation: Any) -> np.ndarray:
    """(4, 4) from a position (x, y, z attributes) and quaternion (x, y, z, w attributes), normalised;
    :class:`MalformedMessage` (kind ``pose``) when non-finite or of zero norm."""
    t = np.array([position.x, position.y, position.z], dtype=np.float64)
    q = np.array([orientation.x, orientation.y, orientation.z, orientation.w], dtype=np.float64)
    n = float(np.linalg.norm(q))
    if not (np.all(np.isfinite(t)) and math.isfinite(n)) or n < 1e-9:
        raise MalformedMessage("pose", f"pose with position {t.tolist()} and quaternion {q.tolist()} is unusable")
    x, y, z, w = q / n
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = t
    return T


def matrix_to_pose(T: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """``((x, y, z), (qx, qy, qz, qw))`` of a 4x4 rigid transform (qw >= 0)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[:3, :3]
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = ((R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s)
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = (0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s)
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = ((R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = ((R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s)
    qa = np.asarray(q) / np.linalg.norm(q)
    if qa[3] < 0:
        qa = -qa
    return (float(T[0, 3]), float(T[1, 3]), float(T[2, 3])), tuple(float(v) for v in qa)  # type: ignore[return-value]


def _frame(name: str) -> str:
    return str(name).lstrip("/")


class TfTree:
    """Transforms of ``/tf`` (timed) and ``/tf_static`` by child frame; :meth:`lookup` composes the chain from
    a child frame up to a world frame, each timed edge taken nearest in stamp within a slop."""

    def __init__(self, *, keep: int = 2000) -> None:
        self._parent: dict[str, str] = {}
        self._static: dict[str, np.ndarray] = {}
        self._timed: dict[str, collections.deque] = {}
        self._keep = keep

    def add(self, parent: str, child: str, stamp: int, T_parent_child: np.ndarray, *, static: bool) -> None:
        parent, child = _frame(parent), _frame(child)
        self._parent[child] = parent
        if static:
            self._static[child] = T_parent_child
            self._timed.pop(child, None)
        else:
            self._static.pop(child, None)
            self._timed.setdefault(child, collections.deque(maxlen=self._keep)).append((int(stamp), T_parent_child))

    def lookup(self, world: str, child: str, stamp: int, slop_ns: int) -> np.ndarray | None:
        """``T_world_child`` at ``stamp`` (ns), or None when a link is missing or no timed transform of a link
        lies within ``slop_ns``."""
        world, frame = _frame(world), _frame(child)
        T = np.eye(4)
        for _ in range(64):  # a tf tree deeper than this is a loop
            if frame == world:
                return T
            parent = self._parent.get(frame)
            if parent is None:
                return None
            if frame in self._static:
                T_pc = self._static[frame]
            else:
                best = min(self._timed.get(frame, ()), key=lambda e: abs(e[0] - stamp), default=None)
                if best is None or abs(best[0] - stamp) > slop_ns:
                    return None
                T_pc = best[1]
            T = T_pc @ T
            frame = parent
        return None

    def prune(self, before: int) -> None:
        """Forget timed transforms stamped before ``before`` (ns), keeping the newest one of each link."""
        for dq in self._timed.values():
            while len(dq) > 1 and dq[0][0] < before:
                dq.popleft()


def default_typestore() -> Any:
    """A ``rosbags`` typestore of the standard ROS 2 messages (kilted when this rosbags knows it)."""
    from rosbags.typesys import Stores, get_typestore

    for name in ("ROS2_KILTED", "ROS2_JAZZY", "LATEST"):
        store = getattr(Stores, name, None)
        if store is not None:
            return get_typestore(store)
    raise BagError("rosbags has no ROS 2 typestore")  # pragma: no cover - every rosbags release has one


def resolve_bag_path(path: str | Path) -> Path:
    """The rosbag2 directory of ``path``: the directory itself, or the directory of a ``.db3`` / ``.mcap`` file
    given instead. :class:`BagError` when there is no ``metadata.yaml``."""
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise BagError(f"bag {str(path)!r} does not exist")
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"{str(p)!r} is not a rosbag2 folder (no metadata.yaml); a bare .mcap/.db3 file needs the "
                       "metadata.yaml that ros2 bag record writes beside it")
    return p


# ------------------------------------------------------------------------------------------- reading
class _Pass:
    """The state of one pass over a bag: buffers by stream, tf tree, counters."""

    def __init__(self, bag: "RgbdBag", *, log: bool = True) -> None:
        self.bag, self.cfg, self.log = bag, bag.config, log
        self.counts = BagCounts()
        self.color: collections.deque = collections.deque()  # (stamp, log, msg, msgtype)
        self.depth: collections.deque = collections.deque()  # (stamp, log, msg)
        self.info: collections.deque = collections.deque()  # (stamp, log, (K, w, h))
        self.last_info: tuple | None = None
        self.poses: collections.deque = collections.deque()  # (stamp, log, T, frame)
        self.tf = TfTree()
        self.index = 0

    # -- counting
    def malformed(self, stream: str, topic: str, log_ns: int, e: MalformedMessage) -> None:
        key = f"{stream}_{e.kind}"
        n = self.counts.malformed[key] = self.counts.malformed.get(key, 0) + 1
        if self.log and n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            more = " (further ones of this kind are counted, every 100th logged)" if n == _LOG_FIRST else ""
            LOG.warning("bag %s: %s message on %s recorded at %.3f s skipped [%s, %d so far]: %s%s",
                        self.bag.path.name, stream, topic, log_ns * 1e-9, key, n, e, more)

    def unpaired(self, kind: str, stamp: int, detail: str) -> None:
        n = self.counts.unpaired[kind] = self.counts.unpaired.get(kind, 0) + 1
        if self.log and n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            LOG.warning("bag %s: colour frame stamped %.3f skipped [%s, %d so far]: %s", self.bag.path.name,
                        stamp * 1e-9, kind, n, detail)

    # -- arrival
    def add(self, stream: str, topic: str, msgtype: str, log_ns: int, raw: bytes) -> None:
        c = self.counts.messages
        c[stream] = c.get(stream, 0) + 1
        try:
            try:
                msg = self.bag.typestore.deserialize_cdr(raw, msgtype)
            except Exception as e:  # noqa: BLE001 - any decoding failure: truncated, bad lengths, bad utf-8
                raise MalformedMessage("undecodable", f"{msgtype} does not deserialize: {type(e).__name__}: "
                                                      f"{str(e)[:120]}") from None
            if stream == "color":
                if msgtype == _IMAGE:
                    _image_array(msg, COLOR_ENCODINGS, "colour image")  # header-level checks on arrival
                self.color.append((self._stamp(msg, log_ns), log_ns, msg, msgtype))
            elif stream == "depth":
                _image_array(msg, DEPTH_ENCODINGS, "depth image")
                self.depth.append((self._stamp(msg, log_ns), log_ns, msg))
            elif stream == "camera_info":
                kwh = decode_camera_info(msg)
                self.info.append((self._stamp(msg, log_ns), log_ns, kwh))
                self.last_info = kwh
            elif stream == "pose":
                self._add_pose(msgtype, msg, log_ns)
            elif stream == "tf_static":
                self._add_tf(msg, static=True)
        except MalformedMessage as e:
            self.malformed(stream, topic, log_ns, e)

    @staticmethod
    def _stamp(msg: Any, log_ns: int) -> int:
        s = stamp_ns(msg.header)
        return s if s > 0 else log_ns  # an unstamped message: its recording time

    def _add_pose(self, msgtype: str, msg: Any, log_ns: int) -> None:
        if msgtype == _TF:
            self._add_tf(msg, static=False)
            return
        pose = msg.pose.pose if msgtype in ("nav_msgs/msg/Odometry",
                                            "geometry_msgs/msg/PoseWithCovarianceStamped") else msg.pose
        T = pose_to_matrix(pose.position, pose.orientation)
        self.poses.append((self._stamp(msg, log_ns), log_ns, T, str(msg.header.frame_id)))

    def _add_tf(self, msg: Any, *, static: bool) -> None:
        for tr in msg.transforms:
            T = pose_to_matrix(tr.transform.translation, tr.transform.rotation)
            self.tf.add(tr.header.frame_id, tr.child_frame_id, stamp_ns(tr.header), T, static=static)

    # -- pairing
    def ready(self, now_log: int | None) -> Iterator[BagFrame]:
        """Frames of the colour messages whose wait is over at log time ``now_log`` (None: the bag ended)."""
        window = int(self.cfg.window_s * 1e9)
        while self.color and (now_log is None or self.color[0][1] + window < now_log):
            frame = self._pair(*self.color.popleft())
            if frame is not None:
                yield frame
        # forget partners too old to pair with any colour message still to come
        horizon = (self.color[0][1] if self.color else (now_log or 0)) - 2 * window
        for dq in (self.depth, self.info, self.poses):
            while dq and dq[0][1] < horizon:
                dq.popleft()
        self.tf.prune(horizon - int(self.cfg.pose_slop_s * 1e9) - 2 * window)

    @staticmethod
    def _nearest(dq: collections.deque, stamp: int, slop_ns: int) -> Any:
        best = min(dq, key=lambda e: abs(e[0] - stamp), default=None)
        return best if best is not None and abs(best[0] - stamp) <= slop_ns else None

    def _pair(self, stamp: int, log_ns: int, msg: Any, msgtype: str) -> BagFrame | None:
        cfg, topic = self.cfg, self.bag.config.color_topic
        slop = int(cfg.sync_slop_s * 1e9)
        d = self._nearest(self.depth, stamp, slop)
        if d is None:
            self.unpaired("no_depth", stamp, f"no usable depth within sync_slop_s={cfg.sync_slop_s} of its stamp")
            return None
        info = self._nearest(self.info, stamp, slop)
        kwh = info[2] if info is not None else self.last_info
        if kwh is None:
            self.unpaired("no_camera_info", stamp, "no usable camera_info recorded before it")
            return None
        try:
            rgb = decode_color(msg, msgtype)
        except MalformedMessage as e:
            self.malformed("color", topic, log_ns, e)
            return None
        try:
            depth = decode_depth(d[2], depth_scale=cfg.depth_scale)
        except MalformedMessage as e:  # pragma: no cover - checked on arrival
            self.malformed("depth", cfg.depth_topic, d[1], e)
            return None
        K, w, h = kwh
        if depth.shape != rgb.shape[:2] or (w, h) != (rgb.shape[1], rgb.shape[0]):
            self.malformed("frame", topic, log_ns, MalformedMessage(
                "size_mismatch", f"colour {rgb.shape[1]}x{rgb.shape[0]}, depth {depth.shape[1]}x{depth.shape[0]}, "
                                 f"camera_info {w}x{h} (depth must be registered to colour)"))
            return None
        T, world = self._pose(stamp, str(msg.header.frame_id))
        if T is None and self.bag.pose_topic:
            self.counts.no_pose += 1
        frame = BagFrame(color=rgb, depth=depth, depth_encoding=str(d[2].encoding), K=K, T_world_cam=T,
                         stamp_ns=stamp, log_time_ns=log_ns, frame_id=str(msg.header.frame_id),
                         world_frame=world, index=self.index)
        self.index += 1
        self.counts.frames += 1
        return frame

    def _pose(self, stamp: int, frame_id: str) -> tuple[np.ndarray | None, str]:
        bag, slop = self.bag, int(self.cfg.pose_slop_s * 1e9)
        if not bag.pose_topic:
            return None, ""
        if bag.pose_type == _TF:
            cam = self.cfg.tf_camera_frame or frame_id
            T = self.tf.lookup(self.cfg.tf_world_frame, cam, stamp, slop)
            return (T, _frame(self.cfg.tf_world_frame)) if T is not None else (None, "")
        p = self._nearest(self.poses, stamp, slop)
        return (p[2], p[3]) if p is not None else (None, "")


class RgbdBag:
    """A rosbag2 recording read as RGB-D frames (see the module docstring); a context manager.

    ``frames()`` makes one pass (call it again to replay); :attr:`counts` holds the counters of the latest pass.
    """

    def __init__(self, path: str | Path, config: BagConfig | None = None) -> None:
        from rosbags.rosbag2 import Reader

        self.config = config or BagConfig()
        self.path = resolve_bag_path(path)
        self._reader = Reader(self.path)
        try:
            self._reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags raises several kinds for an unreadable bag
            raise BagError(f"cannot open bag {str(self.path)!r}: {type(e).__name__}: {e}") from e
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        self.counts = BagCounts()

    def _setup(self) -> None:
        cfg = self.config
        self.connections = {c.topic: c for c in self._reader.connections}
        self.typestore = self._typestore()

        def conn(topic: str, stream: str, types: tuple[str, ...]) -> Any:
            c = self.connections.get(_topic(topic))
            if c is None:
                raise BagError(f"bag {self.path.name}: no {stream} topic {_topic(topic)!r}; recorded: "
                               + ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(self.connections.items())))
            if c.msgtype not in types:
                raise BagError(f"bag {self.path.name}: {stream} topic {c.topic} has type {c.msgtype}, expected "
                               + " or ".join(types))
            return c

        self.color_conn = conn(cfg.color_topic, "colour", (_IMAGE, _COMPRESSED))
        self.depth_conn = conn(cfg.depth_topic, "depth", (_IMAGE,))
        self.info_conn = conn(cfg.camera_info_topic, "camera_info", (_CAMERA_INFO,))
        self.pose_topic, self.pose_type = "", ""
        if cfg.pose_topic == "auto":
            for t in AUTO_POSE_TOPICS:
                c = self.connections.get(t)
                if c is not None and c.msgtype in POSE_TYPES:
                    self.pose_topic, self.pose_type = c.topic, c.msgtype
                    break
        elif cfg.pose_topic:
            c = conn(cfg.pose_topic, "camera pose", POSE_TYPES)
            self.pose_topic, self.pose_type = c.topic, c.msgtype
        self._streams = {self.color_conn.topic: "color", self.depth_conn.topic: "depth",
                         self.info_conn.topic: "camera_info"}
        if self.pose_topic:
            self._streams[self.pose_topic] = "pose"
            static = self.connections.get("/tf_static")
            if self.pose_type == _TF and static is not None and static.msgtype == _TF:
                self._streams[static.topic] = "tf_static"

    def _typestore(self) -> Any:
        """The standard typestore plus the definitions the bag carries (they win for the types they define)."""
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        store = default_typestore()
        types: dict = {}
        for c in self._reader.connections:
            try:
                if c.msgdef.format == MessageDefinitionFormat.MSG and c.msgdef.data:
                    types.update(get_types_from_msg(c.msgdef.data, c.msgtype))
                elif c.msgdef.format == MessageDefinitionFormat.IDL and c.msgdef.data:
                    sep = "=" * 80 + "\n"
                    for part in c.msgdef.data.split(sep):
                        if part.startswith("IDL: "):
                            part = part.split("\n", 1)[1]
                        if part.strip():
                            types.update(get_types_from_idl(part))
            except Exception as e:  # noqa: BLE001 - an unparsable embedded definition: use the standard one
                LOG.warning("bag %s: message definition of %s (%s) not usable (%s); using the standard one",
                            self.path.name, c.topic, c.msgtype, e)
        if types:
            try:
                store.register(types)
            except Exception as e:  # noqa: BLE001 - a definition conflicting with the standard store
                LOG.warning("bag %s: embedded message definitions not registered (%s); using the standard ones",
                            self.path.name, e)
        return store

    # -- facts about the bag
    @property
    def color_count(self) -> int:
        """Colour messages recorded (an upper bound of the frames of one pass)."""
        return int(self.color_conn.msgcount)

    @property
    def duration_s(self) -> float:
        return float(self._reader.duration) * 1e-9

    def reliability(self, topic: str | None = None) -> str | None:
        """``reliable`` / ``best_effort`` as recorded in the offered QoS profiles of ``topic`` (default: colour);
        best effort when any recorded publisher was best effort (``ros2 bag play`` adapts the same way), None
        when the bag does not say."""
        from rosbags.interfaces import QosReliability

        c = self.connections.get(_topic(topic)) if topic else self.color_conn
        profiles = list(getattr(getattr(c, "ext", None), "offered_qos_profiles", []) or [])
        rel = {p.reliability for p in profiles}
        if QosReliability.BEST_EFFORT in rel:
            return "best_effort"
        if QosReliability.RELIABLE in rel:
            return "reliable"
        return None

    def describe(self) -> str:
        pose = f"pose {self.pose_topic} ({self.pose_type.split('/')[-1]})" if self.pose_topic else "no pose topic"
        return (f"{self.path.name}: {self.color_count} colour messages on {self.color_conn.topic}, "
                f"{self.duration_s:.1f} s, {pose}, recorded {self.reliability() or 'with unknown QoS'}")

    # -- reading
    def frames(self, *, log: bool = True) -> Iterator[BagFrame]:
        """One pass over the bag in recording order: the frames that pair up (malformed ones skipped, counted in
        :attr:`counts`; logged unless ``log`` is False, e.g. on the second pass of a loop)."""
        p = _Pass(self, log=log)
        self.counts = p.counts
        conns = [self.connections[t] for t in self._streams]
        for c, log_ns, raw in self._reader.messages(connections=conns):
            p.add(self._streams[c.topic], c.topic, c.msgtype, int(log_ns), raw)
            yield from p.ready(int(log_ns))
        yield from p.ready(None)
        (LOG.info if log else LOG.debug)("bag %s: %d frames from %d colour messages; malformed %s, unpaired %s, frames without pose %d",
                 self.path.name, p.counts.frames, p.counts.messages.get("color", 0), p.counts.malformed or "none",
                 p.counts.unpaired or "none", p.counts.no_pose)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> "RgbdBag":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _topic(name: str) -> str:
    return name if name.startswith("/") else "/" + name


# ------------------------------------------------------------------------------------------- writing
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
        topics = {"color": (cfg.color_topic, _IMAGE), "depth": (cfg.depth_topic, _IMAGE),
                  "camera_info": (cfg.camera_info_topic, _CAMERA_INFO)}
        if pose == "pose":
            topics["pose"] = ("/camera/pose" if cfg.pose_topic == "auto" else cfg.pose_topic, POSE_TYPES[0])
        elif pose == "odom":
            topics["pose"] = ("/camera/odom" if cfg.pose_topic == "auto" else cfg.pose_topic, POSE_TYPES[2])
        elif pose == "tf":
            topics["pose"] = ("/tf" if cfg.pose_topic in ("auto", "") else cfg.pose_topic, _TF)
        for stream, (topic, msgtype) in topics.items():
            self.connections[stream] = self._writer.add_connection(
                _topic(topic), msgtype, typestore=self.typestore, offered_qos_profiles=qos)
        self.frames_written = 0

    def _msg(self, name: str, **kw: Any) -> Any:
        return self.typestore.types[name](**kw)

    def _header(self, stamp: int, frame_id: str) -> Any:
        t = self._msg("builtin_interfaces/msg/Time", sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
        return self._msg("std_msgs/msg/Header", stamp=t, frame_id=frame_id)

    def image_msg(self, arr: np.ndarray, encoding: str, *, stamp: int, frame_id: str | None = None) -> Any:
        """A rosbags ``sensor_msgs/Image`` of ``arr`` (C-contiguous, little endian)."""
        a = np.ascontiguousarray(arr)
        h, w = a.shape[:2]
        return self._msg(_IMAGE, header=self._header(stamp, self.frame_id if frame_id is None else frame_id),
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
            (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(T_world_cam)
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
                msg = self._msg(_TF, transforms=[self._msg(
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
        return self._msg(_CAMERA_INFO, header=self._header(stamp, self.frame_id), height=int(height),
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
