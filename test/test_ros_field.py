"""Feature field ROS wiring: FieldBridge on a lifecycle node over real DDS (cloud, save/clear services)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("find_ros.ros.conversions")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from find_ros.field import FeatureField  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.field_bridge import CLOUD_TOPIC, FieldBridge  # noqa: E402
from find_ros.ros.params import PARAMS_BY_NAME  # noqa: E402
from find_ros.ros.qos import OUTPUT_QOS  # noqa: E402

H, W = 60, 80
K = np.array([[70.0, 0, 39.5], [0, 70.0, 29.5], [0, 0, 1]])
NS = f"/field_test_{os.getpid()}"


class _Host(LifecycleNode):
    """Minimal lifecycle host: the bridge's publisher is enabled by the base class on activate."""

    def __init__(self, params):
        super().__init__("field_host", namespace=NS)
        self.params = params
        self.bridge = None

    def on_configure(self, state):
        self.bridge = FieldBridge.create(self, self.params)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        self.bridge.activate()
        return super().on_activate(state)

    def on_deactivate(self, state):
        self.bridge.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.bridge.destroy()
        return TransitionCallbackReturn.SUCCESS


@pytest.fixture
def ros(tmp_path):
    rclpy.init()
    params = {name: spec.default for name, spec in PARAMS_BY_NAME.items()}
    params.update(field_enable=True, field_publish_period_s=0.1, field_embedding_dim=8,
                  field_save_path=str(tmp_path / "field.npz"))
    host = _Host(params)
    client = rclpy.create_node("field_client", namespace=NS)
    ex = SingleThreadedExecutor()
    ex.add_node(host)
    ex.add_node(client)
    try:
        yield host, client, ex, params
    finally:
        ex.shutdown()
        host.destroy_node()
        client.destroy_node()
        rclpy.shutdown()


def _spin_until(ex, cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.05)
        if cond():
            return True
    return False


def _call(ex, client, name):
    cli = client.create_client(Trigger, name)
    assert _spin_until(ex, lambda: cli.service_is_ready()), f"{name} not available"
    fut = cli.call_async(Trigger.Request())
    assert _spin_until(ex, fut.done), f"{name} did not answer"
    return fut.result()


def test_disabled_bridge_is_none():
    assert FieldBridge.create(None, {"field_enable": False}) is None


def test_bridge_publishes_cloud_and_serves_save_clear(ros):
    host, client, ex, params = ros
    clouds = []
    client.create_subscription(PointCloud2, CLOUD_TOPIC, clouds.append, OUTPUT_QOS)
    host.trigger_configure()
    host.trigger_activate()
    T = np.eye(4)
    T[:3, 3] = (0.5, 0.0, 1.0)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 220
    host.bridge.feed(rgb, np.full((H, W), 2.0, np.float32), K, T)
    host.bridge.feed(rgb, np.full((H, W), 2.0, np.float32), K, None)  # no pose: skipped, counted
    assert host.bridge.frames == 1 and host.bridge.skipped_no_pose == 1
    assert _spin_until(ex, lambda: any(c.width > 0 for c in clouds)), "no non-empty field cloud"
    msg = next(c for c in clouds if c.width > 0)
    assert msg.header.frame_id == params["world_frame"]
    pts = conv.cloud2_to_numpy(msg)
    assert np.all(np.abs(pts["z"] - 3.0) < 0.05)
    assert np.all(pts["rgb"][:, 0] == 220)  # plane at 2 m in front of a camera at z=1 m
    assert msg.width == host.bridge.field.num_voxels

    r = _call(ex, client, "find/field_save")
    assert r.success, r.message
    assert FeatureField.load(params["field_save_path"]).num_voxels == msg.width

    r = _call(ex, client, "find/field_clear")
    assert r.success
    clouds.clear()
    assert _spin_until(ex, lambda: any(c.width == 0 for c in clouds)), "cleared field not published"
    host.trigger_deactivate()
    host.trigger_cleanup()
    assert host.bridge._pub is None


def test_perception_node_field_hook_configure_and_cleanup():
    from rclpy.parameter import Parameter

    from find_ros.ros.perception_node import PerceptionNode

    rclpy.init()
    try:
        node = PerceptionNode(namespace=NS, parameter_overrides=[
            Parameter("field_enable", Parameter.Type.BOOL, True),
            Parameter("field_voxel_size", Parameter.Type.DOUBLE, 0.1)])
        try:
            node.trigger_configure()
            assert node._field is not None and node._field.field.config.voxel_size == 0.1
            topics = dict(node.get_publisher_names_and_types_by_node("perception_node", NS))
            assert f"{NS}/{CLOUD_TOPIC}" in topics
            node.trigger_cleanup()
            assert node._field is None
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()
