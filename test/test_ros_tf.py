"""The camera's transform on /tf: find_ros.ros.tf (pure), the tf2_msgs fallback package, and the sim camera and
replay node processes publishing world_frame -> optical frame over real DDS, matching camera/pose."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy  # noqa: E402

from find_ros.ros import conversions as conv  # noqa: E402
from find_ros.ros import tf  # noqa: E402
from find_ros.ros.qos import SENSOR_QOS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FALLBACK = ROOT / "interfaces" / "tf2_msgs"
needs_tf2_msgs = pytest.mark.skipif(tf.tf_message_type() is None,
                                    reason="tf2_msgs not importable (scripts/setup.sh builds interfaces/tf2_msgs)")


def _T(yaw: float, t=(1.0, -2.0, 0.5)) -> np.ndarray:
    """A camera pose: optical frame (z forward) looking along world x rotated by ``yaw`` about world z."""
    R0 = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # optical -> world for a level camera looking along +x
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ R0
    T[:3, 3] = t
    return T


def test_transform_stamped_round_trip_and_frames():
    T = _T(0.7)
    ts = tf.transform_stamped(T, stamp=Time(sec=5, nanosec=6), parent_frame="map",
                              child_frame="camera_color_optical_frame")
    assert (ts.header.frame_id, ts.child_frame_id) == ("map", "camera_color_optical_frame")
    assert (ts.header.stamp.sec, ts.header.stamp.nanosec) == (5, 6)
    np.testing.assert_allclose(tf.transform_to_matrix(ts), T, atol=1e-12)
    np.testing.assert_allclose(tf.transform_to_matrix(ts.transform), T, atol=1e-12)
    for parent, child in (("map", "map"), ("", "cam"), ("map", "")):
        with pytest.raises(ValueError, match="two different, non-empty frames"):
            tf.transform_stamped(T, stamp=Time(), parent_frame=parent, child_frame=child)
    bad = T.copy()
    bad[:3, :3] *= 2.0
    with pytest.raises(conv.ConversionError, match="not a proper rotation"):
        tf.transform_stamped(bad, stamp=Time(), parent_frame="map", child_frame="cam")


def test_tf_qos_is_tf2s_dynamic_broadcaster_qos():
    q = tf.TF_QOS
    assert (q.depth, q.reliability, q.durability) == (100, ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)
    assert tf.TF_TOPIC == "/tf"


@needs_tf2_msgs
def test_tf_message_holds_the_transforms():
    ts = [tf.transform_stamped(_T(a), stamp=Time(sec=1), parent_frame="map", child_frame=f"c{k}")
          for k, a in enumerate((0.0, 1.0))]
    msg = tf.tf_message(ts)
    assert type(msg).__module__.startswith("tf2_msgs.msg")
    assert [t.child_frame_id for t in msg.transforms] == ["c0", "c1"]


def test_fallback_package_is_tfmessage_only_and_colcon_ignored():
    definition = (FALLBACK / "msg" / "TFMessage.msg").read_text().split()
    assert definition == ["geometry_msgs/TransformStamped[]", "transforms"]  # the real one: same type hash
    assert (FALLBACK / "COLCON_IGNORE").is_file(), "a colcon workspace must never build it over the real tf2_msgs"
    assert "<name>tf2_msgs</name>" in (FALLBACK / "package.xml").read_text()
    assert '"msg/TFMessage.msg"' in (FALLBACK / "CMakeLists.txt").read_text()
    assert "interfaces/tf2_msgs/build.sh" in (ROOT / "scripts" / "setup.sh").read_text()
    colcon = Path(sys.executable).with_name("colcon")
    if colcon.exists():  # colcon's discovery skips it, even when pointed at its parent folder
        out = subprocess.run([str(colcon), "list", "--base-paths", str(FALLBACK.parent)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "tf2_msgs" not in out.stdout, out.stdout + out.stderr


@needs_tf2_msgs
def test_fallback_build_does_nothing_when_tf2_msgs_imports():
    """scripts/setup.sh's fallback step is idempotent: with tf2_msgs importable it builds nothing."""
    out = subprocess.run(["bash", str(FALLBACK / "build.sh"), sys.prefix], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tf2_msgs importable" in out.stdout and "fallback not needed" in out.stdout


class _TfGraph:
    """The camera process and, in the test's session, subscribers on /tf (tf2's QoS) and camera/pose by stamp."""

    def __init__(self, ros, procs, module: str, args: list[str], log_name: str) -> None:
        TFMessage = tf.tf_message_type()
        self.ros, self.procs = ros, procs
        self.proc = procs.node(module, args, log_name)
        self.node = ros.node("tf_test")
        self.tf: dict[tuple[int, int], object] = {}
        self.pose: dict[tuple[int, int], PoseStamped] = {}
        self.node.create_subscription(TFMessage, tf.TF_TOPIC, self._on_tf, tf.TF_QOS)
        self.node.create_subscription(PoseStamped, "camera/pose", self._on_pose, SENSOR_QOS)

    @staticmethod
    def _key(stamp) -> tuple[int, int]:
        return stamp.sec, stamp.nanosec

    def _on_tf(self, msg) -> None:
        for t in msg.transforms:
            self.tf[self._key(t.header.stamp)] = t

    def _on_pose(self, msg: PoseStamped) -> None:
        self.pose[self._key(msg.header.stamp)] = msg

    def matched(self) -> list[tuple[object, PoseStamped]]:
        return [(self.tf[k], self.pose[k]) for k in sorted(set(self.tf) & set(self.pose))]

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"camera process exited with {self.proc.returncode}:\n{self.procs.log_text(self.proc)[-3000:]}")

    def wait_matched(self, n: int, timeout_s: float) -> list:
        ok = self.ros.spin_until(lambda: len(self.matched()) >= n, timeout_s, alive=self._alive, period=0.05)
        assert ok, (f"{len(self.tf)} /tf, {len(self.pose)} camera/pose messages\n"
                    f"{self.procs.log_text(self.proc)[-3000:]}")
        return self.matched()


def _check_tf_matches_pose(pairs, *, world: str, optical: str) -> None:
    for t, pose in pairs:
        assert t.header.frame_id == world == pose.header.frame_id and t.child_frame_id == optical
        np.testing.assert_allclose(tf.transform_to_matrix(t), conv.pose_to_matrix(pose.pose), atol=1e-9)
    Ts = [tf.transform_to_matrix(t) for t, _ in pairs]
    assert max(np.abs(a - Ts[0]).max() for a in Ts[1:]) > 1e-3, "the camera moves: its transform must change"


@needs_tf2_msgs
@pytest.mark.ros
def test_sim_camera_publishes_its_transform_on_tf(ros, procs):
    g = _TfGraph(ros, procs, "find_ros.ros.sim_camera_node",
                 ["-p", "rate_hz:=10.0", "-p", "seed:=0", "-p", "width:=96", "-p", "height:=72",
                  "-p", "world_frame:=odom", "-p", "frame_id:=cam_optical"], "sim_camera_tf.log")
    _check_tf_matches_pose(g.wait_matched(3, 40)[:3], world="odom", optical="cam_optical")


@needs_tf2_msgs
@pytest.mark.ros
def test_sim_camera_tf_can_be_switched_off(ros, procs):
    TFMessage = tf.tf_message_type()
    node = ros.node("tf_off_test")
    got_tf, got_pose = [], []
    node.create_subscription(TFMessage, tf.TF_TOPIC, got_tf.append, tf.TF_QOS)
    node.create_subscription(PoseStamped, "camera/pose", got_pose.append, SENSOR_QOS)
    cam = procs.node("find_ros.ros.sim_camera_node", ["-p", "rate_hz:=10.0", "-p", "width:=64", "-p", "height:=48",
                                                      "-p", "publish_tf:=false"], "sim_camera_no_tf.log")
    assert ros.spin_until(lambda: len(got_pose) >= 5, 40), procs.log_text(cam)[-3000:]
    assert got_tf == []


@needs_tf2_msgs
@pytest.mark.ros
def test_replay_node_publishes_its_transform_on_tf(ros, procs, tmp_path):
    """The replay node shares the sim camera's publisher: a 7-Scenes folder written here, replayed, gives /tf."""
    import cv2

    pytest.importorskip("find_ros.ros.replay_node")
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"frame-{i:06d}.color.png"), np.full((48, 64, 3), 40 * i, np.uint8))
        cv2.imwrite(str(tmp_path / f"frame-{i:06d}.depth.png"), np.full((48, 64), 1500, np.uint16))
        np.savetxt(tmp_path / f"frame-{i:06d}.pose.txt", _T(0.3 * i, t=(0.1 * i, 0.0, 1.2)))
    g = _TfGraph(ros, procs, "find_ros.ros.replay_node",
                 ["-p", "format:=7scenes", "-p", f"path:={tmp_path}", "-p", "rate_hz:=10.0", "-p", "loop:=true"],
                 "replay_tf.log")
    _check_tf_matches_pose(g.wait_matched(3, 40)[:3], world="map", optical="camera_color_optical_frame")


_WITHOUT_TF2_MSGS = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "tf2_msgs" or name.startswith("tf2_msgs."):
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, _Block())
from find_ros.ros.sim_camera_node import run
sys.argv = ["sim_camera_node", *sys.argv[1:]]
run()
"""


@pytest.mark.ros
def test_sim_camera_without_tf2_msgs_says_so_and_keeps_the_pose_topic(ros, procs):
    node = ros.node("no_tf2_msgs_test")
    poses: list[PoseStamped] = []
    node.create_subscription(PoseStamped, "camera/pose", poses.append, SENSOR_QOS)
    cam = procs.spawn(["-c", _WITHOUT_TF2_MSGS, "--ros-args", "-p", "rate_hz:=10.0", "-p", "width:=64",
                       "-p", "height:=48"], "sim_camera_without_tf2_msgs.log")
    assert ros.spin_until(lambda: len(poses) >= 3, 40), procs.log_text(cam)[-3000:]
    log = procs.log_text(cam)
    assert "not publishing the camera transform on /tf: tf2_msgs is not importable" in log, log[-3000:]
    assert "interfaces/tf2_msgs" in log and cam.poll() is None
