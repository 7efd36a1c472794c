"""RViz markers of the grounded targets (pure: message types only, no rclpy).

Per frame, ``find/markers`` carries one ``MarkerArray``: a ``DELETEALL`` (the previous frame's targets go), then
per found entity with a 3D pose a translucent box (``find/targets``: the pose and its extent) and a text label
above it (``find/labels``: phrase, track id, score). Each entity's markers are in the world frame at its world pose
when the camera pose of the frame was known (``world_pose_valid``), otherwise in the camera's optical frame at its
camera pose. So RViz with Fixed Frame ``map`` draws them without any transform when a pose is known, and through
``/tf`` (published by the sim camera, the replay node or a real camera stack) otherwise.

The target frame's z axis is "up" in both frames (:mod:`find_ros.grounding.geometry`): the box's scale is the
entity's extent (depth, width, height) and the label sits above the box along that axis.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from find_ros.grounding.pipeline import ENTITY_COLOURS
from find_ros.msg import GroundedEntity
from find_ros.ros import conversions as conv

__all__ = ["MARKER_COLOURS", "TARGETS_NS", "LABELS_NS", "MIN_SCALE_M", "LABEL_GAP_M", "LABEL_HEIGHT_M",
           "marker_frame", "label_text", "entity_markers", "marker_array"]

MARKER_COLOURS = ENTITY_COLOURS
"""RGB of the boxes, by entity index (cycled): the overlay's colours
(:data:`find_ros.grounding.pipeline.ENTITY_COLOURS`)."""
TARGETS_NS = "find/targets"
"""Namespace of the boxes (marker id = entity index)."""
LABELS_NS = "find/labels"
"""Namespace of the text labels (marker id = entity index)."""
MIN_SCALE_M = 0.01
"""Smallest box side (m): a flat or degenerate extent still draws."""
LABEL_GAP_M = 0.05
"""Gap (m) between the top of the box and the label."""
LABEL_HEIGHT_M = 0.06
"""Text height (m) of the labels."""


def marker_frame(entity: GroundedEntity, header: Header) -> tuple[str, Pose]:
    """``(frame_id, pose)`` the entity's markers use: its world pose in the world frame when valid, else its
    camera pose in the optical frame of ``header``."""
    if entity.world_pose_valid and entity.world_pose.header.frame_id:
        return entity.world_pose.header.frame_id, entity.world_pose.pose
    return header.frame_id, entity.pose


def label_text(entity: GroundedEntity) -> str:
    """``"<phrase> #<track id> <score>"`` (no ``#`` part before the entity has a track)."""
    track = f" #{entity.track_id}" if entity.track_id >= 0 else ""
    return f"{entity.phrase}{track} {entity.score:.2f}"


def entity_markers(entity: GroundedEntity, header: Header) -> list[Marker]:
    """Box and label of one entity with a pose (``pose_valid``), stamped like ``header``; ``[]`` without a pose."""
    if not entity.pose_valid:
        return []
    frame_id, pose = marker_frame(entity, header)
    h = Header(stamp=header.stamp, frame_id=frame_id)
    r, g, b = MARKER_COLOURS[entity.entity_index % len(MARKER_COLOURS)]
    ext = np.maximum([entity.extent.x, entity.extent.y, entity.extent.z], MIN_SCALE_M)
    box = Marker(header=h, ns=TARGETS_NS, id=int(entity.entity_index), type=Marker.CUBE, action=Marker.ADD,
                 pose=pose, scale=Vector3(x=float(ext[0]), y=float(ext[1]), z=float(ext[2])),
                 color=ColorRGBA(r=r, g=g, b=b, a=0.45))
    up = conv.pose_to_matrix(pose)[:3, 2]  # the target's z axis ("up") in the marker frame
    at = np.array([pose.position.x, pose.position.y, pose.position.z]) + up * (ext[2] / 2 + LABEL_GAP_M)
    label = Marker(header=h, ns=LABELS_NS, id=int(entity.entity_index), type=Marker.TEXT_VIEW_FACING,
                   action=Marker.ADD, pose=Pose(position=Point(x=float(at[0]), y=float(at[1]), z=float(at[2])),
                                                orientation=Quaternion(w=1.0)),
                   scale=Vector3(z=LABEL_HEIGHT_M), color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                   text=label_text(entity))
    return [box, label]


def marker_array(entities: Iterable[GroundedEntity], header: Header) -> MarkerArray:
    """The frame's ``MarkerArray``: ``DELETEALL`` (stamped and framed like ``header``, the image header) then
    :func:`entity_markers` of every found entity."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for e in entities:
        if e.found:
            out.markers.extend(entity_markers(e, header))
    return out
