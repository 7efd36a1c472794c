"""Sim camera and replay node processes over real DDS: stamps, encodings, sizes, frame ids, K, poses, ground truth.

Each test runs on its own claimed domain (conftest ``ros`` / ``procs`` fixtures): the camera process is a child
of ``procs`` (stopped and its log closed at the end), the collecting node lives in the ``ros`` session."""
import collections
import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("find_ros.ros.sim_camera_node", reason="find_ros.sim not delivered yet")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros.qos import LATCHED_QOS, SENSOR_QOS  # noqa: E402

TUM = Path(__file__).parents[1] / ".." / "shared" / "data" / "tum_fr3_teddy"
W, H = 160, 120


def _tail(procs, proc) -> str:
    return procs.log_text(proc)[-3000:]


def _wait_exit(procs, proc, timeout_s: float) -> int:
    """The process's exit code; past ``timeout_s`` it is aborted (faulthandler writes every thread's stack to
    the log) and the test fails with the log's tail."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        pytest.fail(f"process did not exit within {timeout_s} s; its log:\n{_tail(procs, proc)}")


def _start(procs, module, args, log_name):
    return procs.node(module, args, log_name, PYTHONFAULTHANDLER="1")


class _Graph:
    """A node in the test's ROS session collecting every camera topic by stamp, plus the spawned camera process."""

    TOPICS = {"color": ("camera/color/image_raw", Image), "depth": ("camera/depth/image_raw", Image),
              "info": ("camera/color/camera_info", CameraInfo), "pose": ("camera/pose", PoseStamped),
              "odom": ("camera/odom", Odometry), "gt_instance": ("camera/gt/instance", Image)}

    def __init__(self, ros, procs, module, args, log_name):
        self.ros, self.procs = ros, procs
        self.proc = _start(procs, module, args, log_name)
        self.node = ros.node("sim_camera_test")
        self.by_stamp = collections.defaultdict(dict)
        for key, (topic, mtype) in self.TOPICS.items():
            self.node.create_subscription(mtype, topic, lambda m, k=key: self._put(k, m), SENSOR_QOS)
        self.objects = []

    def _put(self, key, msg):
        s = msg.header.stamp
        self.by_stamp[(s.sec, s.nanosec)][key] = msg

    def subscribe_objects(self):
        self.node.create_subscription(String, "camera/gt/objects", lambda m: self.objects.append(m), LATCHED_QOS)

    def complete(self, keys):
        return [v for _, v in sorted(self.by_stamp.items()) if set(keys) <= set(v)]

    def _alive(self):
        if self.proc.poll() is not None:
            pytest.fail(f"camera process exited with {self.proc.returncode}; its log:\n{self.tail()}")

    def spin_until(self, cond, timeout_s):
        return self.ros.spin_until(cond, timeout_s, alive=self._alive, period=0.05)

    def wait_exit(self, timeout_s: float) -> int:
        return _wait_exit(self.procs, self.proc, timeout_s)

    def tail(self):
        return _tail(self.procs, self.proc)


def _check_frame(frame, *, depth_encoding, frame_id="camera_color_optical_frame", world="map", w=W, h=H):
    c, d, info, pose = frame["color"], frame["depth"], frame["info"], frame["pose"]
    assert c.encoding == "rgb8" and (c.width, c.height) == (w, h)
    assert d.encoding == depth_encoding and (d.width, d.height) == (w, h)
    assert (info.width, info.height) == (w, h)
    assert c.header.frame_id == d.header.frame_id == info.header.frame_id == frame_id
    assert c.header.stamp == d.header.stamp == info.header.stamp == pose.header.stamp
    K = conv.camera_info_to_K(info)
    assert 0 < K[0, 2] < w and 0 < K[1, 2] < h and abs(K[0, 2] - w / 2) < 0.1 * w and abs(K[1, 2] - h / 2) < 0.1 * h
    assert pose.header.frame_id == world
    T = conv.pose_to_matrix(pose.pose)
    return conv.image_to_rgb(c), conv.image_to_depth_m(d), K, T


@pytest.mark.parametrize("depth_encoding", ["16UC1", "32FC1"])
def test_sim_camera_topics(ros, procs, depth_encoding):
    g = _Graph(ros, procs, "find_ros.ros.sim_camera_node",
               ["-p", "rate_hz:=10.0", "-p", "seed:=0", "-p", f"width:={W}", "-p", f"height:={H}",
                "-p", "publish_gt:=true", "-p", f"depth_encoding:={depth_encoding}",
                "-p", f"publish_odom:={'true' if depth_encoding == '32FC1' else 'false'}"], "sim_camera_node.log")
    keys = ["color", "depth", "info", "pose", "gt_instance"] + (["odom"] if depth_encoding == "32FC1" else [])
    assert g.spin_until(lambda: len(g.complete(keys)) >= 4, 40), g.tail()
    g.subscribe_objects()  # a late joiner still gets the object list (transient local)
    assert g.spin_until(lambda: g.objects, 10), "no camera/gt/objects for a late joiner"
    objects = json.loads(g.objects[0].data)
    assert objects and all({"id", "category", "colour", "size", "center", "box_min", "box_max", "description"}
                           <= set(o) for o in objects)
    ids = {int(o["id"]) for o in objects}
    by_id = {int(o["id"]): o for o in objects}
    stamps = set()
    hits = 0
    for frame in g.complete(keys)[:4]:
        rgb, depth, K, T = _check_frame(frame, depth_encoding=depth_encoding)
        stamps.add((frame["color"].header.stamp.sec, frame["color"].header.stamp.nanosec))
        gt = frame["gt_instance"]
        assert gt.encoding == "32SC1" and (gt.width, gt.height) == (W, H)
        assert gt.header == frame["color"].header
        inst = conv.image_to_numpy(gt)
        assert set(np.unique(inst).tolist()) <= ids | {0}
        assert (depth > 0).mean() > 0.5 and np.all(depth[depth > 0] < 50)
        if depth_encoding == "32FC1":
            odom = frame["odom"]
            assert odom.header.frame_id == "map" and odom.child_frame_id == "camera_color_optical_frame"
            assert odom.pose.pose == frame["pose"].pose
        # depth back-projected with K and the published pose lands in the object's box (REP 103 optical frame)
        for oid in np.unique(inst[(inst > 0) & (depth > 0)]):
            v, u = np.nonzero((inst == oid) & (depth > 0))
            if len(u) < 20:
                continue
            z = depth[v, u]
            pc = np.stack([(u + 0.5 - K[0, 2]) * z / K[0, 0], (v + 0.5 - K[1, 2]) * z / K[1, 1], z], 1)
            pw = pc @ T[:3, :3].T + T[:3, 3]
            o = by_id[int(oid)]
            inside = np.all((pw >= np.subtract(o["box_min"], 0.05)) & (pw <= np.add(o["box_max"], 0.05)), axis=1)
            assert inside.mean() > 0.9, (o["description"], inside.mean())
            hits += 1
    assert len(stamps) == 4, "every frame set has its own stamp"
    assert hits >= 1, "no object visible in 4 frames"


def test_sim_camera_finite_run_and_bad_parameter(procs, tmp_path):
    g = _start(procs, "find_ros.ros.sim_camera_node",
               ["-p", "rate_hz:=20", "-p", "n_frames:=3", "-p", f"width:={W}", "-p", f"height:={H}",
                "-p", "trajectory:=walk"], "finite.log")
    assert _wait_exit(procs, g, 40) == 0, _tail(procs, g)
    assert "published 3 frames; done" in _tail(procs, g)
    bad = _start(procs, "find_ros.ros.sim_camera_node", ["-p", "trajectory:=spiral"], "bad.log")
    assert _wait_exit(procs, bad, 40) == 2, _tail(procs, bad)
    assert "sim_camera_node: ParameterValueError: trajectory must be orbit or walk, got 'spiral'" in _tail(procs, bad)
    # the replay node starts and ends through the same main (run_source_node): one line naming it and the error, 2
    missing = _start(procs, "find_ros.ros.replay_node", ["-p", f"path:={tmp_path / 'nope'}"], "bad_replay.log")
    assert _wait_exit(procs, missing, 40) == 2, _tail(procs, missing)
    assert f"replay_node: DatasetError: TUM folder {tmp_path / 'nope'} does not exist" in _tail(procs, missing)
    assert "Traceback" not in _tail(procs, bad) + _tail(procs, missing)


def test_sim_camera_prerender_replays_the_rendered_frames_and_bounds_its_memory(ros, procs):
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory

    g = _Graph(ros, procs, "find_ros.ros.sim_camera_node",
               ["-p", "rate_hz:=10.0", "-p", "seed:=2", "-p", f"width:={W}", "-p", f"height:={H}",
                "-p", "loop_frames:=5", "-p", "publish_gt:=true", "-p", "prerender:=true"], "prerender.log")
    keys = ["color", "depth", "pose", "gt_instance"]
    assert g.spin_until(lambda: len(g.complete(keys)) >= 7, 40), g.tail()  # past the end of the first loop
    assert "prerendered 5 frames" in g.tail()
    scene = Scene.generate(2)
    poses = orbit_trajectory(scene, 5)
    renderer = SimRenderer(scene, width=W, height=H)
    for frame in g.complete(keys):
        T = conv.pose_to_matrix(frame["pose"].pose)
        i = int(np.argmin([np.abs(P - T).max() for P in poses]))
        assert np.abs(poses[i] - T).max() < 1e-6
        ref = renderer.render(poses[i], index=i)
        np.testing.assert_array_equal(conv.image_to_rgb(frame["color"]), ref.color)
        np.testing.assert_allclose(conv.image_to_depth_m(frame["depth"]), ref.depth, atol=0.0011)
        inst = conv.image_to_numpy(frame["gt_instance"])
        assert frame["gt_instance"].encoding == "32SC1"
        np.testing.assert_array_equal(inst, ref.instance)
    # the same domain: this camera refuses before it publishes anything
    big = _start(procs, "find_ros.ros.sim_camera_node", ["-p", "prerender:=true", "-p", "prerender_max_mb:=10"],
                 "prerender_big.log")
    assert _wait_exit(procs, big, 40) == 2, _tail(procs, big)
    assert "needs" in _tail(procs, big) and "prerender_max_mb 10" in _tail(procs, big)


@pytest.mark.skipif(not TUM.is_dir(), reason=f"TUM data not found at {TUM}")
def test_replay_node_tum(ros, procs):
    pytest.importorskip("find_ros.ros.replay_node", reason="find_ros.sim.datasets not delivered yet")
    g = _Graph(ros, procs, "find_ros.ros.replay_node",
               ["-p", "format:=tum", "-p", f"path:={TUM.resolve()}", "-p", "rate_hz:=15.0", "-p", "loop:=true",
                "-p", "depth_encoding:=32FC1", "-p", "world_frame:=world"], "replay_node.log")
    keys = ["color", "depth", "info", "pose"]
    assert g.spin_until(lambda: len(g.complete(keys)) >= 3, 40), g.tail()
    for frame in g.complete(keys)[:3]:
        rgb, depth, K, T = _check_frame(frame, depth_encoding="32FC1", world="world", w=640, h=480)
        np.testing.assert_allclose(K[[0, 1, 0, 1], [0, 1, 2, 2]], [535.4, 539.2, 320.1, 247.6], atol=1e-6)
        valid = depth[depth > 0]
        assert valid.size > 0.5 * depth.size and 0.3 < np.median(valid) < 6.0
        assert rgb.std() > 10
    assert "gt_instance" not in {k for v in g.by_stamp.values() for k in v}
