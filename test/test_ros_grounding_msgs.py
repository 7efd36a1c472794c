"""find_ros.ros.grounding_msgs: a grounded frame (core FrameResult) -> Grounding, mask, overlay, target poses.

Pure unit tests with the real core result classes and message classes; no node, no DDS."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from find_ros.grounding.geometry import TargetPose  # noqa: E402
from find_ros.grounding.pipeline import FrameResult, TrackedEntity  # noqa: E402
from find_ros.instruction import parse_instruction  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros import grounding_msgs as build  # noqa: E402

H, W = 12, 16
HDR = Header(stamp=Time(sec=7, nanosec=250), frame_id="camera_color_optical_frame")


def _pose(x, frame="camera"):
    return TargetPose(position=np.array([x, 0.1, 2.0]), orientation_xyzw=np.array([0.0, 0.0, 0.0, 1.0]),
                      extent=np.array([0.2, 0.3, 0.4]), num_points=50, frame=frame)


def _entity(k, *, score, found, world=True, box=(2, 3, 8, 9), lost=False, track_id=0):
    mask = np.zeros((H, W), bool)
    if found:
        mask[box[1]:box[3], box[0]:box[2]] = True
    return TrackedEntity(phrase=f"thing {k}", entity_index=k, score=score, raw_score=score, mask=mask,
                         box=box if found else (0, 0, 0, 0), track_id=track_id, lost=lost,
                         pose_cam=_pose(k) if found else None,
                         pose_world=_pose(10 + k, "world") if found and world else None, found=found)


def _result(entities):
    label = np.zeros((H, W), np.uint8)
    for e in entities:
        label[e.mask] = e.entity_index + 1
    return FrameResult(entities=entities, label_mask=label)


INS = parse_instruction("thing 0, thing 1, thing 2", id="ins-1")


def test_grounding_copies_header_and_follows_found():
    # entity 2 is "not found" though its score is high (the pipeline's decision, e.g. lost): no box, pose, label
    res = _result([_entity(0, score=0.7, found=True), _entity(1, score=0.9, found=True, world=False),
                   _entity(2, score=0.95, found=False, lost=True, track_id=None)])
    g, best = build.grounding_msg(HDR, INS, res, grounder="hsv-baseline", world_frame="map")
    assert g.header == HDR and (g.instruction_id, g.instruction_text, g.grounder) == ("ins-1", INS.text,
                                                                                      "hsv-baseline")
    assert g.processing_ms == 0.0
    e0, e1, e2 = g.entities
    assert (e0.found, e0.label, e0.track_id, e0.score) == (True, 1, 0, pytest.approx(0.7))
    assert (e0.box.x_offset, e0.box.y_offset, e0.box.width, e0.box.height) == (2, 3, 6, 6)
    assert e0.pose_valid and e0.pose.position.z == 2.0 and e0.extent.z == pytest.approx(0.4)
    assert e0.world_pose_valid and e0.world_pose.header.frame_id == "map" and e0.world_pose.header.stamp == HDR.stamp
    assert e0.world_pose.pose.position.x == 10.0
    assert e1.pose_valid and not e1.world_pose_valid
    assert (e2.found, e2.lost, e2.label, e2.track_id, e2.pose_valid, e2.box.width) == (False, True, 0, -1, False, 0)
    assert best is e1  # the highest-scoring found entity with a pose
    target, world = build.target_pose_msgs(HDR, best)
    assert target.header == HDR and target.pose == e1.pose and world is None
    target, world = build.target_pose_msgs(HDR, e0)
    assert world is e0.world_pose


def test_no_target_without_a_found_posed_entity():
    res = _result([_entity(0, score=0.2, found=False)])
    g, best = build.grounding_msg(HDR, parse_instruction("thing 0"), res, grounder="find", world_frame="map")
    assert best is None and build.target_pose_msgs(HDR, best) == (None, None)
    assert not g.entities[0].found


def test_ties_keep_the_first():
    res = _result([_entity(0, score=0.8, found=True), _entity(1, score=0.8, found=True)])
    g, best = build.grounding_msg(HDR, INS, res, grounder="find", world_frame="map")
    assert best is g.entities[0]


def test_mask_and_overlay_images_round_trip():
    res = _result([_entity(0, score=0.7, found=True), _entity(1, score=0.1, found=False)])
    m = build.label_mask_msg(res.label_mask, HDR)
    assert (m.encoding, m.width, m.height, m.header) == ("mono8", W, H, HDR)
    assert np.array_equal(conv.image_to_numpy(m), res.label_mask)
    rgb = np.zeros((H, W, 3), np.uint8)
    o = build.overlay_msg(res.overlay(rgb), HDR)
    assert o.encoding == "rgb8" and o.header == HDR and conv.image_to_rgb(o)[5, 5].any()


def test_pose_msg():
    p = build.pose_msg([1, 2, 3], [0, 0, 0.6, 0.8])
    assert (p.position.x, p.position.y, p.position.z) == (1.0, 2.0, 3.0)
    assert (p.orientation.z, p.orientation.w) == (0.6, 0.8)


def test_frame_messages_in_publishing_order_with_optional_outputs():
    res = _result([_entity(0, score=0.7, found=True), _entity(1, score=0.1, found=False)])
    g, msgs = build.frame_messages(HDR, INS, res, grounder="find", world_frame="map")
    # what a consumer acts on first: the target poses, then the mask; the display outputs come after
    assert [k for k, _ in msgs] == ["target_pose", "target_pose_world", "mask"]
    d = dict(msgs)
    assert g.entities[0].found and d["target_pose"].pose == g.entities[0].pose
    assert all(m.header == HDR for k, m in msgs if k != "target_pose_world")
    overlay = res.overlay(np.zeros((H, W, 3), np.uint8))
    disp = build.display_messages(HDR, g, overlay=overlay)
    assert [k for k, _ in disp] == ["overlay", "markers"]
    assert dict(disp)["overlay"].header == HDR and dict(disp)["overlay"].encoding == "rgb8"
    assert dict(disp)["markers"].markers  # a cube and a label for the found entity
    assert build.display_messages(HDR, g, markers=False) == []
    res = _result([_entity(0, score=0.2, found=False)])
    g, msgs = build.frame_messages(HDR, parse_instruction("thing 0"), res, grounder="find", world_frame="map")
    assert [k for k, _ in msgs] == ["mask"]
