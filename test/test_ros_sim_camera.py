"""Sim camera and replay node processes over real DDS: stamps, encodings, sizes, frame ids, K, poses, ground truth."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
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


def _domain(offset: int) -> int:
    return 1 + (os.getpid() * 13 + 40 + offset) % 99  # 1..99; test_ros_messages uses offset 0


class _Graph:
    """In-process test node collecting every camera topic by stamp, plus the spawned camera process."""

    TOPICS = {"color": ("camera/color/image_raw", Image), "depth": ("camera/depth/image_raw", Image),
              "info": ("camera/color/camera_info", CameraInfo), "pose": ("camera/pose", PoseStamped),
              "odom": ("camera/odom", Odometry), "gt_instance": ("camera/gt/instance", Image)}

    def __init__(self, domain, module, args, log):
        self.env = dict(os.environ, ROS_DOMAIN_ID=str(domain), FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA",
                        PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *args], env=self.env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("sim_camera_test", context=self.ctx)
        from rclpy.executors import SingleThreadedExecutor

        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
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

    def spin_until(self, cond, timeout_s):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return True
            if self.proc.poll() is not None:
                return cond()
            self.ex.spin_once(timeout_sec=0.05)
        return cond()

    def wait_exit(self, timeout_s: float) -> int:
        """The process's exit code; past ``timeout_s`` it is aborted (faulthandler writes every thread's stack to
        the log) and the test fails with the log's tail."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            pytest.fail(f"process did not exit within {timeout_s} s; its log:\n{self.tail()}")

    def tail(self):
        return self.log.read_text(errors="replace")[-3000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.ex.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def graph(tmp_path, request):
    made = []

    def start(module, args, offset=0):
        g = _Graph(_domain(offset), module, args, tmp_path / f"{module.rsplit('.', 1)[-1]}_{offset}.log")
        made.append(g)
        return g

    try:
        yield start
    finally:
        for g in made:
            g.close()


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
def test_sim_camera_topics(graph, depth_encoding):
    offset = 1 if depth_encoding == "16UC1" else 2
    g = graph("find_ros.ros.sim_camera_node",
              ["-p", "rate_hz:=10.0", "-p", "seed:=0", "-p", f"width:={W}", "-p", f"height:={H}",
               "-p", "publish_gt:=true", "-p", f"depth_encoding:={depth_encoding}",
               "-p", f"publish_odom:={'true' if depth_encoding == '32FC1' else 'false'}"], offset)
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


def test_sim_camera_finite_run_and_bad_parameter(graph, tmp_path):
    g = graph("find_ros.ros.sim_camera_node",
              ["-p", "rate_hz:=20", "-p", "n_frames:=3", "-p", f"width:={W}", "-p", f"height:={H}",
               "-p", "trajectory:=walk"], 3)
    assert g.wait_exit(40) == 0, g.tail()
    assert "published 3 frames; done" in g.tail()
    bad = graph("find_ros.ros.sim_camera_node", ["-p", "trajectory:=spiral"], 4)
    assert bad.wait_exit(40) == 2, bad.tail()
    assert "trajectory must be orbit or walk, got 'spiral'" in bad.tail()


def test_sim_camera_prerender_replays_the_rendered_frames_and_bounds_its_memory(graph):
    from find_ros.sim import Scene, SimRenderer, orbit_trajectory

    g = graph("find_ros.ros.sim_camera_node",
              ["-p", "rate_hz:=10.0", "-p", "seed:=2", "-p", f"width:={W}", "-p", f"height:={H}",
               "-p", "loop_frames:=5", "-p", "publish_gt:=true", "-p", "prerender:=true"], 6)
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
    big = graph("find_ros.ros.sim_camera_node", ["-p", "prerender:=true", "-p", "prerender_max_mb:=10"], 7)
    assert big.wait_exit(40) == 2, big.tail()
    assert "needs" in big.tail() and "prerender_max_mb 10" in big.tail()


@pytest.mark.skipif(not TUM.is_dir(), reason=f"TUM data not found at {TUM}")
def test_replay_node_tum(graph):
    pytest.importorskip("find_ros.ros.replay_node", reason="find_ros.sim.datasets not delivered yet")
    g = graph("find_ros.ros.replay_node",
              ["-p", "format:=tum", "-p", f"path:={TUM.resolve()}", "-p", "rate_hz:=15.0", "-p", "loop:=true",
               "-p", "depth_encoding:=32FC1", "-p", "world_frame:=world"], 5)
    keys = ["color", "depth", "info", "pose"]
    assert g.spin_until(lambda: len(g.complete(keys)) >= 3, 40), g.tail()
    for frame in g.complete(keys)[:3]:
        rgb, depth, K, T = _check_frame(frame, depth_encoding="32FC1", world="world", w=640, h=480)
        np.testing.assert_allclose(K[[0, 1, 0, 1], [0, 1, 2, 2]], [535.4, 539.2, 320.1, 247.6], atol=1e-6)
        valid = depth[depth > 0]
        assert valid.size > 0.5 * depth.size and 0.3 < np.median(valid) < 6.0
        assert rgb.std() > 10
    assert "gt_instance" not in {k for v in g.by_stamp.values() for k in v}
