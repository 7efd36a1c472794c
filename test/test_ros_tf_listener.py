"""camera_pose_source 'tf' without tf2_ros: the perception node's /tf + /tf_static fallback (find_ros.ros.tf_buffer).

A fake node checks CameraInputs' subscriptions (topics, tf2's listener QoS) and its lookups; over real DDS an
in-process PerceptionNode (hsv-baseline) is fed by the package's RgbdPublisher (odom -> optical frame on /tf) and a
latched map -> odom on /tf_static, and grounds in map."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("find_ros.msg")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402

from find_ros.ros import camera_inputs as ci_mod  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros import tf  # noqa: E402

pytestmark = [
    pytest.mark.skipif(tf.tf_message_type() is None,
                       reason="tf2_msgs not importable (scripts/setup.sh builds interfaces/tf2_msgs)"),
    pytest.mark.skipif(ci_mod._tf2_ros is not None, reason="tf2_ros importable: the node uses it, not the fallback"),
]

S = 1_000_000_000
OPTICAL = "camera_color_optical_frame"


def _level_camera(t=(2.0, 1.0, 1.5)) -> np.ndarray:
    """A level camera at ``t`` looking along +x (optical z = x, optical y = -z)."""
    T = np.eye(4)
    T[:3, :3] = [[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    T[:3, 3] = t
    return T


def _yaw(a: float, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def _tf_msg(T, *, ns: int, parent: str, child: str):
    return tf.tf_message([tf.transform_stamped(T, stamp=conv.stamp_from_ns(ns), parent_frame=parent,
                                               child_frame=child)])


class _Node:
    def __init__(self):
        self.subs: dict[str, tuple] = {}

    def create_subscription(self, mtype, topic, cb, qos):
        self.subs[topic] = (cb, qos)
        return topic

    def destroy_subscription(self, s):
        pass

    def get_clock(self):
        class _C:
            def now(self):
                class T:
                    nanoseconds = 0
                return T()
        return _C()


def test_camera_inputs_subscribe_tf_with_tf2s_qos_and_look_up_the_chain():
    node, counts, warns = _Node(), [], []
    params = {"sync_slop_s": 0.02, "sensor_reliability": "best_effort", "camera_pose_source": "tf",
              "max_image_pixels": 10**6, "max_stamp_age_s": 0.0, "world_frame": "map"}
    ci = ci_mod.CameraInputs(node=node, params=params, count=counts.append,
                             warn=lambda kind, msg, level="warning": warns.append((kind, msg)),
                             on_frame_set=lambda *a: None)
    ci.tf.wait_s = 0.0
    ci.activate()
    (on_tf, q), (on_static, qs) = node.subs["/tf"], node.subs["/tf_static"]
    assert (q.depth, q.reliability, q.durability) == (100, ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)
    assert (qs.depth, qs.reliability, qs.durability) == (100, ReliabilityPolicy.RELIABLE,
                                                         DurabilityPolicy.TRANSIENT_LOCAL)
    assert "camera/pose" not in node.subs and "camera/odom" not in node.subs
    T_map_odom, T_odom_cam = _yaw(0.5, (1.0, 2.0, 0.0)), _level_camera()
    on_static(_tf_msg(T_map_odom, ns=0, parent="map", child="odom"))
    on_tf(_tf_msg(T_odom_cam, ns=5 * S, parent="odom", child=OPTICAL))
    color = conv.numpy_to_image(np.zeros((6, 8, 3), np.uint8), "rgb8")
    color.header.frame_id, color.header.stamp = OPTICAL, Time(sec=5)
    np.testing.assert_allclose(ci.lookup_pose(color), T_map_odom @ T_odom_cam, atol=1e-9)
    assert warns == [] and counts == []
    # no transform at the frame's stamp (beyond sync_slop_s): counted as pose_missing, naming the frames
    color.header.stamp = Time(sec=3)
    assert ci.lookup_pose(color) is None
    (kind, msg), = warns
    assert kind == "pose_missing" and f"no transform map -> {OPTICAL} at t=3.000" in msg and "into the past" in msg
    # a bad transform is dropped and counted; the good ones of the same message are kept
    bad = _tf_msg(T_odom_cam, ns=6 * S, parent="odom", child=OPTICAL)
    bad.transforms.append(tf.transform_stamped(T_odom_cam, stamp=Time(sec=6), parent_frame="odom", child_frame="x"))
    bad.transforms[-1].transform.translation.x = float("nan")
    on_tf(bad)
    assert counts == ["invalid_input"] and warns[-1][0] == "tf_invalid" and "odom -> x is unusable" in warns[-1][1]
    color.header.stamp = Time(sec=6)
    assert ci.lookup_pose(color) is not None
    ci.deactivate()


@pytest.mark.ros
def test_perception_node_grounds_in_the_world_frame_through_tf(ros):
    """RgbdPublisher sends odom -> optical on /tf with each frame; map -> odom is latched on /tf_static before the
    node starts; the node (camera_pose_source tf, world_frame map) gives world poses and markers in map."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from find_ros.msg import Grounding
    from find_ros.ros.perception_node import PerceptionNode
    from find_ros.ros.qos import OUTPUT_QOS
    from find_ros.ros.sim_camera_node import RgbdPublisher

    W, H = 160, 120
    K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[40:80, 60:100] = (220, 20, 20)  # a red square, centred on the optical axis
    depth = np.full((H, W), 1.0, np.float32)
    T_map_odom, T_odom_cam = _yaw(np.pi / 2, (10.0, 0.0, 0.0)), _level_camera()

    feeder = ros.node("tf_feeder")
    static = feeder.create_publisher(tf.tf_message_type(), tf.TF_STATIC_TOPIC, tf.TF_STATIC_QOS)
    static.publish(_tf_msg(T_map_odom, ns=0, parent="map", child="odom"))  # before the node exists: latched
    camera = RgbdPublisher(feeder, frame_id=OPTICAL, world_frame="odom", depth_encoding="32FC1", publish_odom=False)
    text = feeder.create_publisher(String, "find/instruction_text", 10)
    got: dict[str, dict[int, object]] = {"grounding": {}, "markers": {}}
    feeder.create_subscription(Grounding, "find/grounding",
                               lambda m: got["grounding"].__setitem__(conv.stamp_to_ns(m.header.stamp), m), OUTPUT_QOS)
    feeder.create_subscription(MarkerArray, "find/markers", lambda m: got["markers"].__setitem__(
        conv.stamp_to_ns(m.markers[0].header.stamp), m), OUTPUT_QOS)

    node = ros.adopt(PerceptionNode(context=ros.context, parameter_overrides=[
        Parameter("grounder", value="hsv-baseline"), Parameter("camera_pose_source", value="tf"),
        Parameter("world_frame", value="map"), Parameter("max_stamp_age_s", value=0.0),
        Parameter("sync_slop_s", value=0.01), Parameter("min_points", value=20),
        Parameter("status_period_s", value=100.0)]))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert ros.spin_until(lambda: camera.color.get_subscription_count() > 0 and
                          camera.tf.get_subscription_count() > 0 and text.get_subscription_count() > 0, 10.0)
    text.publish(String(data="the red cube"))
    assert ros.spin_until(lambda: node.counters()["instruction_id"], 10.0), "the node did not take the instruction"

    stamps = []
    t0 = time.time_ns()
    for k in range(8):  # the transform follows the images of its frame (RgbdPublisher's order): lookups wait for it
        stamps.append(t0 + k * S // 10)
        camera.publish(stamp=conv.stamp_from_ns(stamps[-1]), color=rgb, depth_m=depth, K=K, T_world_cam=T_odom_cam)
        ros.spin_for(0.1)
    assert ros.spin_until(lambda: sum(s in got["grounding"] for s in stamps) >= 5, 20.0), node.counters()
    expected = (T_map_odom @ T_odom_cam @ np.array([0.0, 0.0, 1.0, 1.0]))[:3]  # the square, 1 m ahead
    world = [s for s in stamps if s in got["grounding"] and got["grounding"][s].entities[0].world_pose_valid]
    assert len(world) >= 4, (node.counters(), [got["grounding"][s].entities[0] for s in stamps if s in got["grounding"]])
    for s in world:
        e = got["grounding"][s].entities[0]
        assert e.found and e.world_pose.header.frame_id == "map"
        p = e.world_pose.pose.position
        np.testing.assert_allclose((p.x, p.y, p.z), expected, atol=0.05)
    s = world[-1]
    assert ros.spin_until(lambda: s in got["markers"], 5.0)
    cubes = [m for m in got["markers"][s].markers if m.type == m.CUBE]
    assert len(cubes) == 1 and cubes[0].header.frame_id == "map"
    np.testing.assert_allclose((cubes[0].pose.position.x, cubes[0].pose.position.y, cubes[0].pose.position.z),
                               expected, atol=0.05)

    # a frame in another optical frame, with no transform for it: grounded without world pose, pose_missing counted
    before = node.counters().get("problems", {}).get("pose_missing", 0)
    lone = RgbdPublisher(feeder, frame_id="other_optical_frame", world_frame="odom", depth_encoding="32FC1",
                         publish_odom=False, publish_tf=False)
    assert ros.spin_until(lambda: lone.color.get_subscription_count() > 0, 10.0)
    s = time.time_ns()
    lone.publish(stamp=conv.stamp_from_ns(s), color=rgb, depth_m=depth, K=K, T_world_cam=None)
    assert ros.spin_until(lambda: s in got["grounding"], 15.0), node.counters()
    e = got["grounding"][s].entities[0]
    assert e.found and e.pose_valid and not e.world_pose_valid
    assert node.counters()["problems"]["pose_missing"] > before
