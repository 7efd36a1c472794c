"""find_ros.ros.markers: the perception node's RViz markers, built from GroundedEntity messages (pure, no DDS)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("find_ros.msg")

from geometry_msgs.msg import PoseStamped, Vector3  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from find_ros.msg import GroundedEntity  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.markers import LABELS_NS, TARGETS_NS, label_text, marker_array  # noqa: E402

OPTICAL = "camera_color_optical_frame"
# target frame in the camera: x toward the camera (-z optical), y = +x optical, z = up (-y optical)
R_CAM_TARGET = np.array([[0.0, 1, 0], [0, 0, -1], [-1, 0, 0]])


def _header() -> Header:
    h = Header(frame_id=OPTICAL)
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def _entity(*, index=0, world: bool, found=True, track_id=3) -> GroundedEntity:
    T_cam = np.eye(4)
    T_cam[:3, :3], T_cam[:3, 3] = R_CAM_TARGET, (0.1, -0.2, 1.5)
    e = GroundedEntity(phrase="the red chair", entity_index=index, track_id=track_id, score=0.87, found=found,
                       pose_valid=True, pose=conv.matrix_to_pose(T_cam), extent=Vector3(x=0.2, y=0.4, z=0.8))
    if world:  # world z up; the target 3 m along world x, its x axis facing back toward the origin
        T_w = np.eye(4)
        T_w[:3, :3] = [[-1.0, 0, 0], [0, -1, 0], [0, 0, 1]]
        T_w[:3, 3] = (3.0, 0.5, 0.4)
        e.world_pose_valid = True
        e.world_pose = PoseStamped(pose=conv.matrix_to_pose(T_w))
        e.world_pose.header.frame_id = "map"
        e.world_pose.header.stamp = _header().stamp
    return e


def _by_ns(markers, ns) -> list[Marker]:
    return [m for m in markers if m.ns == ns]


def test_markers_are_in_the_world_frame_when_the_camera_pose_is_known():
    h = _header()
    arr = marker_array([_entity(world=True)], h)
    assert arr.markers[0].action == Marker.DELETEALL and arr.markers[0].header == h
    (box,) = _by_ns(arr.markers, TARGETS_NS)
    (label,) = _by_ns(arr.markers, LABELS_NS)
    for m in (box, label):
        assert m.header.frame_id == "map" and m.header.stamp == h.stamp and m.action == Marker.ADD
    assert box.type == Marker.CUBE
    assert (box.pose.position.x, box.pose.position.y, box.pose.position.z) == pytest.approx((3.0, 0.5, 0.4))
    assert (box.scale.x, box.scale.y, box.scale.z) == pytest.approx((0.2, 0.4, 0.8))
    # the label floats above the box along world z
    assert label.type == Marker.TEXT_VIEW_FACING
    assert (label.pose.position.x, label.pose.position.y) == pytest.approx((3.0, 0.5))
    assert label.pose.position.z == pytest.approx(0.4 + 0.4 + 0.05)
    assert label.text == "the red chair #3 0.87"


def test_markers_stay_in_the_optical_frame_without_a_camera_pose():
    h = _header()
    arr = marker_array([_entity(world=False)], h)
    (box,) = _by_ns(arr.markers, TARGETS_NS)
    (label,) = _by_ns(arr.markers, LABELS_NS)
    assert box.header.frame_id == label.header.frame_id == OPTICAL
    assert (box.pose.position.x, box.pose.position.y, box.pose.position.z) == pytest.approx((0.1, -0.2, 1.5))
    # "up" in the optical frame is -y: the label sits above the box in the image
    assert (label.pose.position.x, label.pose.position.y, label.pose.position.z) == pytest.approx(
        (0.1, -0.2 - 0.4 - 0.05, 1.5))


def test_only_found_entities_with_a_pose_get_markers_and_ids_follow_the_entity():
    h = _header()
    lost = _entity(index=1, world=True, found=False)
    no_pose = _entity(index=2, world=False)
    no_pose.pose_valid = False
    untracked = _entity(index=7, world=True, track_id=-1)
    arr = marker_array([_entity(index=0, world=True), lost, no_pose, untracked], h)
    assert [m.action for m in arr.markers[:1]] == [Marker.DELETEALL]
    assert sorted((m.ns, m.id) for m in arr.markers[1:]) == [(LABELS_NS, 0), (LABELS_NS, 7), (TARGETS_NS, 0),
                                                             (TARGETS_NS, 7)]
    assert label_text(untracked) == "the red chair 0.87"  # no track yet: no "#id"
    colours = {m.id: (m.color.r, m.color.g, m.color.b) for m in _by_ns(arr.markers, TARGETS_NS)}
    assert colours[0] != colours[7]
    assert [m.action for m in marker_array([], h).markers] == [Marker.DELETEALL]


def test_a_flat_extent_still_draws():
    e = _entity(world=True)
    e.extent = Vector3(x=0.0, y=0.3, z=0.0)
    (box,) = _by_ns(marker_array([e], _header()).markers, TARGETS_NS)
    assert min(box.scale.x, box.scale.y, box.scale.z) > 0


def test_markers_and_overlay_share_one_palette():
    from find_ros.grounding import pipeline
    from find_ros.ros.markers import MARKER_COLOURS

    assert MARKER_COLOURS is pipeline.ENTITY_COLOURS
    # the overlay's 8-bit colours, as they were written out before the palette had one definition
    assert pipeline._PALETTE == ((242, 64, 51), (51, 153, 242), (77, 217, 89), (242, 204, 51), (191, 89, 230),
                                 (51, 217, 217))
    e = _entity(index=7, world=True)
    (box,) = _by_ns(marker_array([e], _header()).markers, TARGETS_NS)
    assert (box.color.r, box.color.g, box.color.b) == pytest.approx(MARKER_COLOURS[7 % len(MARKER_COLOURS)])
