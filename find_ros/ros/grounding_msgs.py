"""The perception node's output messages of one grounded frame: ``Grounding``, the label mask, the overlay and the
target poses.

Typed module functions from a core :class:`~find_ros.grounding.pipeline.FrameResult` (and the instruction it was
grounded for) to messages; every message copies the frame's ``header``; world poses are stamped like it, in
``world_frame``. Pure: messages are built, never published.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Vector3
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from find_ros.msg import GroundedEntity, Grounding
from find_ros.ros import conversions as conv
from find_ros.ros.markers import marker_array

__all__ = ["pose_msg", "entity_msg", "grounding_msg", "label_mask_msg", "overlay_msg", "target_pose_msgs",
           "frame_messages", "display_messages"]


def pose_msg(position: Sequence[float] | np.ndarray, orientation_xyzw: Sequence[float] | np.ndarray) -> Pose:
    """A ``geometry_msgs/Pose`` of a position (3,) and an (x, y, z, w) quaternion."""
    p = np.asarray(position, dtype=float)
    q = np.asarray(orientation_xyzw, dtype=float)
    return Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def entity_msg(e: Any, *, header: Header, world_frame: str) -> GroundedEntity:
    """A ``GroundedEntity`` of a :class:`~find_ros.grounding.pipeline.TrackedEntity`: label, box and poses only when
    it is ``found`` (the pipeline's decision: score >= score_threshold, not lost, non-empty mask)."""
    found = bool(e.found)
    g = GroundedEntity(phrase=e.phrase, entity_index=int(e.entity_index),
                       track_id=int(e.track_id if e.track_id is not None else -1),
                       score=float(e.score), found=found, lost=bool(e.lost),
                       label=int(e.entity_index) + 1 if found else 0)
    x0, y0, x1, y1 = (int(v) for v in e.box)
    if found and x1 > x0 and y1 > y0:
        g.box = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0)
    if found and e.pose_cam is not None:
        g.pose_valid = True
        g.pose = pose_msg(e.pose_cam.position, e.pose_cam.orientation_xyzw)
        ex = np.asarray(e.pose_cam.extent, dtype=float)
        g.extent = Vector3(x=float(ex[0]), y=float(ex[1]), z=float(ex[2]))
        if e.pose_world is not None:
            g.world_pose_valid = True
            g.world_pose = PoseStamped(pose=pose_msg(e.pose_world.position, e.pose_world.orientation_xyzw))
            g.world_pose.header.stamp = header.stamp
            g.world_pose.header.frame_id = world_frame
    return g


def grounding_msg(header: Header, instruction: Any, result: Any, *, grounder: str, world_frame: str,
                  resolved: Any = None) -> tuple[Grounding, GroundedEntity | None]:
    """The ``Grounding`` of ``result`` (``processing_ms`` left 0 for the caller) and its target: the found entity
    with a pose and the highest score (the first of equals), None when there is none. With ``resolved`` (a
    :class:`~find_ros.grounding.reference_store.ResolvedInstruction`) each entity carries the stored reference names
    it mentions and its phrase as written (``"the <mug>"``)."""
    out = Grounding(header=header, instruction_id=instruction.id, instruction_text=instruction.text, grounder=grounder)
    best, best_score = None, -1.0
    for e in result.entities:
        g = entity_msg(e, header=header, world_frame=world_frame)
        i = int(e.entity_index)
        if resolved is not None and i < len(resolved.entity_names):
            g.reference_names = list(resolved.entity_names[i])
            g.phrase = resolved.entity_phrases[i]
        if g.pose_valid and e.score > best_score:
            best, best_score = g, float(e.score)
        out.entities.append(g)
    return out, best


def label_mask_msg(label_mask: np.ndarray, header: Header) -> Image:
    """``find/mask``: mono8, ``entity_index + 1`` on found entities' pixels, 0 elsewhere."""
    return conv.numpy_to_image(np.ascontiguousarray(label_mask, dtype=np.uint8), "mono8", header=header)


def overlay_msg(overlay: np.ndarray, header: Header) -> Image:
    """``find/overlay``: the rgb8 overlay image."""
    return conv.numpy_to_image(overlay, "rgb8", header=header)


def target_pose_msgs(header: Header, best: GroundedEntity | None) -> tuple[PoseStamped | None, PoseStamped | None]:
    """(``find/target_pose`` in the camera frame, ``find/target_pose_world``) of the target; None where absent."""
    if best is None:
        return None, None
    return PoseStamped(header=header, pose=best.pose), best.world_pose if best.world_pose_valid else None


def frame_messages(header: Header, instruction: Any, result: Any, *, grounder: str, world_frame: str,
                   resolved: Any = None) -> tuple[Grounding, list[tuple[str, Any]]]:
    """The messages a consumer acts on, first: the ``Grounding`` (see :func:`grounding_msg`) and, in publishing
    order, ``(output, message)`` for ``target_pose`` / ``target_pose_world`` (when there is a target) and ``mask``.
    The display outputs follow them (:func:`display_messages`)."""
    out, best = grounding_msg(header, instruction, result, grounder=grounder, world_frame=world_frame,
                              resolved=resolved)
    msgs: list[tuple[str, Any]] = []
    target, target_world = target_pose_msgs(header, best)
    if target is not None:
        msgs.append(("target_pose", target))
    if target_world is not None:
        msgs.append(("target_pose_world", target_world))
    msgs.append(("mask", label_mask_msg(result.label_mask, header)))
    return out, msgs


def display_messages(header: Header, grounding: Grounding, *, overlay: np.ndarray | None = None,
                     markers: bool = True) -> list[tuple[str, Any]]:
    """The display outputs of a grounded frame, published after :func:`frame_messages` (off the latency path of the
    grounding): ``overlay`` (when given) and ``markers`` (when ``markers``; world frame when the camera pose is
    known, :func:`find_ros.ros.markers.marker_array`)."""
    msgs: list[tuple[str, Any]] = []
    if overlay is not None:
        msgs.append(("overlay", overlay_msg(overlay, header)))
    if markers:
        msgs.append(("markers", marker_array(grounding.entities, header)))
    return msgs
