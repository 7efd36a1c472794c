"""Perception node over real DDS: the node runs as a separate process; this process publishes and checks.

One node process (autostart, hsv-baseline) serves the tests of this file: crafted frames published from here
(good and bad), instructions (good and bad), lifecycle transitions through ``change_state``, and the sim camera
process feeding it with the outputs checked against the sim ground truth. Each test sets the instruction and
lifecycle state it needs, so each passes alone and in any order. A second short process checks that an invalid
parameter fails configure.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("find_ros.msg")
pytest.importorskip("find_ros.ros.conversions", reason="find_ros.ros.conversions not delivered yet")
pytest.importorskip("find_ros.grounding.pipeline", reason="find_ros.grounding.pipeline not delivered yet")
pytest.importorskip("find_ros.grounding.baseline", reason="find_ros.grounding.baseline not delivered yet")

from geometry_msgs.msg import PoseStamped  # noqa: E402

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from find_ros.msg import Grounding, InterleavedInstruction  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.qos import OUTPUT_QOS, SENSOR_QOS  # noqa: E402
from conftest import ros_graph  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

W, H = 160, 120
K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
OPTICAL = "test_camera_color_optical_frame"
SIM_SEED = int(os.environ.get("FIND_ROS_TEST_SIM_SEED", "34"))  # a large red cube, no pink/orange look-alikes


def _ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class Harness:
    """The test's own rclpy node (on a :class:`conftest.RosSession`): camera-like publishers, output subscribers,
    bounded waits, on one perception-node process started through :class:`conftest.Processes`."""

    def __init__(self, ros, procs, proc: subprocess.Popen) -> None:
        self.ros, self.procs, self.proc = ros, procs, proc
        self.node = n = ros.node("perception_test_harness")
        self.pub_color = n.create_publisher(Image, "camera/color/image_raw", SENSOR_QOS)
        self.pub_depth = n.create_publisher(Image, "camera/depth/image_raw", SENSOR_QOS)
        self.pub_info = n.create_publisher(type(conv.camera_info_from_K(K, W, H, header=None)),
                                           "camera/color/camera_info", SENSOR_QOS)
        self.pub_pose = n.create_publisher(PoseStamped, "camera/pose", SENSOR_QOS)
        self.pub_text = n.create_publisher(String, "find/instruction_text", 10)
        self.pub_ins = n.create_publisher(InterleavedInstruction, "find/instruction", 10)
        self.got: dict[str, dict[int, object]] = {k: {} for k in
                                                  ("grounding", "mask", "overlay", "target", "target_world",
                                                   "markers", "gt_instance")}
        self.status: dict = {}
        self.gt_objects: list | None = None
        for key, mtype, topic in (("grounding", Grounding, "find/grounding"), ("mask", Image, "find/mask"),
                                  ("overlay", Image, "find/overlay"), ("target", PoseStamped, "find/target_pose"),
                                  ("target_world", PoseStamped, "find/target_pose_world"),
                                  ("markers", MarkerArray, "find/markers")):
            n.create_subscription(mtype, topic, lambda m, k=key: self._store(k, m), OUTPUT_QOS)
        n.create_subscription(Image, "camera/gt/instance", lambda m: self._store("gt_instance", m), SENSOR_QOS)
        n.create_subscription(String, "find/status", self._on_status, OUTPUT_QOS)
        n.create_subscription(String, "camera/gt/objects", self._on_objects, OUTPUT_QOS)
        self.cli_change = n.create_client(ChangeState, "perception_node/change_state")
        self.cli_get = n.create_client(GetState, "perception_node/get_state")

    def _store(self, key, msg):
        d = self.got[key]
        d[_ns(msg.markers[0].header if key == "markers" else msg.header)] = msg
        while len(d) > 60:  # bounded: the sim camera streams for a while
            d.pop(next(iter(d)))

    def _on_status(self, msg):
        self.status = json.loads(msg.data)

    def _on_objects(self, msg):
        self.gt_objects = json.loads(msg.data)

    def _check_alive(self) -> None:
        assert self.proc.poll() is None, f"node died (rc={self.proc.returncode}):\n{self.log_text()[-3000:]}"

    def spin_until(self, cond, timeout: float) -> bool:
        return self.ros.spin_until(cond, timeout, alive=self._check_alive, period=0.05)

    def log_text(self) -> str:
        return self.procs.log_text(self.proc)

    def wait_log(self, text: str, timeout: float = 15.0) -> bool:
        return self.spin_until(lambda: text in self.log_text(), timeout)

    def instruct(self, text: str) -> None:
        """Publish ``text`` on find/instruction_text and wait until the node has parsed it."""
        line = f"{text!r} -> entities"
        before = self.log_text().count(line)
        self.pub_text.publish(String(data=text))
        assert self.spin_until(lambda: self.log_text().count(line) > before, 15), self.log_text()[-2000:]

    def ensure_active(self) -> None:
        """Active, whatever state an earlier test left (inactive / unconfigured)."""
        state = self.state()
        if state == State.PRIMARY_STATE_UNCONFIGURED:
            assert self.change_state(Transition.TRANSITION_CONFIGURE), self.log_text()[-2000:]
            state = State.PRIMARY_STATE_INACTIVE
        if state == State.PRIMARY_STATE_INACTIVE:
            assert self.change_state(Transition.TRANSITION_ACTIVATE), self.log_text()[-2000:]
        assert self.state() == State.PRIMARY_STATE_ACTIVE

    def now(self):
        return self.node.get_clock().now().to_msg()

    def frame(self, *, rgb=None, depth=None, color_encoding="rgb8", depth_encoding="32FC1", info=True,
              pose=True, age_s=0.0, T_world_cam=None):
        """Publish one frame set stamped now (minus ``age_s``), with a camera pose in "map" (identity unless
        ``T_world_cam``) when ``pose``; returns the stamp in ns."""
        from rclpy.duration import Duration
        from std_msgs.msg import Header

        stamp = (self.node.get_clock().now() - Duration(seconds=age_s)).to_msg()
        h = Header(stamp=stamp, frame_id=OPTICAL)
        rgb = make_rgb() if rgb is None else rgb
        depth = np.full((H, W), 1.0, np.float32) if depth is None else depth
        if color_encoding == "rgb8":
            cmsg = conv.numpy_to_image(rgb, "rgb8", header=h)
        else:  # a deliberately wrong encoding for a colour image
            cmsg = conv.numpy_to_image(rgb[..., 0].astype(np.float32), color_encoding, header=h)
        if info:
            self.pub_info.publish(conv.camera_info_from_K(K, W, H, header=h))
        if pose:
            T = np.eye(4) if T_world_cam is None else T_world_cam
            self.pub_pose.publish(PoseStamped(header=Header(stamp=h.stamp, frame_id="map"),
                                              pose=conv.matrix_to_pose(T)))
        self.pub_depth.publish(conv.numpy_to_image(depth, depth_encoding, header=h))
        self.pub_color.publish(cmsg)
        return _ns(h)

    def change_state(self, transition_id: int) -> bool:
        assert self.cli_change.wait_for_service(timeout_sec=10)
        fut = self.cli_change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert self.spin_until(fut.done, 20), "change_state timed out"
        return fut.result().success

    def state(self) -> int:
        assert self.cli_get.wait_for_service(timeout_sec=10)
        fut = self.cli_get.call_async(GetState.Request())
        assert self.spin_until(fut.done, 10)
        return fut.result().current_state.id


def make_rgb() -> np.ndarray:
    """Grey room with a red square in the middle (40x40 px)."""
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[40:80, 60:100] = (220, 20, 20)
    return rgb


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with ros_graph(tmp_path_factory.mktemp("perception")) as (ros, procs):
        proc = procs.node("find_ros.ros.perception_node",
                          ["-p", "autostart:=true", "-p", "grounder:=hsv-baseline", "-p", "log_throttle_s:=0.0",
                           "-p", "status_period_s:=0.2", "-p", "max_stamp_age_s:=5.0", "-p", "sync_slop_s:=0.01",
                           "-p", "min_points:=20"], "node.log")
        h = Harness(ros, procs, proc)
        assert h.spin_until(lambda: h.status.get("grounder") == "hsv-baseline", 60), h.log_text()[-3000:]
        yield h


@pytest.fixture
def h(node):
    """The module's node process, active (each test sets its own instruction)."""
    node.ensure_active()
    return node


def _wait_grounding(h: Harness, stamp: int, timeout: float = 15.0) -> Grounding:
    assert h.spin_until(lambda: stamp in h.got["grounding"], timeout), (
        f"no Grounding for stamp {stamp}; status={h.status}\n{h.log_text()[-2000:]}")
    return h.got["grounding"][stamp]


def test_frames_before_camera_info_wait_and_are_counted(h):
    # a fresh activation has no camera_info (an earlier test's frames gave it one)
    assert h.change_state(Transition.TRANSITION_DEACTIVATE) and h.change_state(Transition.TRANSITION_ACTIVATE)
    for _ in range(3):
        stamp = h.frame(info=False)
        h.spin_until(lambda: False, 0.1)
    assert h.wait_log("no camera_info"), h.log_text()[-2000:]
    assert h.spin_until(lambda: h.status.get("waiting_camera_info", 0) >= 1, 5), h.status
    assert stamp not in h.got["grounding"]


def test_no_instruction_means_no_grounding(h):
    from std_srvs.srv import Trigger

    assert _call(h, Trigger, "find/clear_instruction", Trigger.Request()).success
    stamp = h.frame()
    assert h.spin_until(lambda: h.status.get("idle", 0) > 0, 10), h.status
    # a later frame with an instruction is grounded; groundings arrive in order, so the first had none
    h.instruct("the red cube")
    _wait_grounding(h, h.frame())
    assert stamp not in h.got["grounding"]


def test_text_instruction_grounds_the_red_square(h):
    h.instruct("the red cube")
    stamp = h.frame()
    g = _wait_grounding(h, stamp)
    assert g.header.frame_id == OPTICAL and _ns(g.header) == stamp
    assert g.grounder == "hsv-baseline" and g.instruction_text == "the red cube"
    assert len(g.entities) == 1 and g.entities[0].found and g.entities[0].label > 0
    assert h.spin_until(lambda: all(stamp in h.got[k] for k in ("mask", "overlay", "target", "markers")), 10)
    mask = h.got["mask"][stamp]
    assert (mask.encoding, mask.width, mask.height, mask.header.frame_id) == ("mono8", W, H, OPTICAL)
    m = conv.image_to_numpy(mask) == g.entities[0].label
    truth = np.zeros((H, W), bool)
    truth[40:80, 60:100] = True
    assert np.logical_and(m, truth).sum() / np.logical_or(m, truth).sum() > 0.7
    ov = h.got["overlay"][stamp]
    assert (ov.encoding, ov.width, ov.height, ov.header.frame_id) == ("rgb8", W, H, OPTICAL)
    # the red square's pixels at 1 m depth: centre on the optical axis, ~1 m ahead
    p = h.got["target"][stamp]
    assert p.header.frame_id == OPTICAL and _ns(p.header) == stamp
    assert abs(p.pose.position.x) < 0.05 and abs(p.pose.position.y) < 0.05 and abs(p.pose.position.z - 1.0) < 0.05
    e = g.entities[0]
    assert e.pose_valid and abs(e.pose.position.z - 1.0) < 0.05 and e.box.width > 0
    # identity camera pose in "map": the world pose equals the optical-frame pose
    assert e.world_pose_valid and e.world_pose.header.frame_id == "map"
    assert abs(e.world_pose.pose.position.z - 1.0) < 0.05
    assert h.spin_until(lambda: stamp in h.got["target_world"], 5)
    markers = h.got["markers"][stamp].markers
    cubes = [mk for mk in markers if mk.type == mk.CUBE]
    assert len(cubes) == 1 and cubes[0].header.frame_id == "map" and cubes[0].scale.x > 0  # a pose is known
    assert any(mk.type == mk.TEXT_VIEW_FACING and "red cube" in mk.text for mk in markers)


def _xyz(p) -> np.ndarray:
    return np.array([p.x, p.y, p.z])


def test_markers_are_in_the_world_frame_when_the_camera_pose_is_known(h):
    """RViz (Fixed Frame map) draws them without /tf: box and label in the world frame at the world pose; without a
    camera pose for the frame they stay in the optical frame."""
    h.instruct("the red cube")
    T = np.eye(4)  # a level camera at (2, 1, 1.5) in map, looking along +x (optical z = world x, y = -z)
    T[:3, :3] = [[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    T[:3, 3] = (2.0, 1.0, 1.5)
    stamp = h.frame(T_world_cam=T)
    e = _wait_grounding(h, stamp).entities[0]
    assert e.found and e.world_pose_valid and e.world_pose.header.frame_id == "map"
    assert np.allclose(_xyz(e.world_pose.pose.position), (3.0, 1.0, 1.5), atol=0.05)  # the square, 1 m ahead
    assert h.spin_until(lambda: stamp in h.got["markers"], 5)
    markers = h.got["markers"][stamp].markers
    assert markers[0].action == markers[0].DELETEALL
    (cube,) = [mk for mk in markers if mk.type == mk.CUBE]
    (label,) = [mk for mk in markers if mk.type == mk.TEXT_VIEW_FACING]
    assert cube.header.frame_id == label.header.frame_id == "map" and _ns(cube.header) == _ns(label.header) == stamp
    assert np.allclose(_xyz(cube.pose.position), _xyz(e.world_pose.pose.position), atol=1e-6)
    assert cube.pose.orientation == e.world_pose.pose.orientation
    assert label.pose.position.z > cube.pose.position.z + cube.scale.z / 2  # above the box, world z up
    assert "red cube" in label.text and f"#{e.track_id}" in label.text
    # no camera pose for this frame: the optical frame, at the camera-frame pose (stamped well beyond sync_slop_s
    # of the last pose, which would otherwise be its nearest pose)
    h.spin_until(lambda: False, 0.2)
    stamp = h.frame(pose=False)
    e = _wait_grounding(h, stamp).entities[0]
    assert e.found and e.pose_valid and not e.world_pose_valid
    assert h.spin_until(lambda: stamp in h.got["markers"], 5)
    (cube,) = [mk for mk in h.got["markers"][stamp].markers if mk.type == mk.CUBE]
    assert cube.header.frame_id == OPTICAL and np.allclose(_xyz(cube.pose.position), _xyz(e.pose.position))


def test_status_and_log_name_the_model(h):
    h.status = {}
    assert h.spin_until(lambda: "model" in h.status, 5), h.status
    assert h.status["model"] == "hsv-baseline" == h.status["grounder"]
    assert "active: grounding with the HSV colour BASELINE" in h.log_text()


def test_target_absent_gives_deleteall_markers_and_no_found_entity(h):
    h.instruct("the red cube")
    stamp = h.frame(rgb=np.full((H, W, 3), 128, np.uint8))
    g = _wait_grounding(h, stamp)
    assert not g.entities[0].found
    assert h.spin_until(lambda: stamp in h.got["markers"], 5)
    assert [mk.action for mk in h.got["markers"][stamp].markers] == [3]  # DELETEALL only


@pytest.mark.parametrize(
    "kwargs, log_text",
    [
        ({"color_encoding": "32FC1"}, "colour image dropped"),
        ({"depth": np.full((H // 2, W // 2), 1.0, np.float32)}, "depth is 80x60 but colour is 160x120"),
        ({"depth": np.full((H, W), np.nan, np.float32)}, "depth image has no valid pixel"),
        ({"depth": np.zeros((H, W), np.uint16), "depth_encoding": "16UC1"}, "depth image has no valid pixel"),
        ({"age_s": 30.0}, "(> max_stamp_age_s=5.0): dropped"),
    ],
    ids=["wrong-encoding", "size-mismatch", "nan-depth", "zero-depth", "stale"],
)
def test_bad_frames_are_logged_dropped_and_the_node_lives(h, kwargs, log_text):
    h.instruct("the red cube")
    before = h.log_text().count(log_text)
    bad = h.frame(**kwargs)
    assert h.spin_until(lambda: h.log_text().count(log_text) > before, 15), h.log_text()[-2000:]
    good = h.frame()
    _wait_grounding(h, good)
    assert bad not in h.got["grounding"] and bad not in h.got["mask"]


def _ref_image(w=20, h=16, enc="rgb8"):
    return conv.numpy_to_image(np.full((h, w, 3), (220, 20, 20), np.uint8), enc)


@pytest.mark.parametrize(
    "make, log_text",
    [
        (lambda: InterleavedInstruction(text=""), "instruction text is empty"),
        (lambda: InterleavedInstruction(text="x" * 2500), "has 2500 characters (max 2000)"),
        (lambda: InterleavedInstruction(text="the <0>"), "<0> name no reference"),
        (lambda: InterleavedInstruction(text="the <0>", reference_images=[_ref_image()],
                                        reference_masks=[conv.numpy_to_image(np.ones((5, 5), np.uint8), "mono8")]),
         "reference mask 0 is 5x5 but its image is 20x16"),
        (lambda: InterleavedInstruction(text="the <0>", reference_images=[
            conv.numpy_to_image(np.ones((16, 20), np.float32), "32FC1")]), "reference image 0"),
    ],
    ids=["empty", "oversized", "placeholder-without-image", "mask-wrong-size", "reference-wrong-encoding"],
)
def test_bad_instructions_are_rejected_and_the_old_one_stays(h, make, log_text):
    h.instruct("the red cube")
    before = h.log_text().count(log_text)
    h.pub_ins.publish(make())
    assert h.spin_until(lambda: h.log_text().count(log_text) > before, 15), h.log_text()[-2000:]
    stamp = h.frame()
    g = _wait_grounding(h, stamp)
    assert g.instruction_text == "the red cube" and g.entities[0].found


def test_interleaved_instruction_with_reference_mask(h):
    ref = np.full((16, 20, 3), 128, np.uint8)
    ref[4:12, 5:15] = (220, 20, 20)
    mask = np.zeros((16, 20), np.uint8)
    mask[4:12, 5:15] = 255
    h.pub_ins.publish(InterleavedInstruction(id="inter-1", text="the <0>",
                                             reference_images=[conv.numpy_to_image(ref, "rgb8")],
                                             reference_masks=[conv.numpy_to_image(mask, "mono8")]))
    assert h.wait_log("instruction inter-1")
    stamp = h.frame()
    g = _wait_grounding(h, stamp)
    assert g.instruction_id == "inter-1" and g.entities[0].phrase == "the <0>"


def _call(h: Harness, srv_type, name: str, request):
    cli = h.node.create_client(srv_type, name)
    try:
        assert cli.wait_for_service(timeout_sec=10), name
        fut = cli.call_async(request)
        assert h.spin_until(fut.done, 15), f"{name} timed out"
        return fut.result()
    finally:
        h.node.destroy_client(cli)


def test_instruction_services(h):
    from std_srvs.srv import Trigger

    from find_ros.srv import SetInstruction

    r = _call(h, SetInstruction, "find/set_instruction",
              SetInstruction.Request(instruction=InterleavedInstruction(text="the <1>")))
    assert not r.success and "<1> name no reference" in r.message
    r = _call(h, Trigger, "find/clear_instruction", Trigger.Request())
    assert r.success
    # the idle count of a status published after the clear; the frame sent now must raise it (taken, not grounded)
    h.status = {}
    assert h.spin_until(lambda: h.status.get("instruction_id", "?") == "", 5), h.status
    idle_before = h.status.get("idle", 0)
    idle = h.frame()
    assert h.spin_until(lambda: h.status.get("idle", 0) > idle_before, 5), (idle_before, h.status)
    assert idle not in h.got["grounding"]
    r = _call(h, SetInstruction, "find/set_instruction",
              SetInstruction.Request(instruction=InterleavedInstruction(id="svc-1", text="the red cube")))
    assert r.success and r.instruction_id == "svc-1", r.message
    stamp = h.frame()
    g = _wait_grounding(h, stamp)
    assert g.instruction_id == "svc-1" and g.entities[0].found
    # groundings arrive in order: the frame sent while no instruction was in force had none
    assert idle not in h.got["grounding"], "no grounding without an instruction"


def test_lifecycle_transitions_through_change_state(h):
    h.instruct("the red cube")
    assert h.state() == State.PRIMARY_STATE_ACTIVE
    assert h.change_state(Transition.TRANSITION_DEACTIVATE)
    assert h.state() == State.PRIMARY_STATE_INACTIVE
    inactive = h.frame()
    assert h.change_state(Transition.TRANSITION_CLEANUP)
    assert h.state() == State.PRIMARY_STATE_UNCONFIGURED
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert h.change_state(Transition.TRANSITION_ACTIVATE)
    assert h.state() == State.PRIMARY_STATE_ACTIVE
    h.instruct("the red cube")
    stamp = h.frame()
    assert _wait_grounding(h, stamp).entities[0].found
    # groundings arrive in order: the frame sent while inactive got none
    assert inactive not in h.got["grounding"], "an inactive node must not publish"


def test_sim_camera_stream_is_grounded_against_ground_truth(h):
    """Sim camera process -> node process: stamps, sizes, IoU vs the GT instance, pose vs the GT centre."""
    pytest.importorskip("find_ros.ros.sim_camera_node")
    cam = h.procs.node("find_ros.ros.sim_camera_node",
                       ["-p", "rate_hz:=10.0", "-p", f"seed:={SIM_SEED}", "-p", "publish_gt:=true"], "cam.log")
    try:
        assert h.spin_until(lambda: h.gt_objects is not None, 60), h.procs.log_text(cam)[-2000:]
        reds = [o for o in h.gt_objects if o["colour"] == "red"]
        assert reds, f"seed {SIM_SEED} has no red object: {h.gt_objects}"
        target = reds[0]
        text = f"the red {target['category']}"
        h.instruct(text)
        ious, dists = [], []

        def scored():
            for stamp, g in list(h.got["grounding"].items()):
                if g.instruction_text != text or stamp not in h.got["mask"] or stamp not in h.got["gt_instance"]:
                    continue
                gt_msg = h.got["gt_instance"].pop(stamp)
                gt = conv.image_to_numpy(gt_msg).astype(np.int64) == int(target["id"])
                mask = conv.image_to_numpy(h.got["mask"].pop(stamp))
                g = h.got["grounding"].pop(stamp)
                assert g.header.frame_id == gt_msg.header.frame_id != ""
                assert (mask.shape[1], mask.shape[0]) == (gt.shape[1], gt.shape[0])
                if gt.sum() < 300:
                    continue
                e = g.entities[0]
                pred = mask == e.label if e.found else np.zeros_like(gt)
                ious.append(np.logical_and(pred, gt).sum() / np.logical_or(pred, gt).sum())
                if e.found and e.world_pose_valid:
                    c = e.world_pose.pose.position
                    dists.append(float(np.linalg.norm(np.array([c.x, c.y, c.z]) - np.array(target["center"]))))
            return len(ious) >= 8

        assert h.spin_until(scored, 45), f"only {len(ious)} scored frames; status={h.status}"
        assert np.median(ious) > 0.5, ious
        tol = max(0.1, 0.75 * float(np.max(np.subtract(target["box_max"], target["box_min"]))))
        assert dists and np.median(dists) < tol, (dists, target)
    finally:
        h.procs.stop(cam)


def test_warnings_are_throttled_per_kind_and_counted(ros, capfd):
    """In-process node: the same kind logs once per log_throttle_s; every occurrence is counted."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from find_ros.ros.perception_node import PerceptionNode

    n = ros.adopt(PerceptionNode(context=ros.context, parameter_overrides=[Parameter("log_throttle_s", value=30.0)]))
    assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
    for _ in range(5):
        n._warn("color_image", "colour image dropped: unsupported encoding '32FC1'")
    n._warn("size_mismatch", "depth is 80x60 but colour is 160x120")
    err = capfd.readouterr().err
    assert err.count("[color_image] colour image dropped") == 1 and err.count("[size_mismatch]") == 1
    assert n.counters()["problems"] == {"color_image": 5, "size_mismatch": 1}


def test_invalid_parameter_fails_configure_with_a_clear_message(procs):
    proc = procs.node("find_ros.ros.perception_node", ["-p", "autostart:=true", "-p", "score_threshold:=1.7"],
                      "bad.log")
    rc = proc.wait(timeout=60)
    text = procs.log_text(proc)
    assert rc == 1, text
    assert "score_threshold=1.7 is outside [0, 1]" in text and "configure failed" in text


def test_unknown_words_of_the_instruction_are_reported_in_status(ros, capfd):
    """FIND grounder, in-process node: words the model does not know are named in the counters (find/status); the
    model directory loaded is named in the log and in the counters."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from find_ros.model.grounder import DEFAULT_MODEL_DIR
    from find_ros.ros.perception_node import PerceptionNode
    from find_ros.srv import SetInstruction

    n = ros.adopt(PerceptionNode(context=ros.context, parameter_overrides=[Parameter("grounder", value="find")]))
    assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS
    model_dir = str(DEFAULT_MODEL_DIR.resolve())
    assert n.counters()["model"] == model_dir and n.counters()["grounder"] == "find"
    assert f"active: grounding with the FIND model from {model_dir}" in capfd.readouterr().err
    client = ros.node("unknown_words_client").create_client(SetInstruction, "find/set_instruction")
    r = ros.call(client, SetInstruction.Request(instruction=InterleavedInstruction(text="the red fire extinguisher")))
    assert r.success, r.message
    assert n.counters()["unknown_words"] == ["fire", "extinguisher"]
    r = ros.call(client, SetInstruction.Request(instruction=InterleavedInstruction(text="the red cubes")))
    assert r.success and n.counters()["unknown_words"] == []  # plural normalised: every word known


def test_the_executable_node_freezes_its_warm_objects_and_release_context_unfreezes_them(ros):
    """PerceptionNode(freeze_gc=True) (what the executable builds) takes the objects alive after its warm-up out of
    the collector's full passes (50-130 ms each with the GIL held, measured in the node); releasing the context
    gives them back, so a destroyed node's reference cycles are still collected."""
    import gc

    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from find_ros.ros.perception_node import PerceptionNode
    from find_ros.ros.shutdown import release_context

    gc.unfreeze()
    try:
        n = ros.adopt(PerceptionNode(context=ros.context, freeze_gc=True,
                                     parameter_overrides=[Parameter("grounder", value="hsv-baseline")]))
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert n.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert ros.spin_until(lambda: gc.get_freeze_count() > 1000, 10)  # frozen by the worker after its warm-up
        import rclpy

        other = rclpy.Context()
        rclpy.init(context=other, domain_id=ros.domain)
        release_context(other)
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
