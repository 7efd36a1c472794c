"""One stored reference ("this one"): an RGB crop with its optional mask and where / when it was taken.

Pure numpy / OpenCV. The store that names and persists these is :mod:`find_ros.grounding.reference_store`.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import cv2
import numpy as np

from find_ros.grounding.reference_errors import InvalidStoredReference
from find_ros.instruction import Reference

__all__ = ["ORIGINS", "StoredReference", "checked_position"]

ORIGINS: tuple[str, ...] = ("point", "pixel", "image")
"""How a reference was made: a 3D click, a pixel click, or an image (+ optional mask) given directly."""


def _bad(field: str, value: Any, why: str) -> InvalidStoredReference:
    return InvalidStoredReference(f"stored reference {field} {why}", field=field, value=value)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True, order="C")
    a.setflags(write=False)
    return a


def checked_position(p: Any) -> np.ndarray:
    """``p`` as a (3,) float64 world position (x, y, z); :class:`InvalidStoredReference` when it is not one."""
    try:
        a = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidStoredReference(f"world_position is not numeric ({e})", field="world_position",
                                     value=p) from None
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise InvalidStoredReference(f"world_position must be 3 finite numbers (x, y, z), got {a.tolist()!r}",
                                     field="world_position", value=a.tolist())
    return a


# ------------------------------------------------------------------------------------------ field validators


def _check_name(name: Any) -> None:
    if not isinstance(name, str):
        raise _bad("name", name, f"must be a string, got {type(name).__name__}")


def _check_crop(crop: Any) -> np.ndarray:
    if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise _bad("crop", getattr(crop, "shape", type(crop).__name__),
                   f"must be an (H, W, 3) uint8 array, got {getattr(crop, 'shape', type(crop).__name__)} "
                   f"{getattr(crop, 'dtype', '')}".rstrip())
    if crop.shape[0] < 2 or crop.shape[1] < 2:
        raise _bad("crop", crop.shape, f"is too small: {crop.shape[1]}x{crop.shape[0]} (at least 2x2)")
    return _frozen(crop)


def _check_mask(m: Any, *, crop_shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(m, np.ndarray) or m.shape != crop_shape[:2]:
        raise _bad("mask", getattr(m, "shape", type(m).__name__),
                   f"shape {getattr(m, 'shape', type(m).__name__)} does not match the crop's {crop_shape[:2]}")
    if m.dtype != bool and not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise _bad("mask", m.dtype, f"dtype {m.dtype} is not bool or numeric")
    mb = m.astype(bool) if m.dtype != bool else m
    if not mb.any():
        raise _bad("mask", int(mb.sum()), "is empty (no pixel set)")
    return _frozen(mb)


def _check_source_frame(source_frame: Any) -> None:
    if not isinstance(source_frame, str) or not source_frame.isprintable():
        raise _bad("source_frame", source_frame, "must be a printable string")


def _check_stamp_ns(stamp_ns: Any) -> int:
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)) or stamp_ns < 0:
        raise _bad("stamp_ns", stamp_ns, f"must be a non-negative integer, got {stamp_ns!r}")
    return int(stamp_ns)


def _check_camera_pose(pose: Any) -> np.ndarray:
    try:
        T = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _bad("camera_pose", pose, f"is not numeric ({e})") from None
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise _bad("camera_pose", T.shape, f"must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if (not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6)
            or not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0):
        raise _bad("camera_pose", T.tolist(), "is not a rigid transform (rotation + translation, last row 0 0 0 1)")
    return _frozen(T)


def _check_score(score: Any) -> float:
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise _bad("score", score, f"must be a number in [0, 1] or nan, got {score!r}") from None
    if not (math.isnan(value) or 0.0 <= value <= 1.0):
        raise _bad("score", value, f"must be in [0, 1] or nan, got {value}")
    return value


def _check_origin(origin: Any) -> None:
    if origin not in ORIGINS:
        raise _bad("origin", origin, f"must be one of {', '.join(ORIGINS)}, got {origin!r}")


def _check_created(created: Any) -> float:
    try:
        value = float(created)
    except (TypeError, ValueError):
        raise _bad("created", created, f"must be a unix time in seconds, got {created!r}") from None
    if not math.isfinite(value):
        raise _bad("created", value, "must be finite")
    return value


def _check_box(box: Any, *, crop_shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        b = tuple(int(v) for v in box)
    except (TypeError, ValueError):
        raise _bad("box", box, f"must be 4 integers (x0, y0, x1, y1), got {box!r}") from None
    if len(b) != 4 or b[0] < 0 or b[1] < 0 or b[2] - b[0] != crop_shape[1] or b[3] - b[1] != crop_shape[0]:
        raise _bad("box", box, f"must be (x0, y0, x1, y1) >= 0 spanning the {crop_shape[1]}x"
                               f"{crop_shape[0]} crop, got {box!r}")
    return b


# ------------------------------------------------------------------------------------------ the reference


@dataclasses.dataclass(frozen=True, eq=False)
class StoredReference:
    """One stored reference: an RGB crop with its optional mask and where / when it was taken.

    Arrays are copied and made read-only on construction. ``name`` may be ``""`` before the store names it
    (:meth:`ReferenceStore.add` returns the named copy).
    """

    name: str
    """The reference's name (``""``: not yet named; the store assigns ``ref1``, ``ref2``, ...)."""
    crop: np.ndarray
    """RGB crop, (H, W, 3) uint8, H and W >= 2."""
    mask: np.ndarray | None
    """The object inside the crop, (H, W) bool with at least one pixel set; None = the whole crop."""
    source_frame: str
    """Frame id of the image the crop came from (the colour optical frame; ``""`` when unknown)."""
    stamp_ns: int
    """Stamp of that image, nanoseconds since the epoch (>= 0)."""
    camera_pose: np.ndarray | None
    """4x4 float64 T_world_camera of that image (rigid, finite); None when no pose was known."""
    world_position: np.ndarray | None
    """(3,) float64 last known position of the object in the world frame; None when unknown."""
    score: float
    """Confidence of the mask in [0, 1]; nan when unknown (e.g. a mask given by the user)."""
    origin: str
    """How it was made: ``"point"`` (3D click), ``"pixel"`` (image click) or ``"image"`` (image given directly)."""
    created: float = dataclasses.field(default_factory=time.time)
    """Unix time (s) at which the reference was made."""
    box: tuple[int, int, int, int] | None = None
    """Where the crop lies in the source image, ``(x0, y0, x1, y1)`` pixels (end exclusive); None when the crop is
    an image given directly."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        crop = _check_crop(self.crop)
        self._set("crop", crop)
        if self.mask is not None:
            self._set("mask", _check_mask(self.mask, crop_shape=crop.shape))
        _check_source_frame(self.source_frame)
        self._set("stamp_ns", _check_stamp_ns(self.stamp_ns))
        if self.camera_pose is not None:
            self._set("camera_pose", _check_camera_pose(self.camera_pose))
        if self.world_position is not None:
            self._set("world_position", _frozen(checked_position(self.world_position)))
        self._set("score", _check_score(self.score))
        _check_origin(self.origin)
        self._set("created", _check_created(self.created))
        if self.box is not None:
            self._set("box", _check_box(self.box, crop_shape=crop.shape))

    def _set(self, field: str, value: Any) -> None:
        object.__setattr__(self, field, value)

    def to_reference(self) -> Reference:
        """The crop + mask as an instruction :class:`~find_ros.instruction.Reference`."""
        return Reference(image=self.crop, mask=self.mask)

    def thumbnail(self, *, max_side: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (h, w, 3) uint8, mask (h, w) uint8 255 inside) with the long side at most ``max_side`` pixels.

        Never upscales. A reference without a mask gets an all-255 mask (the whole crop is the reference).
        """
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 2:
            raise InvalidStoredReference(f"thumbnail max_side must be an integer >= 2, got {max_side!r}",
                                         field="max_side", value=max_side)
        h, w = self.crop.shape[:2]
        mask = (self.mask.astype(np.uint8) * 255) if self.mask is not None else np.full((h, w), 255, np.uint8)
        scale = min(1.0, max_side / max(h, w))
        if scale >= 1.0:
            return self.crop.copy(), mask
        size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2: (width, height)
        rgb = cv2.resize(self.crop, size, interpolation=cv2.INTER_AREA)
        small = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if self.mask is not None and not small.any():  # a thin object vanished: keep its pixel of highest coverage
            cover = cv2.resize(self.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            small[np.unravel_index(int(np.argmax(cover)), cover.shape)] = 255
        return rgb, small
