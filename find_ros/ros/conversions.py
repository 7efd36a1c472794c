"""ROS message <-> numpy conversions: Image, CameraInfo, Pose, PointCloud2, Time stamps.

Typed module functions in the style of cv_bridge / sensor_msgs_py. Neither is installable on this machine, so
the image and cloud readers are our own; ``cv_bridge`` (in :func:`image_to_numpy`) and ``sensor_msgs_py``
(in :func:`cloud2_to_numpy`) are used when importable, after our size checks, with our reader as fallback. Reads are zero-copy views of
the message buffer where the layout allows (native byte order, no conversion); every malformed message raises
:class:`ConversionError` naming the encoding and the offending sizes.
"""
from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from find_ros import geometry
from find_ros.geometry import GeometryError
from find_ros.stamps import ns_to_sec_nanosec, stamp_to_ns, stamp_to_s

try:  # ROS 2 cv_bridge (not installable here; the PyPI "cv-bridge" is a ROS 1 port and fails on numpy 2)
    from cv_bridge import CvBridge as _CvBridge

    _BRIDGE = _CvBridge()
except Exception:  # noqa: BLE001 - any import/initialisation failure means "not usable"
    _BRIDGE = None
try:  # sensor_msgs_py (not installable here)
    from sensor_msgs_py import point_cloud2 as _pc2
except Exception:  # noqa: BLE001
    _pc2 = None

__all__ = [
    "ConversionError", "SUPPORTED_IMAGE_ENCODINGS", "RGB_ENCODINGS", "DEPTH_ENCODINGS", "check_image", "image_to_numpy", "numpy_to_image", "image_to_rgb",
    "image_to_depth_m", "camera_info_to_K", "camera_info_from_K", "pose_to_matrix", "matrix_to_pose",
    "points_to_cloud2", "cloud2_to_numpy", "stamp_to_ns", "stamp_to_s", "stamp_from_ns",
]


class ConversionError(ValueError):
    """A message that cannot be converted; the text names the encoding, sizes or field at fault.

    ``kind`` is a short problem class (``encoding``, ``empty``, ``too_large``, ``step``, ``truncated`` from
    :func:`check_image`; ``invalid`` otherwise) for per-kind counting and throttled logging.
    """

    def __init__(self, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32SC1": (np.dtype(np.int32), 1),
}
SUPPORTED_IMAGE_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
_RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3")
_DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
RGB_ENCODINGS: tuple[str, ...] = _RGB_ENCODINGS
"""Encodings :func:`image_to_rgb` reads."""
DEPTH_ENCODINGS: tuple[str, ...] = _DEPTH_ENCODINGS
"""Encodings :func:`image_to_depth_m` reads."""


def _layout(encoding: str) -> tuple[np.dtype, int]:
    try:
        return _ENCODINGS[encoding]
    except KeyError:
        raise ConversionError(f"unsupported image encoding {encoding!r}; supported: "
                              f"{', '.join(SUPPORTED_IMAGE_ENCODINGS)}") from None


def check_image(msg: Image, *, encodings: tuple[str, ...] | None = None, max_pixels: int | None = None) -> None:
    """Validate an Image from its header and data length only (no copy, no conversion): cheap for any size.

    Raises :class:`ConversionError` with ``kind`` ``encoding`` (unsupported, or not in ``encodings``), ``empty``
    (zero width/height), ``too_large`` (``width * height > max_pixels``), ``step`` (``step < width *
    bytes_per_pixel``) or ``truncated`` (``data`` shorter than ``step * height``).
    """
    enc = msg.encoding
    if enc not in _ENCODINGS or (encodings is not None and enc not in encodings):
        allowed = encodings if encodings is not None else SUPPORTED_IMAGE_ENCODINGS
        raise ConversionError(f"encoding {enc[:40]!r} is not one of {', '.join(allowed)}", kind="encoding")
    dtype, ch = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError(f"{enc} image has zero size: {w}x{h}", kind="empty")
    if max_pixels is not None and w * h > max_pixels:
        raise ConversionError(f"{enc} image {w}x{h} has {w * h} pixels > max_image_pixels={max_pixels}",
                              kind="too_large")
    row = w * ch * dtype.itemsize
    if step < row:
        raise ConversionError(f"{enc} image {w}x{h}: step {step} < width*bytes_per_pixel {row}", kind="step")
    n = len(msg.data)
    if n < step * h:
        raise ConversionError(f"{enc} image {w}x{h}: data has {n} bytes, step*height needs {step * h}",
                              kind="truncated")


def image_to_numpy(msg: Image) -> np.ndarray:
    """(H, W) or (H, W, C) array in native byte order; a view of ``msg.data`` when no swap is needed.

    Honours ``step`` (row padding) and ``is_bigendian``. Raises :class:`ConversionError` for an unknown
    encoding, a zero size, ``step < width * bytes_per_pixel`` or data shorter than ``step * height``.
    """
    enc = msg.encoding
    dtype, ch = _layout(enc)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * ch * dtype.itemsize
    if h <= 0 or w <= 0:
        raise ConversionError(f"{enc} image has zero size: {w}x{h}")
    if step < row:
        raise ConversionError(f"{enc} image {w}x{h}: step {step} < width*bytes_per_pixel {row}")
    n = len(msg.data)
    if n < step * h:
        raise ConversionError(f"{enc} image {w}x{h}: data has {n} bytes, step*height needs {step * h}")
    if _BRIDGE is not None and enc != "32SC1":
        try:
            return _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough")
        except Exception:  # noqa: BLE001 - fall back to our reader below
            pass
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=step * h).reshape(h, step)[:, :row]
    src = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    if step % dtype.itemsize == 0:
        arr = buf.view(src)  # last axis is contiguous: a view
    else:  # rows not aligned to the item size: copy to a packed buffer first
        arr = np.ascontiguousarray(buf).view(src)
    arr = arr.reshape(h, w, ch) if ch > 1 else arr.reshape(h, w)
    if not src.isnative:
        arr = arr.astype(dtype)
    return arr


def numpy_to_image(arr: np.ndarray, encoding: str, *, header: Header | None = None) -> Image:
    """Image message holding ``arr`` (packed rows, little-endian).

    ``arr`` must be (H, W) for one-channel encodings or (H, W, C) with C matching the encoding; its dtype
    must be the encoding's or safely castable to it (e.g. bool/uint8 -> 16UC1).
    """
    dtype, ch = _layout(encoding)
    a = np.asarray(arr)
    shape_ok = (a.ndim == 2 and ch == 1) or (a.ndim == 3 and a.shape[2] == ch)
    if not shape_ok:
        raise ConversionError(f"array of shape {a.shape} does not fit encoding {encoding!r} ({ch} channel(s))")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ConversionError(f"{encoding} image has zero size: shape {a.shape}")
    if a.dtype != dtype:
        if not np.can_cast(a.dtype, dtype, casting="safe"):
            raise ConversionError(f"array dtype {a.dtype} cannot be stored as {encoding!r} ({dtype}) without loss")
        a = a.astype(dtype)
    a = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<"))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * ch * dtype.itemsize)
    msg.data = a.tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from rgb8 / bgr8 / rgba8 / bgra8 / mono8 (8UC3 is read as rgb8, 8UC1 as mono8)."""
    if msg.encoding not in _RGB_ENCODINGS:
        raise ConversionError(f"colour image encoding {msg.encoding!r} is not one of {', '.join(_RGB_ENCODINGS)}")
    a = image_to_numpy(msg)
    enc = msg.encoding
    if enc in ("rgb8", "8UC3"):
        return a
    if enc == "bgr8":
        return a[..., ::-1]
    if enc == "rgba8":
        return a[..., :3]
    if enc == "bgra8":
        return a[..., 2::-1]
    return np.repeat(a[..., None], 3, axis=2)  # mono8 / 8UC1


def image_to_depth_m(msg: Image, *, depth_scale: float = 0.001) -> np.ndarray:
    """(H, W) float32 metres: 16UC1/mono16 times ``depth_scale``, 32FC1 as is; NaN, inf and <= 0 become 0."""
    if msg.encoding not in _DEPTH_ENCODINGS:
        raise ConversionError(f"depth image encoding {msg.encoding!r} is not one of {', '.join(_DEPTH_ENCODINGS)}")
    if not (math.isfinite(depth_scale) and depth_scale > 0):
        raise ConversionError(f"depth_scale must be finite and > 0, got {depth_scale}")
    a = image_to_numpy(msg)
    if a.dtype == np.uint16:
        return np.multiply(a, np.float32(depth_scale), dtype=np.float32)  # (one pass: no float copy first)
    d = np.array(a, dtype=np.float32)  # copy: never write into the message buffer
    d[~np.isfinite(d) | (d < 0)] = 0.0
    return d


def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    """(3, 3) float64 intrinsics; ConversionError for an empty K, a zero/non-finite focal length or size."""
    k = np.asarray(msg.k, dtype=np.float64)
    if k.size != 9:
        raise ConversionError(f"camera_info K has {k.size} values, expected 9")
    K = k.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise ConversionError(f"camera_info K has non-finite values: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"camera_info K has zero or negative focal length fx={K[0, 0]} fy={K[1, 1]}")
    if msg.width == 0 or msg.height == 0:
        raise ConversionError(f"camera_info has zero size {msg.width}x{msg.height}")
    return K


def camera_info_from_K(K: np.ndarray, width: int, height: int, *, header: Header | None) -> CameraInfo:
    """CameraInfo for an undistorted pinhole camera (plumb_bob, D = 0, R = I, P = [K | 0])."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ConversionError(f"K must be 3x3, got shape {K.shape}")
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1).tolist()
    return msg


def pose_to_matrix(pose: Pose) -> np.ndarray:
    """4x4 float64 homogeneous transform from a geometry_msgs/Pose (quaternion normalised; :mod:`find_ros.geometry`).

    :class:`ConversionError` for a zero or non-finite quaternion or a non-finite position."""
    o, p = pose.orientation, pose.position
    try:
        return geometry.pose_to_matrix((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
    except GeometryError as e:
        raise ConversionError(f"pose: {e}") from e


def matrix_to_pose(T: np.ndarray) -> Pose:
    """geometry_msgs/Pose (w >= 0) from a 4x4 rigid transform (rotation block orthonormal within 1e-3).

    :class:`ConversionError` for another shape, non-finite values or a rotation block that is not a rotation."""
    try:
        t, q = geometry.matrix_to_pose(T)
    except GeometryError as e:
        raise ConversionError(str(e)) from e
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def stamp_from_ns(ns: int) -> Time:
    """``builtin_interfaces/Time`` of ``ns`` nanoseconds; the inverse of :func:`stamp_to_ns` (both, and
    :func:`stamp_to_s`, from :mod:`find_ros.stamps`)."""
    sec, nanosec = ns_to_sec_nanosec(ns)
    return Time(sec=sec, nanosec=nanosec)


# PointField datatype -> numpy dtype
_PF_DTYPES = {PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
              PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
              PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64}


def points_to_cloud2(xyz: np.ndarray, *, header: Header | None, rgb: np.ndarray | None = None,
                     score: np.ndarray | None = None) -> PointCloud2:
    """Unordered (height 1) dense cloud with float32 x, y, z [+ packed float32 "rgb"] [+ float32 "score"].

    ``rgb`` is (N, 3) uint8, packed as 0x00RRGGBB in the bits of a float32 (the PCL/RViz convention).
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ConversionError(f"xyz must be (N, 3), got shape {xyz.shape}")
    n = xyz.shape[0]
    names = ["x", "y", "z"]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3):
            raise ConversionError(f"rgb must be ({n}, 3) uint8, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            raise ConversionError(f"rgb must be uint8, got {rgb.dtype}")
        names.append("rgb")
    if score is not None:
        score = np.asarray(score)
        if score.shape != (n,):
            raise ConversionError(f"score must be ({n},), got shape {score.shape}")
        names.append("score")
    rec = np.empty(n, dtype=np.dtype({"names": names, "formats": ["<f4"] * len(names)}))
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2]
        rec["rgb"] = packed.astype("<u4").view("<f4")
    if score is not None:
        rec["score"] = score
    msg = PointCloud2()
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, n
    msg.fields = [PointField(name=nm, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, nm in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * n
    msg.is_dense = bool(np.all(np.isfinite(xyz))) if n else True
    msg.data = rec.tobytes()
    return msg


def cloud2_to_numpy(msg: PointCloud2) -> dict[str, np.ndarray]:
    """Field name -> (N,) array (count 1) or (N, count); "rgb" is unpacked to (N, 3) uint8.

    Handles any field offsets/point_step/row padding and the big-endian flag.
    """
    h, w, ps, rs = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    n = h * w
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _PF_DTYPES:
            raise ConversionError(f"point field {f.name!r} has unknown datatype {f.datatype}")
        dt = np.dtype(_PF_DTYPES[f.datatype]).newbyteorder(order)
        cnt = max(int(f.count), 1)
        names.append(f.name)
        formats.append((dt, (cnt,)) if cnt > 1 else dt)
        offsets.append(int(f.offset))
        end = f.offset + dt.itemsize * cnt
        if end > ps:
            raise ConversionError(f"point field {f.name!r} ends at byte {end} beyond point_step {ps}")
    if n == 0:
        out: dict[str, np.ndarray] = {}
        for nm, fm in zip(names, formats):
            dt = np.dtype(fm)
            out[nm] = (np.zeros((0, 3), np.uint8) if nm == "rgb"
                       else np.zeros((0,) + dt.shape, dt.base.newbyteorder("=")))
        return out
    if rs < w * ps:
        raise ConversionError(f"cloud row_step {rs} < width*point_step {w * ps}")
    if len(msg.data) < rs * h:
        raise ConversionError(f"cloud data has {len(msg.data)} bytes, row_step*height needs {rs * h}")
    if _pc2 is not None:
        try:
            rec = np.asarray(_pc2.read_points(msg, skip_nans=False)).reshape(n)
        except Exception:  # noqa: BLE001 - fall back to our reader below
            rec = None
        if rec is not None:
            return _fields_out(rec, names, order)
    rec_dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": ps})
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=rs * h).reshape(h, rs)[:, :w * ps]
    rec = np.ascontiguousarray(raw).view(rec_dt).reshape(n)
    return _fields_out(rec, names, order)


def _fields_out(rec: np.ndarray, names: list[str], order: str) -> dict[str, np.ndarray]:
    out = {}
    for nm in names:
        a = rec[nm]
        if nm == "rgb":
            if a.dtype.itemsize == 4:  # packed float32 (or uint32): reinterpret the bits in the same byte order
                bo = a.dtype.byteorder if a.dtype.byteorder in "<>" else "="
                bits = np.ascontiguousarray(a).view(np.dtype("u4").newbyteorder(bo)).astype(np.uint32)
            else:
                bits = a.astype(np.uint32)
            out[nm] = np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=1).astype(np.uint8)
        else:
            out[nm] = a.astype(a.dtype.newbyteorder("="))
    return out
