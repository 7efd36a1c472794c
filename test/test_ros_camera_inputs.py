"""CameraInputs without DDS: a fake node records subscriptions; messages go through the captured callbacks."""
import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402

from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.camera_inputs import COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, CameraInputs  # noqa: E402

K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])
PARAMS = {"sync_slop_s": 0.02, "sensor_reliability": "best_effort", "camera_pose_source": "pose",
          "max_image_pixels": 10**6, "max_stamp_age_s": 0.0, "world_frame": "map"}


class _Clock:
    def now(self):
        class T:
            nanoseconds = 0
        return T()


class _Node:
    def __init__(self):
        self.subs, self.destroyed = {}, []

    def create_subscription(self, mtype, topic, cb, qos):
        self.subs[topic] = cb
        return topic

    def destroy_subscription(self, s):
        self.destroyed.append(s)

    def get_clock(self):
        return _Clock()


def _inputs(**params):
    node, counts, warns, sets = _Node(), [], [], []
    ci = CameraInputs(node=node, params={**PARAMS, **params}, count=counts.append,
                      warn=lambda kind, msg, level="warning": warns.append(kind),
                      on_frame_set=lambda c, d, i: sets.append((c, d, i)))
    ci.activate()
    return ci, node, counts, warns, sets


def _msgs(sec=5):
    hdr = conv.numpy_to_image(np.zeros((60, 80, 3), np.uint8), "rgb8").header
    hdr.stamp.sec = sec
    color = conv.numpy_to_image(np.zeros((60, 80, 3), np.uint8), "rgb8", header=hdr)
    depth = conv.numpy_to_image(np.full((60, 80), 1000, np.uint16), "16UC1", header=hdr)
    info = conv.camera_info_from_K(K, 80, 60, header=hdr)
    return color, depth, info


def test_a_matched_set_reaches_the_worker_and_poses_are_looked_up_by_stamp():
    ci, node, counts, warns, sets = _inputs()
    assert {COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, "camera/pose"} <= set(node.subs)
    color, depth, info = _msgs()
    pose = PoseStamped()
    pose.header.stamp.sec, pose.header.frame_id, pose.pose.orientation.w, pose.pose.position.x = 5, "map", 1.0, 2.0
    node.subs["camera/pose"](pose)
    node.subs[INFO_TOPIC](info)
    node.subs[DEPTH_TOPIC](depth)
    node.subs[COLOR_TOPIC](color)
    assert len(sets) == 1 and sets[0][0] is color and counts == ["frames_in"] and warns == []
    T = ci.lookup_pose(color)
    assert T is not None and T[0, 3] == 2.0
    ci.deactivate()
    assert sorted(node.destroyed) == sorted(node.subs)


def test_bad_messages_are_counted_and_warned_by_kind_never_raised():
    ci, node, counts, warns, sets = _inputs(max_image_pixels=100)
    color, depth, info = _msgs()
    node.subs[COLOR_TOPIC](color)  # 80x60 > 100 pixels
    node.subs[COLOR_TOPIC](depth)  # wrong encoding on the colour topic
    node.subs[COLOR_TOPIC](object())  # not even a message
    assert counts == ["frames_in", "invalid_input"] * 3
    assert warns == ["color_too_large", "color_encoding", "input_error"] and sets == []
    bad = PoseStamped()
    bad.pose.orientation.w = 0.0  # zero quaternion
    node.subs["camera/pose"](bad)
    assert counts[-1] == "invalid_input" and warns[-1] == "pose_invalid"


def test_colour_before_camera_info_waits_and_says_so():
    ci, node, counts, warns, sets = _inputs()
    node.subs[COLOR_TOPIC](_msgs()[0])
    assert counts == ["frames_in", "waiting_camera_info"] and warns == ["missing_depth_camera_info"] and sets == []
