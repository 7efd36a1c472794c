"""Decoding of the messages of an RGB-D bag (rosbags message objects -> numpy), pose maths, the tf tree of
``/tf`` and ``/tf_static``, the rosbags typestore and the bag path. Every check raises :class:`MalformedMessage`
naming the encoding, sizes or values at fault."""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

# matrix_to_pose is re-exported: ((x, y, z), (qx, qy, qz, qw)) of a rigid 4x4, qw >= 0 (find_ros.geometry)
from find_ros.geometry import GeometryError, matrix_to_pose
from find_ros.geometry import pose_to_matrix as _pose_to_matrix
from find_ros.sim.bag.config import (COLOR_ENCODINGS, COMPRESSED_TYPE, DEPTH_ENCODINGS, IMAGE_TYPE, BagError,
                                     MalformedMessage)
from find_ros.stamps import stamp_to_ns

__all__ = ["stamp_ns", "image_array", "decode_color", "decode_depth", "decode_camera_info", "pose_to_matrix",
           "matrix_to_pose", "frame_name", "TfTree", "default_typestore", "resolve_bag_path"]

_LAYOUT: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3), "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4), "mono8": (np.dtype(np.uint8), 1), "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1), "32FC1": (np.dtype(np.float32), 1),
}


def stamp_ns(header: Any) -> int:
    """Nanoseconds of a (rosbags) ``std_msgs/Header`` stamp (:func:`find_ros.stamps.stamp_to_ns`)."""
    return stamp_to_ns(header.stamp)


def image_array(msg: Any, encodings: tuple[str, ...], what: str) -> np.ndarray:
    """(H, W, C) view of a ``sensor_msgs/Image`` in its encoding's dtype (native byte order); checks the encoding
    (one of ``encodings``), size, step and data length."""
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


def decode_color(msg: Any, msgtype: str = IMAGE_TYPE) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a ``sensor_msgs/Image`` (:data:`COLOR_ENCODINGS`) or ``CompressedImage``.

    Raises :class:`MalformedMessage` naming the encoding and sizes."""
    if msgtype == COMPRESSED_TYPE:
        import cv2

        buf = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if img is None:
            raise MalformedMessage("undecodable", f"compressed colour image ({str(msg.format)[:40]!r}, "
                                                  f"{buf.size} bytes) does not decode")
        return np.ascontiguousarray(img[:, :, ::-1])
    a = image_array(msg, COLOR_ENCODINGS, "colour image")
    enc = str(msg.encoding)
    if enc == "mono8":
        return np.ascontiguousarray(np.repeat(a, 3, axis=2))
    if enc in ("bgr8", "bgra8"):
        return np.ascontiguousarray(a[:, :, 2::-1])
    return np.ascontiguousarray(a[:, :, :3])


def decode_depth(msg: Any, *, depth_scale: float = 0.001) -> np.ndarray:
    """(H, W) float32 metres, 0.0 = invalid, from a 16UC1 / mono16 (x ``depth_scale``) or 32FC1 image."""
    a = image_array(msg, DEPTH_ENCODINGS, "depth image")[:, :, 0]
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
    t = (position.x, position.y, position.z)
    q = (orientation.x, orientation.y, orientation.z, orientation.w)
    try:
        return _pose_to_matrix(t, q)
    except GeometryError:
        raise MalformedMessage("pose", f"pose with position {np.asarray(t, dtype=np.float64).tolist()} and quaternion "
                                       f"{np.asarray(q, dtype=np.float64).tolist()} is unusable") from None


def frame_name(name: str) -> str:
    """A tf frame id without its leading slash."""
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
        parent, child = frame_name(parent), frame_name(child)
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
        world, frame = frame_name(world), frame_name(child)
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
