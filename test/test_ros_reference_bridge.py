"""Stored references on the perception node over real DDS: clicks (3D point, pixel) -> FIND segmentation -> named
references; "the <name>" instructions; list / remove / latched list; every bad click refused with nothing stored;
references survive a node restart.

In-process nodes on the test's own domain (conftest ``ros``): the perception node and a feeder node publishing
rendered sim frames (colour, 32FC1 depth, camera_info, camera pose) through the package's RgbdPublisher."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PointStamped, PoseStamped  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from find_ros.msg import Grounding, ReferenceList  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.perception_node import PerceptionNode  # noqa: E402
from find_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS, SENSOR_QOS  # noqa: E402
from find_ros.ros.sim_camera_node import RgbdPublisher  # noqa: E402
from find_ros.srv import AddReference, ListReferences, RemoveReference  # noqa: E402

SEED = 3


@pytest.fixture(scope="module")
def sim_frame():
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory

    scene = Scene.generate(SEED)
    frame = SimRenderer(scene, width=320, height=240).render(orbit_trajectory(scene, 8)[0])
    ids, areas = np.unique(frame.instance, return_counts=True)
    objs = [int(i) for i, a in sorted(zip(ids, areas), key=lambda x: -x[1]) if i != 0 and a >= 600]
    assert len(objs) >= 2, "scene 3 should show two sizeable objects in its first orbit view"
    return frame, objs


class Rig:
    """The perception node, a feeder (camera publishers, service clients, output subscriptions) on one session."""

    def __init__(self, ros, *, reference_dir, grounder="find"):
        self.ros = ros
        self.node = ros.adopt(PerceptionNode(context=ros.context, parameter_overrides=[
            Parameter("grounder", value=grounder), Parameter("reference_dir", value=str(reference_dir)),
            Parameter("max_stamp_age_s", value=0.0), Parameter("status_period_s", value=100.0),
            Parameter("click_max_age_s", value=2.0)]))
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        self.feeder = ros.node("reference_feeder")
        self.camera = RgbdPublisher(self.feeder, frame_id="camera_color_optical_frame", world_frame="map",
                                    depth_encoding="32FC1", publish_odom=False, publish_tf=False)
        self.pose = self.feeder.create_publisher(PoseStamped, "camera/pose", SENSOR_QOS)
        self.text = self.feeder.create_publisher(String, "find/instruction_text", 10)
        self.clicked_pixel = self.feeder.create_publisher(PointStamped, "find/clicked_pixel", 10)
        self.groundings: list[Grounding] = []
        self.feeder.create_subscription(Grounding, "find/grounding", self.groundings.append, OUTPUT_QOS)
        self.add = self.feeder.create_client(AddReference, "find/reference/add")
        self.list = self.feeder.create_client(ListReferences, "find/reference/list")
        self.remove = self.feeder.create_client(RemoveReference, "find/reference/remove")
        self.stamp_ns = time.time_ns()
        assert ros.spin_until(lambda: all(p.get_subscription_count() > 0 for p in
                                          (self.camera.color, self.camera.depth, self.camera.info, self.pose)), 10.0)

    def taken(self) -> int:
        c = self.node.counters()
        return c.get("processed", 0) + c.get("idle", 0) + c.get("rejected", 0)

    def publish(self, frame) -> int:
        """One frame (its pose first, so the node has it when the frame is processed); waits until it was taken."""
        self.stamp_ns += 100_000_000
        stamp = conv.stamp_from_ns(self.stamp_ns)
        before = self.taken()
        self.pose.publish(PoseStamped(header=Header(stamp=stamp, frame_id="map"),
                                      pose=conv.matrix_to_pose(frame.T_world_cam)))
        self.camera.publish(stamp=stamp, color=frame.color, depth_m=frame.depth, K=frame.K, T_world_cam=None)
        assert self.ros.spin_until(lambda: self.taken() > before, 15.0), "the node did not take the frame"
        return self.stamp_ns

    def call(self, client, req):
        return self.ros.call(client, req, timeout=30.0)

    def references(self) -> list:
        return list(self.call(self.list, ListReferences.Request()).references)


def _surface_point(frame, oid) -> tuple[np.ndarray, tuple[int, int]]:
    gt = frame.instance == oid
    dt = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 5)
    v, u = np.unravel_index(int(np.argmax(dt)), dt.shape)
    z = float(frame.depth[v, u])
    pc = np.array([(u + 0.5 - frame.K[0, 2]) * z / frame.K[0, 0], (v + 0.5 - frame.K[1, 2]) * z / frame.K[1, 1], z])
    return frame.T_world_cam[:3, :3] @ pc + frame.T_world_cam[:3, 3], (int(u), int(v))


def _point_request(p, *, name="", frame_id="map") -> AddReference.Request:
    r = AddReference.Request(name=name, source=AddReference.Request.SOURCE_POINT)
    r.point.header.frame_id = frame_id
    r.point.point.x, r.point.point.y, r.point.point.z = map(float, p)
    return r


def _pixel_request(u, v, *, name="", stamp_ns=0) -> AddReference.Request:
    r = AddReference.Request(name=name, source=AddReference.Request.SOURCE_PIXEL)
    r.pixel.point.x, r.pixel.point.y = float(u), float(v)
    if stamp_ns:
        r.pixel.header.stamp = conv.stamp_from_ns(stamp_ns)
    return r


def _mask_iou(ref_msg, gt: np.ndarray) -> float:
    b = ref_msg.box
    tm = conv.image_to_numpy(ref_msg.mask) > 0
    assert (b.width, b.height) == (tm.shape[1], tm.shape[0]), "a 320x240 crop is below the 128 px thumbnail cap?"
    full = np.zeros_like(gt)
    full[b.y_offset:b.y_offset + b.height, b.x_offset:b.x_offset + b.width] = tm
    return float((full & gt).sum() / (full | gt).sum())


def test_clicks_become_named_references_that_instructions_ground(ros, tmp_path, sim_frame):
    frame, objs = sim_frame
    rig = Rig(ros, reference_dir=tmp_path / "refs")
    rig.publish(frame)
    rig.publish(frame)
    # a 3D click (RViz Publish Point, world frame) on the largest object, named through the service
    p, _ = _surface_point(frame, objs[0])
    r = rig.call(rig.add, _point_request(p, name="thing"))
    assert r.success, r.message
    assert r.name == "thing" and r.reference.origin == "point" and 0.5 <= r.score <= 1.0
    assert _mask_iou(r.reference, frame.instance == objs[0]) >= 0.6
    assert r.reference.has_position
    centre = np.asarray([r.reference.position.x, r.reference.position.y, r.reference.position.z])
    assert np.linalg.norm(centre - p) < 0.5, "the reference's world position is on the clicked object"
    # a pixel click on the topic (rqt_image_view on find/overlay): an automatic name
    _, (u, v) = _surface_point(frame, objs[1])
    msg = PointStamped()
    msg.point.x, msg.point.y = float(u), float(v)
    rig.clicked_pixel.publish(msg)
    assert ros.spin_until(lambda: rig.node.counters()["references"] == 2, 15.0), rig.node.counters()
    refs = {m.name: m for m in rig.references()}
    assert set(refs) == {"thing", "ref1"} and refs["ref1"].origin == "pixel"
    assert _mask_iou(refs["ref1"], frame.instance == objs[1]) >= 0.6
    # the latched list reaches a late subscriber
    late = []
    ros.node("late_listener").create_subscription(ReferenceList, "find/references", late.append, LATCHED_QOS)
    assert ros.spin_until(lambda: late and len(late[-1].references) == 2, 10.0)
    assert late[-1].header.frame_id == "map" and late[-1].references[0].thumbnail.encoding == "rgb8"
    # "the <thing>": an ordinary interleaved instruction; the entity reports the name it matched
    rig.text.publish(String(data="the <thing>"))
    assert ros.spin_until(lambda: rig.node.counters().get("instruction_id", ""), 10.0)
    rig.groundings.clear()
    s = rig.publish(frame)
    assert ros.spin_until(lambda: any(conv.stamp_to_ns(g.header.stamp) == s for g in rig.groundings), 15.0)
    g = [g for g in rig.groundings if conv.stamp_to_ns(g.header.stamp) == s][0]
    (e,) = g.entities
    assert list(e.reference_names) == ["thing"] and e.phrase == "the <thing>"
    # an unknown name is refused, naming the stored ones; the instruction in force stays
    rig.text.publish(String(data="the <nothing>"))
    assert ros.spin_until(lambda: rig.node.counters().get("instructions_rejected", 0) >= 1, 10.0)
    # remove
    r = rig.call(rig.remove, RemoveReference.Request(name="ref1"))
    assert r.success, r.message
    assert [m.name for m in rig.references()] == ["thing"]
    r = rig.call(rig.remove, RemoveReference.Request(name="ref1"))
    assert not r.success and "no stored reference named 'ref1' (stored: thing)" in r.message


def test_bad_clicks_are_refused_and_store_nothing(ros, tmp_path, sim_frame):
    frame, objs = sim_frame
    rig = Rig(ros, reference_dir=tmp_path / "refs")
    p, (u, v) = _surface_point(frame, objs[0])
    r = rig.call(rig.add, _pixel_request(u, v))
    assert not r.success and "[no_frame]" in r.message, r.message  # nothing received yet
    rig.publish(frame)
    newest = rig.publish(frame)
    H, W = frame.depth.shape
    floor = cv2.erode((frame.instance == 0).astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    ys, xs = np.nonzero(floor[H // 2:])
    fu, fv = int(xs[len(xs) // 2]), int(ys[len(ys) // 2]) + H // 2
    T = frame.T_world_cam
    free_space = T[:3, :3] @ (T[:3, :3].T @ (p - T[:3, 3]) * 0.5) + T[:3, 3]  # half-way to the camera
    behind_camera = T[:3, :3] @ np.array([0.0, 0.0, -1.0]) + T[:3, 3]
    assert rig.call(rig.add, _pixel_request(u, v, name="keep")).success
    cases = [
        ("outside_image", _pixel_request(W + 5, 3)),
        ("no_object", _pixel_request(fu, fv)),
        ("stale_stamp", _pixel_request(u, v, stamp_ns=newest - 30 * 10**9)),
        ("future_stamp", _pixel_request(u, v, stamp_ns=newest + 30 * 10**9)),
        ("unknown_frame", _point_request(p, frame_id="base_link")),
        ("occluded", _point_request(free_space)),
        ("behind_camera", _point_request(behind_camera)),
        ("BadReferenceName", _pixel_request(u, v, name="x" * 40)),
        ("BadReferenceName", _pixel_request(u, v, name="my mug")),
        ("DuplicateReferenceName", _pixel_request(u, v, name="keep")),
        ("bad_source", AddReference.Request(source=7)),
    ]
    for kind, req in cases:
        r = rig.call(rig.add, req)
        assert not r.success and f"[{kind}]" in r.message, (kind, r.message)
        assert [m.name for m in rig.references()] == ["keep"], kind
    assert sorted(p.name for p in (tmp_path / "refs").iterdir()) == ["keep"]
    assert rig.node.counters()["clicks_rejected"] == len(cases) + 1
    # the node keeps running: the next frame is taken
    rig.publish(frame)


def test_references_survive_a_restart_and_baseline_refuses_clicks(ros, tmp_path, sim_frame):
    frame, objs = sim_frame
    refs = tmp_path / "refs"
    rig = Rig(ros, reference_dir=refs, grounder="hsv-baseline")
    crop = np.ascontiguousarray(frame.color[40:120, 60:160])
    mask = np.zeros(crop.shape[:2], np.uint8)
    mask[10:70, 20:80] = 255
    req = AddReference.Request(name="poster", source=AddReference.Request.SOURCE_IMAGE,
                               image=conv.numpy_to_image(crop, "rgb8"), mask=conv.numpy_to_image(mask, "mono8"))
    r = rig.call(rig.add, req)
    assert r.success and r.reference.origin == "image" and np.isnan(r.score), r.message
    rig.publish(frame)
    _, (u, v) = _surface_point(frame, objs[0])
    r = rig.call(rig.add, _pixel_request(u, v))
    assert not r.success and "[no_segmentation]" in r.message and "grounder:=find" in r.message, r.message
    ros.destroy(rig.node)
    ros.destroy(rig.feeder)
    again = Rig(ros, reference_dir=refs, grounder="hsv-baseline")
    (m,) = again.references()
    assert m.name == "poster" and (m.thumbnail.width, m.thumbnail.height) == (100, 80)
    assert (conv.image_to_numpy(m.mask) > 0).sum() == 60 * 60
    r = again.call(again.add, req)
    assert not r.success and "[DuplicateReferenceName]" in r.message


def test_reference_evaluation_runs_and_measures_one_scene():
    """`find-ros reference-eval` on one scene (field off, 4 later views): every sizeable object clicked, the masks
    overlap the objects, 'the <name>' grounds them, and every bad click is refused with nothing stored."""
    from find_ros.tools.reference_eval import EvalConfig, run

    report = run(EvalConfig(seeds=(603,), n_views=12, ground_views=(3, 6, 9), field=False))
    s = report["summary"]
    assert s["objects"] >= 3 and s["point_click_mean_iou"] >= 0.7 and s["ground_mean_iou"] >= 0.5, s
    assert all(b["refused"] and b["stored_nothing"] and b["kind_named"] for b in report["bad_clicks"]), \
        report["bad_clicks"]
