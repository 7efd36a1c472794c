"""A click -> an object mask and a reference crop (pure numpy / OpenCV; the model's proposals come in as arrays).

A user points at an object, in 3D (RViz "Publish Point": a world point) or on the image (rqt_image_view: a
pixel). :func:`project_world_point` takes a 3D click into the frame (camera pose + intrinsics, checked against the
measured depth so a click on something the camera does not see is refused); :func:`mask_at_click` picks, among
FIND's segmentation proposals (the object queries' masks of task ``segment``), the one that is most confident at
the clicked pixel, keeps its connected part around the click that lies at the click's depth, and refuses a click
that no proposal covers (floor, wall); :func:`reference_crop` cuts the image + mask that become a stored
reference.

Every refusal is a :class:`ClickError` whose ``kind`` names the problem (``outside_image``, ``behind_camera``,
``no_depth``, ``occluded``, ``no_object``, ...) and whose message carries the offending values.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

__all__ = ["ClickError", "ClickMask", "project_world_point", "check_pixel", "mask_at_click", "reference_crop"]


class ClickError(ValueError):
    """A click that cannot become a reference; ``kind`` names the problem for counters and service answers."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class ClickMask:
    """The object under a click."""

    mask: np.ndarray
    """(H, W) bool at the frame's size."""
    score: float
    """The chosen proposal's mask probability at the clicked pixel, in [0, 1]."""
    proposal: int
    """Index of the chosen object query."""


def check_pixel(u: float, v: float, shape: tuple[int, int]) -> tuple[int, int]:
    """Integer pixel ``(u, v)`` (column, row) of a click inside an image of ``shape`` (H, W); raises
    :class:`ClickError` (``outside_image``) for a pixel outside it or a non-finite coordinate."""
    H, W = int(shape[0]), int(shape[1])
    if not (np.isfinite(u) and np.isfinite(v)):
        raise ClickError("outside_image", f"click pixel ({u}, {v}) is not finite")
    ui, vi = int(np.floor(u)), int(np.floor(v))
    if not (0 <= ui < W and 0 <= vi < H):
        raise ClickError("outside_image", f"click pixel (u={u:.1f}, v={v:.1f}) is outside the {W}x{H} image")
    return ui, vi


def project_world_point(p_world: np.ndarray, *, T_world_cam: np.ndarray, K: np.ndarray, depth_m: np.ndarray,
                        depth_tolerance_m: float = 0.1) -> tuple[int, int]:
    """The pixel ``(u, v)`` where the world point ``p_world`` appears in a frame with camera pose ``T_world_cam``
    (optical frame -> world), intrinsics ``K`` and metric depth ``depth_m`` (0 / NaN = invalid).

    The point must be in front of the camera, inside the image, where the depth is valid (median of the 5x5
    pixels around it), and on the visible surface: its depth along the optical axis within ``depth_tolerance_m``
    of the measured depth (a point behind an occluder or in free space is refused). Raises :class:`ClickError`.
    """
    p = np.asarray(p_world, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ClickError("bad_point", f"click point must be 3 finite numbers, got {np.asarray(p_world).tolist()}")
    T = np.asarray(T_world_cam, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    pc = R.T @ (p - t)
    if pc[2] <= 1e-6:
        raise ClickError("behind_camera", f"click point {np.round(p, 3).tolist()} is behind the camera "
                                          f"(z = {pc[2]:.3f} m in the optical frame)")
    uv = K[:2, :2] @ (pc[:2] / pc[2]) + K[:2, 2]
    u, v = check_pixel(float(uv[0]), float(uv[1]), depth_m.shape[:2])
    d = _depth_at(depth_m, u, v)
    if abs(d - pc[2]) > depth_tolerance_m:
        raise ClickError("occluded", f"click point {np.round(p, 3).tolist()} is {pc[2]:.3f} m from the camera but "
                                     f"the depth at its pixel ({u}, {v}) is {d:.3f} m (tolerance "
                                     f"{depth_tolerance_m} m): not on the surface the camera sees")
    return u, v


def _depth_at(depth_m: np.ndarray, u: int, v: int) -> float:
    win = depth_m[max(v - 2, 0):v + 3, max(u - 2, 0):u + 3]
    good = win[np.isfinite(win) & (win > 0)]
    if good.size == 0:
        raise ClickError("no_depth", f"no valid depth at the clicked pixel ({u}, {v}) or next to it")
    return float(np.median(good))


def mask_at_click(proposal_logits: np.ndarray, u: int, v: int, *, shape: tuple[int, int],
                  depth_m: np.ndarray | None = None, min_score: float = 0.5,
                  depth_tolerance_m: float = 0.35) -> ClickMask:
    """The object under pixel ``(u, v)`` of a frame of ``shape`` (H, W) from segmentation proposals.

    ``proposal_logits``: (Q, h, w) mask logits of the object queries at the model's mask resolution. The proposal
    with the largest logit at the click is chosen (its probability there is the score; below ``min_score`` the
    click is on no object, e.g. the floor or a wall: ``no_object``). Its mask is upsampled to (H, W); with
    ``depth_m`` the pixels whose depth differs from the click's by more than ``depth_tolerance_m`` are dropped;
    the connected part containing the click is kept.
    """
    logits = np.asarray(proposal_logits, dtype=np.float32)
    if logits.ndim != 3 or logits.shape[0] == 0:
        raise ClickError("no_object", f"no segmentation proposals (got shape {logits.shape})")
    H, W = int(shape[0]), int(shape[1])
    u, v = check_pixel(u, v, (H, W))
    _, h, w = logits.shape
    at = logits[:, min(int(v * h / H), h - 1), min(int(u * w / W), w - 1)]
    q = int(np.argmax(at))
    score = float(1.0 / (1.0 + np.exp(-float(at[q]))))
    if score < min_score:
        raise ClickError("no_object", f"no object under the click at ({u}, {v}): the best segmentation proposal "
                                      f"scores {score:.2f} there (min_score {min_score}); the floor or a wall?")
    # half-pixel-centred bilinear upsampling, as the grounder does for its masks
    mask = cv2.resize(logits[q], (W, H), interpolation=cv2.INTER_LINEAR) > 0
    if depth_m is not None:
        if depth_m.shape[:2] != (H, W):
            raise ClickError("size_mismatch", f"depth {depth_m.shape[1]}x{depth_m.shape[0]} does not match the "
                                              f"{W}x{H} frame")
        d0 = _depth_at(depth_m, u, v)
        with np.errstate(invalid="ignore"):
            near = np.abs(depth_m - d0) < depth_tolerance_m
        mask &= near | ~(np.isfinite(depth_m) & (depth_m > 0))  # pixels without depth keep the proposal's word
    mask[v, u] = True
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return ClickMask(mask=labels == labels[v, u], score=score, proposal=q)


def reference_crop(rgb: np.ndarray, mask: np.ndarray, *, margin: float = 0.15,
                   min_side: int = 16) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """The reference image and mask of an object and the crop's box ``(x0, y0, x1, y1)`` in ``rgb``: the mask's
    bounding box grown by ``margin`` of its size on each side (at least ``min_side`` pixels wide and high, clipped
    to the image). Raises :class:`ClickError` for an empty mask or one that does not match the image."""
    if mask.shape != rgb.shape[:2]:
        raise ClickError("size_mismatch", f"mask {mask.shape} does not match the image {rgb.shape[:2]}")
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ClickError("no_object", "the object mask is empty")
    H, W = mask.shape
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    grow_y = max(int(round((y1 - y0) * margin)), (min_side - (y1 - y0) + 1) // 2, 0)
    grow_x = max(int(round((x1 - x0) * margin)), (min_side - (x1 - x0) + 1) // 2, 0)
    y0, y1 = max(y0 - grow_y, 0), min(y1 + grow_y, H)
    x0, x1 = max(x0 - grow_x, 0), min(x1 + grow_x, W)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), np.ascontiguousarray(mask[y0:y1, x0:x1]), (x0, y0, x1, y1)
