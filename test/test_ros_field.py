"""Feature field ROS wiring over real DDS: FieldBridge on a lifecycle node (latched cloud with score, query, goal,
save/load/clear, errors) and the multi-process graph sim camera -> perception node (field_enable) -> query.

Every test runs on its own claimed domain (conftest ``ros`` / ``procs``): in-process nodes are made on the
session's context and destroyed in the fixture's ``finally`` (with the bridge's fusion thread joined)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("find_ros.ros.conversions")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from find_ros.field import FeatureField, FieldConfig  # noqa: E402
from find_ros.grounding.baseline import HsvBaselineGrounder  # noqa: E402
from find_ros.instruction import parse_instruction  # noqa: E402
from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.field_bridge import (CLEAR_SERVICE, CLOUD_TOPIC, GOAL_TOPIC, HEATMAP_TOPIC,  # noqa: E402
                                       LOAD_SERVICE, QUERY_SERVICE, SAVE_SERVICE, FieldBridge, FieldBridgeError)
from find_ros.ros.params import PARAMS_BY_NAME  # noqa: E402
from find_ros.ros.qos import LATCHED_QOS, OUTPUT_QOS  # noqa: E402
from find_ros.srv import FieldFile, QueryField  # noqa: E402

H, W = 60, 80
K = np.array([[70.0, 0, 39.5], [0, 70.0, 29.5], [0, 0, 1]])
NS = "/field_test"  # the domain is the test's own: no other graph shares these names


class _Host(LifecycleNode):
    """Minimal lifecycle host: the bridge's publishers are enabled by the base class on activate."""

    def __init__(self, params, *, context):
        super().__init__("field_host", namespace=NS, context=context)
        self.params = params
        self.bridge = None
        self.instruction = None

    def on_configure(self, state):
        self.bridge = FieldBridge.create(self, self.params, instruction=lambda: self.instruction)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        self.bridge.activate(HsvBaselineGrounder())
        return super().on_activate(state)

    def on_deactivate(self, state):
        self.bridge.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.bridge.destroy()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        """Stop the bridge's fusion thread and destroy its publishers and services in any lifecycle state."""
        if self.bridge is not None:
            self.bridge.destroy()
        super().destroy_node()


@pytest.fixture
def field_host(ros, tmp_path):
    """The lifecycle host and a client node in the test's ROS session (both destroyed by the ``ros`` fixture)."""
    params = {name: spec.default for name, spec in PARAMS_BY_NAME.items()}
    params.update(field_enable=True, field_publish_period_s=0.1, field_path=str(tmp_path / "field.npz"))
    host = ros.adopt(_Host(params, context=ros.context))
    client = ros.node("field_client", namespace=NS)
    return host, client, ros, params


def _spin_until(ros, cond, timeout=10.0):
    return ros.spin_until(cond, timeout, period=0.05)


def _call(ros, client, srv_type, name, req):
    cli = client.create_client(srv_type, name)
    try:
        assert _spin_until(ros, cli.service_is_ready), f"{name} not available"
        fut = cli.call_async(req)
        assert _spin_until(ros, fut.done), f"{name} did not answer"
        return fut.result()
    finally:
        client.destroy_client(cli)


def _two_colour_frame():
    """A wall at 2 m: left half red, right half blue."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2] = (220, 20, 20)
    rgb[:, W // 2:] = (20, 40, 220)
    return rgb, np.full((H, W), 2.0, np.float32)


def test_disabled_bridge_is_none():
    assert FieldBridge.create(None, {"field_enable": False}) is None


def test_bridge_cloud_query_save_load_clear(field_host, tmp_path):
    host, client, ros, params = field_host
    host.trigger_configure()
    host.trigger_activate()
    bridge = host.bridge
    assert bridge.field.config.embedding_dim == 12  # follows the hsv-baseline grounder
    T = np.eye(4)
    T[:3, 3] = (0.5, 0.0, 1.0)
    rgb, depth = _two_colour_frame()
    bridge.feed(rgb, depth, K, None)  # no pose: not fused, counted
    assert bridge.skipped_no_pose == 1
    bridge.feed(rgb, depth, K, T)  # no pixel embeddings given: the fusion thread asks the grounder
    assert bridge.wait_idle(10.0) and bridge.frames == 1 and bridge.errors == 0

    # latched cloud: a late subscriber still gets it; score present and 0 without an instruction
    assert _spin_until(ros, lambda: bridge._published is not None)
    clouds = []
    client.create_subscription(PointCloud2, CLOUD_TOPIC, clouds.append, LATCHED_QOS)
    assert _spin_until(ros, lambda: any(c.width > 0 for c in clouds)), "no latched field cloud"
    pts = conv.cloud2_to_numpy(clouds[-1])
    assert {"x", "y", "z", "rgb", "score"} <= set(pts)
    assert clouds[-1].header.frame_id == params["world_frame"]
    assert np.all(np.abs(pts["z"] - 3.0) < 0.05) and np.all(pts["score"] == 0)

    # an instruction makes the score the similarity to it: red voxels score high, blue ones low
    host.instruction = parse_instruction("red wall", [])
    clouds.clear()
    assert _spin_until(ros, lambda: bool(clouds)), "cloud not republished after the instruction changed"
    pts = conv.cloud2_to_numpy(clouds[-1])
    red = pts["rgb"][:, 0] > 150
    assert red.any() and (~red).any()
    assert pts["score"][red].min() > 0.8 and pts["score"][~red].max() < 0.3

    goals = []
    client.create_subscription(PoseStamped, GOAL_TOPIC, goals.append, OUTPUT_QOS)
    heat = []
    client.create_subscription(PointCloud2, HEATMAP_TOPIC, heat.append, LATCHED_QOS)
    r = _call(ros, client, QueryField, QUERY_SERVICE, QueryField.Request(text="blue wall"))
    assert r.success, r.message
    g = r.goals[0]
    assert g.header.frame_id == params["world_frame"]
    # blue half is the camera's right (+x): x in [0.5, 0.5 + 40/70*2]
    assert 0.6 < g.pose.position.x < 1.7 and abs(g.pose.position.z - 3.0) < 0.1
    assert len(r.scores) == len(r.goals) == len(r.extents) and r.scores[0] > 0.8
    hm = conv.cloud2_to_numpy(r.heatmap)
    assert hm["score"].shape[0] == bridge.field.num_voxels and hm["score"].max() > 0.8
    assert _spin_until(ros, lambda: bool(goals) and bool(heat)), "goal/heatmap topics not published"
    assert goals[-1].pose.position.x == pytest.approx(g.pose.position.x)
    r = _call(ros, client, QueryField, QUERY_SERVICE, QueryField.Request())
    assert not r.success and "empty" in r.message

    # save (default path), clear, load back
    n = bridge.field.num_voxels
    r = _call(ros, client, FieldFile, SAVE_SERVICE, FieldFile.Request())
    assert r.success and r.num_voxels == n, r.message
    r = _call(ros, client, Trigger, CLEAR_SERVICE, Trigger.Request())
    assert r.success and bridge.field.num_voxels == 0
    r = _call(ros, client, FieldFile, LOAD_SERVICE, FieldFile.Request(path=params["field_path"]))
    assert r.success and r.num_voxels == n and bridge.field.num_voxels == n, r.message

    # errors come back as success=false and leave the field / the file alone
    r = _call(ros, client, FieldFile, LOAD_SERVICE, FieldFile.Request(path=str(tmp_path / "missing.npz")))
    assert not r.success and "no field file" in r.message and bridge.field.num_voxels == n
    other = FeatureField(config=FieldConfig(embedding_dim=7))
    other.integrate(depth, K, T)
    other.save(tmp_path / "d7.npz")
    r = _call(ros, client, FieldFile, LOAD_SERVICE, FieldFile.Request(path=str(tmp_path / "d7.npz")))
    assert not r.success and "D=7" in r.message and bridge.field.config.embedding_dim == 12
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    r = _call(ros, client, FieldFile, LOAD_SERVICE, FieldFile.Request(path=str(tmp_path / "junk.npz")))
    assert not r.success and bridge.field.num_voxels == n
    r = _call(ros, client, FieldFile, SAVE_SERVICE, FieldFile.Request(path=str(tmp_path / "junk.npz" / "x.npz")))
    assert not r.success and "failed" in r.message
    assert FeatureField.load(params["field_path"]).num_voxels == n  # the saved file is intact
    # an exception that is not an OSError (a NUL byte in the path) is answered, not raised into the executor
    r = bridge._srv_save(FieldFile.Request(path=str(tmp_path / "a\0b.npz")), FieldFile.Response())
    assert not r.success and "ValueError" in r.message

    host.trigger_deactivate()
    host.trigger_cleanup()
    assert host.bridge._pubs == {}


def test_embedding_dim_must_match_grounder(field_host):
    host, client, ros, params = field_host
    params["field_embedding_dim"] = 64
    host.trigger_configure()
    with pytest.raises(FieldBridgeError, match="D=12"):
        host.bridge.activate(HsvBaselineGrounder())


def test_fusion_never_blocks_feed(field_host):
    """feed() only fills the one-slot mailbox: many frames in a burst, newest wins, the rest count as dropped."""
    host, client, ros, params = field_host
    host.trigger_configure()
    host.trigger_activate()
    rgb, depth = _two_colour_frame()
    T = np.eye(4)
    t0 = time.perf_counter()
    for _ in range(50):
        host.bridge.feed(rgb, depth, K, T)
    assert host.bridge.wait_idle(20.0)
    assert host.bridge.frames + host.bridge.dropped == 50 and host.bridge.frames >= 1
    assert host.bridge.dropped >= 1, f"50 frames fed in {time.perf_counter() - t0:.3f} s were all fused in line"


def test_query_references_are_validated_like_the_nodes(field_host):
    """find/field/query converts its instruction's references as find/set_instruction does
    (find_ros.ros.references): max_image_pixels, the mask checks; an acceptable reference still queries."""
    from sensor_msgs.msg import Image

    from find_ros.msg import InterleavedInstruction

    host, client, ros, params = field_host
    host.trigger_configure()
    host.trigger_activate()
    rgb, depth = _two_colour_frame()
    host.bridge.feed(rgb, depth, K, np.eye(4))
    assert host.bridge.wait_idle(10.0) and host.bridge.frames == 1

    def query(images, masks=()):
        ins = InterleavedInstruction(text="the <0>", reference_images=list(images), reference_masks=list(masks))
        return _call(ros, client, QueryField, QUERY_SERVICE, QueryField.Request(instruction=ins))

    # the case: an 8000x8000 reference is refused from its header (default max_image_pixels 4096*4096)
    r = query([Image(width=8000, height=8000, encoding="rgb8", step=24000)])
    assert not r.success and "query rejected" in r.message
    assert "reference image 0" in r.message and "max_image_pixels=16777216" in r.message, r.message
    red = conv.numpy_to_image(np.full((40, 40, 3), (220, 20, 20), np.uint8), "rgb8")
    r = query([red])  # a well-formed reference queries
    assert r.success and "rejected" not in r.message, r.message
    params["max_image_pixels"] = 30 * 30  # the node's parameter, as the node reads it
    r = query([red])
    assert not r.success and "40x40 has 1600 pixels > max_image_pixels=900" in r.message, r.message
    params["max_image_pixels"] = PARAMS_BY_NAME["max_image_pixels"].default
    r = query([red], [conv.numpy_to_image(np.full((40, 40, 3), 255, np.uint8), "rgb8")])
    assert not r.success and "reference mask 0 has encoding 'rgb8', expected mono8" in r.message, r.message


def test_perception_node_field_hook_configure_activate_cleanup(ros):
    from rclpy.parameter import Parameter

    from find_ros.ros.perception_node import PerceptionNode

    node = ros.adopt(PerceptionNode(namespace=NS, context=ros.context, parameter_overrides=[
        Parameter("grounder", Parameter.Type.STRING, "hsv-baseline"),
        Parameter("field_enable", Parameter.Type.BOOL, True),
        Parameter("field_voxel_size", Parameter.Type.DOUBLE, 0.1)]))
    node.trigger_configure()
    assert node._field is not None
    topics = dict(node.get_publisher_names_and_types_by_node("perception_node", NS))
    assert f"{NS}/{CLOUD_TOPIC}" in topics and f"{NS}/{GOAL_TOPIC}" in topics
    node.trigger_activate()
    assert node._field.field.config.voxel_size == 0.1 and node._field.field.config.embedding_dim == 12
    srvs = dict(node.get_service_names_and_types_by_node("perception_node", NS))
    assert {f"{NS}/{s}" for s in (QUERY_SERVICE, SAVE_SERVICE, LOAD_SERVICE, CLEAR_SERVICE)} <= set(srvs)
    node.trigger_deactivate()
    node.trigger_cleanup()
    assert node._field is None


def test_perception_node_refuses_wrong_embedding_dim(ros):
    from rclpy.parameter import Parameter

    from find_ros.ros.perception_node import PerceptionNode

    node = ros.adopt(PerceptionNode(namespace=NS, context=ros.context, parameter_overrides=[
        Parameter("grounder", Parameter.Type.STRING, "hsv-baseline"),  # D=12
        Parameter("field_enable", Parameter.Type.BOOL, True),
        Parameter("field_embedding_dim", Parameter.Type.INTEGER, 64)]))
    node.trigger_configure()
    assert node.trigger_activate() != TransitionCallbackReturn.SUCCESS
    assert node._grounder is None  # torn down


# ---------------------------------------------------------------------------- multi-process graph
SEED, TARGET = 1, "blue chair"  # seed 1: the only blue object is a large chair (hsv-baseline grounder)


def test_sim_camera_to_perception_node_field_query(ros, procs):
    pytest.importorskip("find_ros.ros.sim_camera_node", reason="find_ros.sim not available")
    camera = procs.node("find_ros.ros.sim_camera_node",
                        ["-p", f"seed:={SEED}", "-p", "rate_hz:=8.0", "-p", "width:=320", "-p", "height:=240",
                         "-p", "loop_frames:=40", "-p", "publish_gt:=true"], "camera.log")
    perception = procs.node("find_ros.ros.perception_node",
                            ["-p", "autostart:=true", "-p", "grounder:=hsv-baseline", "-p", "field_enable:=true",
                             "-p", "field_publish_period_s:=0.5",
                             "-p", "max_stamp_age_s:=0.0", "-p", "publish_overlay:=false"], "node.log")
    running = {"camera": camera, "node": perception}
    node = ros.node("field_graph_test")
    clouds, objects = [], []
    node.create_subscription(PointCloud2, CLOUD_TOPIC, clouds.append, LATCHED_QOS)
    node.create_subscription(String, "camera/gt/objects", objects.append, LATCHED_QOS)
    goals = []
    node.create_subscription(PoseStamped, GOAL_TOPIC, goals.append, OUTPUT_QOS)
    pub = node.create_publisher(String, "find/instruction_text", 10)
    status = []
    node.create_subscription(String, "find/status", lambda m: status.append(json.loads(m.data)), 10)

    def tails():
        return "\n".join(f"--- {k}\n{procs.log_text(p)[-2000:]}" for k, p in running.items())

    def alive():
        assert all(p.poll() is None for p in running.values()), "a node exited\n" + tails()

    def spin(cond, timeout):
        return ros.spin_until(cond, timeout, alive=alive, period=0.05)

    assert spin(lambda: bool(objects), 20.0), "no GT objects\n" + tails()
    gt = json.loads(objects[-1].data)
    target = [o for o in gt if f"{o['colour']} {o['category']}" == TARGET]
    assert len(target) == 1 and sum(o["colour"] == "blue" for o in gt) == 1, gt
    # the orbit (40 frames at 8 Hz) goes round once in ~5 s; wait for a cloud of a well-covered field
    t_first = time.monotonic()
    assert spin(lambda: bool(clouds) and clouds[-1].width > 2000 and time.monotonic() - t_first > 6, 25.0), \
        f"no large field cloud (last width {clouds[-1].width if clouds else None})\n" + tails()
    pts = conv.cloud2_to_numpy(clouds[-1])
    assert "score" in pts and np.all(np.isfinite(pts["score"]))
    cli = node.create_client(QueryField, QUERY_SERVICE)
    assert spin(cli.service_is_ready, 5.0)
    fut = cli.call_async(QueryField.Request(text=TARGET))
    assert spin(fut.done, 10.0), "query did not answer\n" + tails()
    r = fut.result()
    assert r.success, r.message
    g = np.array([r.goals[0].pose.position.x, r.goals[0].pose.position.y, r.goals[0].pose.position.z])
    lo, hi = np.array(target[0]["box_min"]) - 0.1, np.array(target[0]["box_max"]) + 0.1
    assert np.all(g >= lo) and np.all(g <= hi), f"goal {g} outside {lo}..{hi} ({r.message})"
    assert spin(lambda: bool(goals), 5.0), "find/field/goal not published"
    assert goals[-1].pose.position.x == pytest.approx(g[0]) and goals[-1].header.frame_id == "map"

    # with an instruction the cloud's score is the similarity to it: the best voxels lie on the target
    pub.publish(String(data=TARGET))
    assert spin(lambda: clouds and conv.cloud2_to_numpy(clouds[-1])["score"].max() > 0.5, 10.0), \
        "cloud score did not follow the instruction\n" + tails()
    pts = conv.cloud2_to_numpy(clouds[-1])
    # voxels that match well (score > 0.5: about 175 here) lie on the target; a top-k share would depend on how
    # much of the room has been fused (about 90 % measured; 47 % for the top 1 % in one CI run)
    high = np.stack([pts["x"], pts["y"], pts["z"]], 1)[pts["score"] > 0.5]
    inside = np.all((high >= lo) & (high <= hi), axis=1).mean()
    assert len(high) >= 50 and inside > 0.75, \
        f"{len(high)} voxels score > 0.5, {inside:.0%} of them in the {TARGET} box"
    assert spin(lambda: status and status[-1].get("field_frames", 0) > 10, 5.0), status[-1:]
    st = status[-1]
    assert st["field_errors"] == 0 and st["field_active_blocks"] > 0 and st["field_memory_bytes"] > 0, st
    assert st["field_reserved_bytes"] > st["field_memory_bytes"], st
    assert "MB reserved" in procs.log_text(perception), "the field reservation is not logged"
