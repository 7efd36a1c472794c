"""Stored references on the perception node: clicks -> named references, the services, the latched list, markers.

A click in RViz ("Publish Point": ``geometry_msgs/PointStamped`` in the fixed frame, remapped to
``find/clicked_point``) or on the overlay image in rqt_image_view (a pixel, remapped from ``find/overlay_mouse_left``
to ``find/clicked_pixel``) is resolved in a recent frame (:mod:`find_ros.grounding.click`), segmented by the
grounder's segmentation proposals, cropped, and stored under an automatic name (``ref1``, ``ref2``, ...) in a
:class:`~find_ros.grounding.reference_store.ReferenceStore` (``reference_dir``, loaded at activate).
``find/reference/add`` does the same with a chosen name (or from an image + mask), ``find/reference/list`` and
``find/reference/remove`` manage the store; ``find/references`` (transient-local) carries the stored crops and
``find/reference_markers`` (transient-local) their last known world positions. Instructions name them as
``<name>`` (:meth:`ReferenceBridge.resolve`).

Every refusal is answered (service ``message``, a throttled log line for topic clicks), stores nothing and is
counted in ``find/status`` (``clicks_rejected``, ``last_click_error``).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from geometry_msgs.msg import PointStamped
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from find_ros.grounding.click import ClickError, check_pixel, mask_at_click, project_world_point, reference_crop
from find_ros.grounding.geometry import backproject
from find_ros.grounding.reference_store import (ReferenceStore, ReferenceStoreError, ResolvedInstruction,
                                                StoredReference, resolve_named_references)
from find_ros.instruction import Reference
from find_ros.msg import ReferenceList
from find_ros.ros.endpoints import answers_errors, destroy_endpoints
from find_ros.ros.qos import LATCHED_QOS
from find_ros.ros.reference_msgs import reference_markers, reference_msg
from find_ros.ros.references import references_from_msgs
from find_ros.srv import AddReference, ListReferences, RemoveReference
from find_ros.stamps import NS_PER_S, stamp_to_ns

__all__ = ["ReferenceBridge", "CLICKED_POINT_TOPIC", "CLICKED_PIXEL_TOPIC", "REFERENCES_TOPIC",
           "REFERENCE_MARKERS_TOPIC", "ADD_SERVICE", "LIST_SERVICE", "REMOVE_SERVICE", "FRAMES_KEPT"]

LOG = logging.getLogger(__name__)

CLICKED_POINT_TOPIC = "find/clicked_point"
CLICKED_PIXEL_TOPIC = "find/clicked_pixel"
REFERENCES_TOPIC = "find/references"
REFERENCE_MARKERS_TOPIC = "find/reference_markers"
ADD_SERVICE = "find/reference/add"
LIST_SERVICE = "find/reference/list"
REMOVE_SERVICE = "find/reference/remove"
FRAMES_KEPT = 8
"""Recent frames kept for clicks (a pixel click picks the one with the nearest stamp): about 2 MB each at 640x480."""


@dataclasses.dataclass(frozen=True)
class _Frame:
    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray | None


@dataclasses.dataclass
class _Flash:
    """What the overlay marks for a few frames after a reference was made."""

    name: str
    uv: tuple[int, int]
    mask: np.ndarray
    frames_left: int


_answer = answers_errors("reference")  # service callbacks answer their errors (find_ros.ros.endpoints)


class ReferenceBridge:
    """The stored references of one perception node (see the module docstring)."""

    def __init__(self, *, node: Any, params: dict[str, Any]) -> None:
        self._node = node
        self._p = params
        mk = node.create_lifecycle_publisher
        self._pubs = {"list": mk(ReferenceList, REFERENCES_TOPIC, LATCHED_QOS),
                      "markers": mk(MarkerArray, REFERENCE_MARKERS_TOPIC, LATCHED_QOS)}
        self.store: ReferenceStore | None = None
        self._segment: Callable[[np.ndarray], np.ndarray] | None = None
        self._model_lock: threading.Lock | None = None
        self._frames: collections.deque[_Frame] = collections.deque(maxlen=FRAMES_KEPT)
        self._lock = threading.Lock()  # guards _frames and _flash
        self._flash: _Flash | None = None
        self._subs: list[Any] = []
        self._srvs: list[Any] = []
        self.added = 0
        self.rejected = 0
        self.last_error = ""

    @property
    def directory(self) -> Path | None:
        """Where references persist: ``reference_dir``, or ``$ROS_HOME/find_ros/references`` (ROS_HOME defaulting
        to ``~/.ros``) when it is empty; None when ``reference_persist`` is false."""
        if not self._p.get("reference_persist", True):
            return None
        d = str(self._p.get("reference_dir", "")).strip()
        if d:
            return Path(d).expanduser()
        return Path(os.environ.get("ROS_HOME") or "~/.ros").expanduser() / "find_ros" / "references"

    # ------------------------------------------------------------------ lifecycle
    def activate(self, *, segment: Callable[[np.ndarray], np.ndarray] | None, model_lock: threading.Lock) -> None:
        """Load the store from ``reference_dir``, bind the grounder's segmentation (``segment(rgb)`` -> (Q, h, w)
        proposal logits, None when the grounder has none), create the click subscriptions and the services."""
        self.store = ReferenceStore(directory=self.directory, max_references=int(self._p["reference_max_count"]))
        self._segment, self._model_lock = segment, model_lock
        n = self._node
        self._subs = [n.create_subscription(PointStamped, CLICKED_POINT_TOPIC, self._on_clicked_point, 10),
                      n.create_subscription(PointStamped, CLICKED_PIXEL_TOPIC, self._on_clicked_pixel, 10)]
        self._srvs = [n.create_service(AddReference, ADD_SERVICE, self._srv_add),
                      n.create_service(ListReferences, LIST_SERVICE, self._srv_list),
                      n.create_service(RemoveReference, REMOVE_SERVICE, self._srv_remove)]
        where = str(self.directory) if self.directory is not None else "memory only (reference_persist is false)"
        n.get_logger().info(f"references: {len(self.store)} loaded from {where}"
                            + (f": {', '.join(self.store.names())}" if len(self.store) else ""))

    def publish(self) -> None:
        """The latched list and markers (after activation and every change)."""
        if self.store is None:
            return
        header = Header(stamp=self._node.get_clock().now().to_msg(), frame_id=str(self._p["world_frame"]))
        refs = self.store.references()
        self._pubs["list"].publish(ReferenceList(header=header, references=[reference_msg(r) for r in refs]))
        self._pubs["markers"].publish(reference_markers(refs, header))

    def deactivate(self) -> None:
        destroy_endpoints(self._node, subscriptions=self._subs, services=self._srvs)
        self._subs, self._srvs = [], []
        self._segment = self._model_lock = None
        with self._lock:
            self._frames.clear()
            self._flash = None
        self.store = None

    def destroy(self) -> None:
        self.deactivate()
        for p in self._pubs.values():
            self._node.destroy_lifecycle_publisher(p)
        self._pubs = {}

    def counters(self) -> dict:
        return {"references": len(self.store) if self.store is not None else 0, "references_added": self.added,
                "clicks_rejected": self.rejected, "last_click_error": self.last_error}

    # ------------------------------------------------------------------ frames, instructions, overlay
    def remember(self, header: Header, rgb: np.ndarray, depth_m: np.ndarray, K: np.ndarray,
                 T_world_cam: np.ndarray | None) -> None:
        """Keep a checked frame for clicks (the newest :data:`FRAMES_KEPT`; the arrays are not copied)."""
        with self._lock:
            self._frames.append(_Frame(stamp_to_ns(header.stamp), header.frame_id, rgb, depth_m, K, T_world_cam))

    def resolve(self, text: str, references: Sequence[Reference] = (), *, id: str = "") -> ResolvedInstruction:
        """``text`` with its ``<name>`` placeholders replaced by stored references (see
        :func:`~find_ros.grounding.reference_store.resolve_named_references`)."""
        store = self.store if self.store is not None else ReferenceStore(directory=None)  # inactive: no names
        return resolve_named_references(text, store, references, id=id)

    def observe(self, resolved: ResolvedInstruction | None, entities: Sequence[Any]) -> None:
        """Record the world position of each found ``GroundedEntity`` that names exactly one stored reference."""
        if resolved is None or self.store is None or not resolved.names:
            return
        changed = False
        for g in entities:
            names = resolved.entity_names[g.entity_index] if g.entity_index < len(resolved.entity_names) else ()
            if g.found and g.world_pose_valid and len(names) == 1 and names[0] in self.store:
                p = g.world_pose.pose.position
                try:
                    self.store.update_position(names[0], (p.x, p.y, p.z))
                    changed = True
                except (ReferenceStoreError, OSError) as e:
                    LOG.warning("reference %s: position not recorded: %s", names[0], e)
        if changed:
            self._pubs["markers"].publish(reference_markers(self.store.references(), Header(
                stamp=self._node.get_clock().now().to_msg(), frame_id=str(self._p["world_frame"]))))

    def flashing(self) -> bool:
        return self._flash is not None

    def decorate(self, overlay: np.ndarray) -> np.ndarray:
        """Mark the newest reference's click and mask on ``overlay`` (in place) for ``click_overlay_frames``."""
        with self._lock:
            f = self._flash
            if f is None:
                return overlay
            f.frames_left -= 1
            if f.frames_left <= 0:
                self._flash = None
        if f.mask.shape != overlay.shape[:2]:
            return overlay
        contours, _ = cv2.findContours(f.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, contours, -1, (255, 255, 0), 2)
        cv2.drawMarker(overlay, f.uv, (255, 0, 255), cv2.MARKER_CROSS, 18, 2)
        cv2.putText(overlay, f"new reference <{f.name}>", (f.uv[0] + 10, max(f.uv[1] - 10, 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        return overlay

    # ------------------------------------------------------------------ clicks
    def _on_clicked_point(self, msg: PointStamped) -> None:
        self._click_topic("point", msg)

    def _on_clicked_pixel(self, msg: PointStamped) -> None:
        self._click_topic("pixel", msg)

    def _click_topic(self, kind: str, msg: PointStamped) -> None:
        try:
            ref = self.add_from_click(kind, msg, name=None)
        except (ClickError, ReferenceStoreError, OSError) as e:
            return self._reject(f"{kind} click", e)
        except Exception as e:  # noqa: BLE001 - one bad click never takes the node down
            return self._reject(f"{kind} click", e)
        self._node.get_logger().info(f"{kind} click -> reference <{ref.name}> (score {ref.score:.2f}); "
                                     f"name it in an instruction, e.g. 'the <{ref.name}>'")

    def _reject(self, what: str, e: Exception) -> None:
        self.rejected += 1
        kind = getattr(e, "kind", type(e).__name__)
        self.last_error = f"[{kind}] {e}"
        self._node.get_logger().warning(f"{what} refused, nothing stored: [{kind}] {e}",
                                        throttle_duration_sec=float(self._p.get("log_throttle_s", 5.0)))

    def _frame_for(self, stamp_ns: int, *, nearest: bool) -> _Frame:
        with self._lock:
            frames = list(self._frames)
        if not frames:
            raise ClickError("no_frame", "no camera frame received yet: a click needs a frame to resolve it in")
        if stamp_ns == 0:
            return frames[-1]
        frame = min(frames, key=lambda f: abs(f.stamp_ns - stamp_ns)) if nearest else frames[-1]
        dt = (stamp_ns - frame.stamp_ns) / NS_PER_S
        max_age = float(self._p["click_max_age_s"])
        if dt > max_age:
            raise ClickError("future_stamp", f"click stamp is {dt:.2f} s after the newest frame (click_max_age_s "
                                             f"{max_age}): a clock mismatch?")
        if dt < -max_age:
            raise ClickError("stale_stamp", f"click stamp is {-dt:.2f} s older than the frame it would be resolved "
                                            f"in (click_max_age_s {max_age})")
        return frame

    def add_from_click(self, kind: str, msg: PointStamped, *, name: str | None) -> StoredReference:
        """Store the object under a click (``kind`` "point": a 3D point in the world or camera frame; "pixel": u, v
        of the colour image). Raises :class:`ClickError` / :class:`ReferenceStoreError`; nothing stored then."""
        if self.store is None:
            raise ClickError("inactive", "the node is not active")
        if name is not None:
            self.store.check_name(name)  # a bad name is refused before the model runs (duplicates: at add)
        stamp_ns = stamp_to_ns(msg.header.stamp)
        frame = self._frame_for(stamp_ns, nearest=(kind == "pixel"))
        H, W = frame.depth_m.shape[:2]
        if kind == "point":
            p = np.array([msg.point.x, msg.point.y, msg.point.z], dtype=np.float64)
            fid = msg.header.frame_id
            if fid in ("", str(self._p["world_frame"])):
                if frame.T_world_cam is None:
                    raise ClickError("no_pose", f"no camera pose for the newest frame: a click in "
                                                f"{self._p['world_frame']!r} cannot be projected into it (publish "
                                                "camera/pose or camera/odom, or click on the image)")
                T = frame.T_world_cam
            elif fid == frame.frame_id:
                T = np.eye(4)
            else:
                raise ClickError("unknown_frame", f"cannot transform a click in frame {fid!r}: clicks must be in "
                                                  f"the world frame {self._p['world_frame']!r} or the camera frame "
                                                  f"{frame.frame_id!r}")
            u, v = project_world_point(p, T_world_cam=T, K=frame.K, depth_m=frame.depth_m,
                                       depth_tolerance_m=float(self._p["click_surface_tolerance_m"]))
        elif kind == "pixel":
            u, v = check_pixel(msg.point.x, msg.point.y, (H, W))
        else:
            raise ClickError("bad_source", f"unknown click kind {kind!r}")
        if self._segment is None:
            raise ClickError("no_segmentation", f"grounder {self._p.get('grounder')!r} has no segmentation: clicks "
                                                "need grounder:=find (or give an image + mask to find/reference/add)")
        with self._model_lock:
            logits = self._segment(frame.rgb)
        hit = mask_at_click(logits, u, v, shape=(H, W), depth_m=frame.depth_m,
                            min_score=float(self._p["click_min_score"]),
                            depth_tolerance_m=float(self._p["click_mask_depth_tolerance_m"]))
        crop, crop_mask, box = reference_crop(frame.rgb, hit.mask)
        position = None  # the world position of the masked surface's median point (needs the camera pose)
        pts = backproject(frame.depth_m, frame.K, hit.mask)
        if len(pts) and frame.T_world_cam is not None:
            position = frame.T_world_cam[:3, :3] @ np.median(pts, axis=0) + frame.T_world_cam[:3, 3]
        ref = StoredReference(name=name or "", crop=crop, mask=crop_mask, source_frame=frame.frame_id,
                              stamp_ns=frame.stamp_ns, camera_pose=frame.T_world_cam, world_position=position,
                              score=float(hit.score), origin=kind, box=box)
        stored = self.store.add(ref, name=name)
        self.added += 1
        with self._lock:
            self._flash = _Flash(stored.name, (u, v), hit.mask, int(self._p["click_overlay_frames"]))
        self.publish()
        return stored

    # ------------------------------------------------------------------ services
    @_answer
    def _srv_add(self, req, resp):
        name = req.name.strip() or None
        try:
            if req.source == AddReference.Request.SOURCE_POINT:
                stored = self.add_from_click("point", req.point, name=name)
            elif req.source == AddReference.Request.SOURCE_PIXEL:
                stored = self.add_from_click("pixel", req.pixel, name=name)
            elif req.source == AddReference.Request.SOURCE_IMAGE:
                stored = self._add_image(req.image, req.mask, name=name)
            else:
                raise ClickError("bad_source", f"source {req.source} is none of SOURCE_POINT (0), SOURCE_PIXEL (1), "
                                               "SOURCE_IMAGE (2)")
        except Exception as e:  # noqa: BLE001 - answered, counted, nothing stored
            self._reject("find/reference/add", e)
            resp.success, resp.message, resp.score = False, f"[{getattr(e, 'kind', type(e).__name__)}] {e}", \
                float("nan")
            return resp
        resp.success, resp.name, resp.score = True, stored.name, float(stored.score)
        resp.reference = reference_msg(stored)
        resp.message = (f"stored <{stored.name}> ({stored.origin}, {stored.crop.shape[1]}x{stored.crop.shape[0]} "
                        f"crop, score {stored.score:.2f})")
        self._node.get_logger().info(f"find/reference/add: {resp.message}")
        return resp

    def _add_image(self, image, mask, *, name: str | None) -> StoredReference:
        if self.store is None:
            raise ClickError("inactive", "the node is not active")
        masks = [mask] if (mask.width and mask.height) else []
        (r,) = references_from_msgs([image], masks, max_pixels=int(self._p["max_image_pixels"]))
        ref = StoredReference(name=name or "", crop=r.image, mask=r.mask, source_frame=image.header.frame_id,
                              stamp_ns=stamp_to_ns(image.header.stamp), camera_pose=None, world_position=None,
                              score=float("nan"), origin="image")
        stored = self.store.add(ref, name=name)
        self.added += 1
        self.publish()
        return stored

    @_answer
    def _srv_list(self, req, resp):
        resp.references = [reference_msg(r) for r in (self.store.references() if self.store is not None else [])]
        return resp

    @_answer
    def _srv_remove(self, req, resp):
        if self.store is None:
            resp.success, resp.message = False, "the node is not active"
            return resp
        try:
            self.store.remove(req.name)
        except ReferenceStoreError as e:
            resp.success, resp.message = False, str(e)
            return resp
        resp.success, resp.message = True, f"removed <{req.name}>"
        self._node.get_logger().info(f"find/reference/remove: {resp.message}")
        self.publish()
        return resp
