"""The messages of stored references (:mod:`find_ros.ros.reference_bridge`): one ``find_ros/StoredReference`` per
reference (thumbnail, mask, box, position) and the ``find/reference_markers`` array (a sphere and a label each)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from find_ros.grounding.reference_store import StoredReference
from find_ros.msg import StoredReference as StoredReferenceMsg
from find_ros.ros import conversions as conv

__all__ = ["reference_msg", "reference_markers"]


def reference_msg(r: StoredReference) -> StoredReferenceMsg:
    """``r`` as a message: a thumbnail (at most 128 px a side) and its mask, the crop box, the world position."""
    thumb, tmask = r.thumbnail(max_side=128)
    m = StoredReferenceMsg(name=r.name, thumbnail=conv.numpy_to_image(thumb, "rgb8"),
                           mask=conv.numpy_to_image(np.where(tmask, 255, 0).astype(np.uint8), "mono8"),
                           source_frame=r.source_frame, stamp=conv.stamp_from_ns(r.stamp_ns),
                           score=float(r.score) if math.isfinite(r.score) else float("nan"), origin=r.origin)
    if r.box is not None:
        x0, y0, x1, y1 = r.box
        m.box = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0)
    if r.world_position is not None:
        p = r.world_position
        m.has_position, m.position = True, Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
    return m


def reference_markers(refs: Sequence[StoredReference], header: Header) -> MarkerArray:
    """A DELETEALL, then a sphere and a ``<name>`` label at each reference's last known world position."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for i, r in enumerate(refs):
        if r.world_position is None:
            continue
        p = r.world_position
        pose = Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])), orientation=Quaternion(w=1.0))
        out.markers.append(Marker(header=header, ns="find_references", id=2 * i, type=Marker.SPHERE,
                                  action=Marker.ADD, pose=pose, scale=Vector3(x=0.08, y=0.08, z=0.08),
                                  color=ColorRGBA(r=1.0, g=1.0, b=0.0, a=0.8)))
        label = Pose(position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2]) + 0.12),
                     orientation=Quaternion(w=1.0))
        out.markers.append(Marker(header=header, ns="find_reference_labels", id=2 * i + 1,
                                  type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, pose=label,
                                  scale=Vector3(z=0.07), color=ColorRGBA(r=1.0, g=1.0, b=0.0, a=1.0),
                                  text=f"<{r.name}>"))
    return out
