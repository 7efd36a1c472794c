"""The perception node's input checks: camera messages on arrival, matched frame sets in the worker, stamp ages.

- :func:`precheck` runs on every colour / depth / camera_info message as it arrives, from the header and data length
  only (encoding, zero size, step, data length, ``max_pixels``; camera_info size and K), so bad or huge messages
  never enter the synchroniser;
- :func:`check_frame` converts a matched set (colour -> RGB, depth -> metres, camera_info -> K) and checks that the
  parts agree (sizes) and that depth has a valid pixel;
- :func:`seconds_ahead` / :func:`seconds_stale`: how far a stamp lies ahead of / behind the node clock when that is
  more than ``max_age_s`` (0 disables both).

Each refusal is a :class:`FrameRejected` whose ``kind`` keys the node's counted, throttled warning. Pure: typed
functions of messages and numbers; no node.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from find_ros.ros import conversions as conv

__all__ = ["FrameRejected", "precheck", "check_frame", "seconds_ahead", "seconds_stale"]


class FrameRejected(ValueError):
    """A message or frame set that cannot be grounded; ``kind`` keys the throttled warning."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def precheck(stream: str, msg: Any, *, max_pixels: int) -> None:
    """Header-only checks of a ``color`` / ``depth`` (``sensor_msgs/Image``) or ``camera_info`` message on arrival.

    Raises :class:`FrameRejected` (kind ``camera_info`` or ``<stream>_<ConversionError kind>``)."""
    if stream == "camera_info":
        if int(msg.width) * int(msg.height) > max_pixels:
            raise FrameRejected("camera_info", f"camera_info unusable: size {msg.width}x{msg.height} > "
                                               f"max_image_pixels={max_pixels}")
        try:
            conv.camera_info_to_K(msg)
        except conv.ConversionError as e:
            raise FrameRejected("camera_info", f"camera_info unusable: {e}") from e
        return
    encodings = conv.RGB_ENCODINGS if stream == "color" else conv.DEPTH_ENCODINGS
    try:
        conv.check_image(msg, encodings=encodings, max_pixels=max_pixels)
    except conv.ConversionError as e:
        what = "colour" if stream == "color" else stream
        raise FrameRejected(f"{stream}_{e.kind}", f"{what} image dropped: {e}") from e


def check_frame(color: Any, depth: Any, info: Any, *, depth_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, depth (H, W) float32 metres, K (3, 3)) of a matched set, or :class:`FrameRejected`
    (kinds ``color_image``, ``depth_image``, ``size_mismatch``, ``camera_info_size``, ``camera_info``,
    ``depth_invalid``)."""
    try:
        rgb = conv.image_to_rgb(color)
    except conv.ConversionError as e:
        raise FrameRejected("color_image", f"colour image dropped: {e}") from e
    try:
        depth_m = conv.image_to_depth_m(depth, depth_scale=depth_scale)
    except conv.ConversionError as e:
        raise FrameRejected("depth_image", f"depth image dropped: {e}") from e
    if depth_m.shape != rgb.shape[:2]:
        raise FrameRejected("size_mismatch", f"depth is {depth_m.shape[1]}x{depth_m.shape[0]} but colour is "
                                             f"{rgb.shape[1]}x{rgb.shape[0]}: frame dropped (register depth "
                                             "to colour)")
    if info.width and info.height and (info.width, info.height) != (rgb.shape[1], rgb.shape[0]):
        raise FrameRejected("camera_info_size", f"camera_info is {info.width}x{info.height} but colour is "
                                                f"{rgb.shape[1]}x{rgb.shape[0]}: frame dropped")
    try:
        K = conv.camera_info_to_K(info)
    except conv.ConversionError as e:
        raise FrameRejected("camera_info", f"camera_info unusable: {e}") from e
    if not np.any(depth_m > 0):
        raise FrameRejected("depth_invalid", "depth image has no valid pixel (all NaN / zero / inf): "
                                             "frame dropped")
    return rgb, depth_m, K


def seconds_ahead(stamp_s: float, now_s: float, max_age_s: float) -> float | None:
    """How far ``stamp_s`` lies after ``now_s`` when that is more than ``max_age_s`` (a clock mismatch: such a set
    would make every later, correctly stamped frame look out of order), else None; ``max_age_s`` <= 0: None."""
    if max_age_s <= 0:
        return None
    ahead = stamp_s - now_s
    return ahead if ahead > max_age_s else None


def seconds_stale(stamp_s: float, now_s: float, max_age_s: float) -> float | None:
    """The age of ``stamp_s`` at ``now_s`` when it is more than ``max_age_s``, else None; ``max_age_s`` <= 0: None."""
    if max_age_s <= 0:
        return None
    age = now_s - stamp_s
    return age if age > max_age_s else None
